// One value per penalty term in a fixed slot, for the per-step bookkeeping of the loss term: a
// [PenaltyTerm: Double] hashed its key (SipHash) at every access, about 9 µs per MLP step.

/// What a `[PenaltyTerm: Double]` holds (a value or none per term), in one slot per term:
/// no hashing and no heap allocation. Built from a dictionary literal like one.
struct TermTable: Equatable, ExpressibleByDictionaryLiteral {
    private var slots = SIMD8<Double>()
    private var present: UInt8 = 0

    init() {}

    init(dictionaryLiteral elements: (PenaltyTerm, Double)...) {
        for (t, x) in elements { self[t] = x }
    }

    init(_ d: [PenaltyTerm: Double]) {
        for (t, x) in d { self[t] = x }
    }

    subscript(_ t: PenaltyTerm) -> Double? {
        get { present & t.bit != 0 ? slots[t.slot] : nil }
        set {
            if let x = newValue {
                slots[t.slot] = x
                present |= t.bit
            } else {
                present &= ~t.bit
            }
        }
    }

    subscript(_ t: PenaltyTerm, default x: Double) -> Double {
        get { self[t] ?? x }
        set { self[t] = newValue }
    }

    /// `body(term, value)` for each term that has a value, in `PenaltyTerm.ordered`'s order.
    func forEach(_ body: (PenaltyTerm, Double) -> Void) {
        for t in PenaltyTerm.ordered where present & t.bit != 0 { body(t, slots[t.slot]) }
    }

    func mapValues(_ f: (Double) -> Double) -> TermTable {
        var r = self
        for t in PenaltyTerm.ordered where present & t.bit != 0 { r.slots[t.slot] = f(slots[t.slot]) }
        return r
    }

    /// The entries whose term `keep` accepts.
    func filter(_ keep: (PenaltyTerm) -> Bool) -> TermTable {
        var r = self
        for t in PenaltyTerm.ordered where present & t.bit != 0 && !keep(t) { r[t] = nil }
        return r
    }

    static func == (l: TermTable, r: TermTable) -> Bool {
        l.present == r.present && PenaltyTerm.ordered.allSatisfy { l[$0] == r[$0] }
    }
}

extension PenaltyTerm {
    /// `allCases`, made once (the synthesised property builds the array at every use).
    static let ordered = allCases

    /// The term's slot in a `TermTable` and its bit in a set of terms.
    var slot: Int {
        switch self {
        case .kurtosis: 0
        case .skewness: 1
        case .range: 2
        case .quantError: 3
        case .l2: 4
        }
    }
    var bit: UInt8 { 1 << UInt8(slot) }
}
