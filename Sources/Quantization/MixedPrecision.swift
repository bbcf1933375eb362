// Mixed precision as a search: each layer picks a weight width, each pick costs flash and (by the
// sensitivity analysis) accuracy; the Pareto front of total flash against predicted loss, exactly.

/// Per-layer weight widths under a flash budget, from per-layer costs that add up.
///
/// Each layer ℓ offers widths b with a flash cost B(ℓ, b) (its packed weight bytes) and a predicted
/// accuracy drop D(ℓ, b) (measured with ℓ alone quantised at b). Under the additive model the
/// network's cost is Σ B(ℓ, b_ℓ) and its predicted drop Σ D(ℓ, b_ℓ); `front` returns every choice
/// not beaten on both at once. The search is a dynamic programme over layers that keeps only the
/// non-dominated partial sums, so it is exact for this model and small in practice (the number of
/// distinct byte totals bounds each step).
public enum MixedPrecision {
    /// One width a layer can take.
    public struct Option: Equatable, Sendable {
        public var bits: Int
        public var bytes: Int
        public var drop: Double
        public init(bits: Int, bytes: Int, drop: Double) {
            self.bits = bits; self.bytes = bytes; self.drop = drop
        }
    }

    /// A width for every layer, with its summed cost and predicted drop.
    public struct Candidate: Equatable, Sendable {
        public var bits: [Int]
        public var bytes: Int
        public var predictedDrop: Double
        public init(bits: [Int], bytes: Int, predictedDrop: Double) {
            self.bits = bits; self.bytes = bytes; self.predictedDrop = predictedDrop
        }
    }

    /// The Pareto front, cheapest first: along it the bytes rise and the predicted drop falls.
    /// `options[ℓ]` are layer ℓ's widths (at least one each).
    public static func front(_ options: [[Option]]) -> [Candidate] {
        var partial = [Candidate(bits: [], bytes: 0, predictedDrop: 0)]
        for layer in options {
            var next: [Candidate] = []
            next.reserveCapacity(partial.count * layer.count)
            for p in partial {
                for o in layer {
                    next.append(
                        Candidate(
                            bits: p.bits + [o.bits], bytes: p.bytes + o.bytes,
                            predictedDrop: p.predictedDrop + o.drop))
                }
            }
            partial = nonDominated(next)
        }
        return partial
    }

    /// The points no other point beats on both bytes and drop (ties keep the wider widths' first
    /// occurrence), sorted by bytes.
    static func nonDominated(_ points: [Candidate]) -> [Candidate] {
        let sorted = points.sorted {
            $0.bytes != $1.bytes ? $0.bytes < $1.bytes : $0.predictedDrop < $1.predictedDrop
        }
        var kept: [Candidate] = []
        for c in sorted where c.predictedDrop < (kept.last?.predictedDrop ?? .infinity) {
            if kept.last?.bytes == c.bytes { continue }
            kept.append(c)
        }
        return kept
    }

    /// Up to `count` points of `front` spread evenly over its length, always with both ends.
    public static func thin(_ front: [Candidate], to count: Int) -> [Candidate] {
        guard front.count > count, count >= 2 else { return front }
        let picks = (0..<count).map {
            Int((Double($0) * Double(front.count - 1) / Double(count - 1)).rounded())
        }
        return Array(Set(picks)).sorted().map { front[$0] }
    }
}
