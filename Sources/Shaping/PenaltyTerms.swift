// The shaping terms' maths: what each term is, its default target, its value from a group's
// moments, and its gradient's coefficients. The passes over the weights that gather the moments
// and write the gradient are in PenaltyPasses.swift; a plain Double twin is PenaltyReference.swift.
// Derivations: Docs/Shaping.md.
import Tensors
import IntegerRuntime

/// The names of the terms, as in configs and logs.
///
///     kurtosis     (K − K_T)²
///     skewness     (S − S_T)²
///     range        max(0, R − R_T)²,  R = LSE_β(|w|/σ) = max|w|/σ + (1/β)·log Σ exp(β(|wᵢ|/σ − max|w|/σ))
///     quant_error  Σ'(w − ŵ)²/Σ'w²,  ŵ = round(u)·max|w|/qmax, u = w·qmax/max|w|, Σ' over every weight
///                  but the (first) maximum, which sets the step and sits on the grid: the relative error
///                  of the weights the grid must serve, 1 when they all round to 0 (the rounding held
///                  fixed: straight-through). With `relative: false` mean((u − round u)²), the error in
///                  steps, which a growing step satisfies (Docs/Shaping.md)
///     l2           ½·Σ w²
///
/// Each is multiplied by its λ (with the aggregation over layers and the warm-up ramp) only where
/// the gradient is written: `Penalties.addGradient(scales:)`.
public enum PenaltyTerm: String, CaseIterable, Sendable {
    case kurtosis, skewness, range, quantError = "quant_error", l2

    /// The target of a term that has one (the one place these defaults are written): kurtosis 1.8,
    /// a uniform distribution's; skewness 0, symmetric; range 3 standard deviations.
    public var defaultTarget: Double? {
        switch self {
        case .kurtosis: 1.8
        case .skewness: 0
        case .range: 3.0
        case .quantError, .l2: nil
        }
    }

    /// The kurtosis of weights spread evenly over the b-bit grid's 2m + 1 levels −m…m (m = qmax):
    /// the shape that uses every level of a max-abs quantiser equally. With Σq² = m(m+1)(2m+1)/6
    /// and Σq⁴ = m(m+1)(2m+1)(3m²+3m−1)/30 over 1…m,
    ///
    ///     K_b = E[q⁴]/E[q²]² = (2m+1)·Σq⁴ / (2·(Σq²)²)
    ///
    /// 1.5 at 2 bits (ternary, a third at 0), 1.75 at 3, 1.79 at 4, toward the continuous 1.8.
    public static func gridKurtosis(bits: Int) -> Double {
        let m = Double(BitWidth.qmax(bits))
        let s2 = m * (m + 1) * (2 * m + 1) / 6, s4 = m * (m + 1) * (2 * m + 1) * (3 * m * m + 3 * m - 1) / 30
        return (2 * m + 1) * s4 / (2 * s2 * s2)
    }
}

/// Which terms act on one group of weights, with their targets and parameters (not their λ).
public struct PenaltySettings: Equatable, Sendable {
    public var terms: Set<PenaltyTerm> = [] { didSet { mask = PenaltySettings.mask(terms) } }
    /// `terms` as bits (`PenaltyTerm.bit`): `has` is asked several times per group and step.
    private var mask: UInt8 = 0
    public var kurtosisTarget = PenaltyTerm.kurtosis.defaultTarget!
    public var skewnessTarget = PenaltyTerm.skewness.defaultTarget!
    public var rangeTarget = PenaltyTerm.range.defaultTarget!
    /// β of the smooth maximum.
    public var rangeSharpness = 20.0
    /// The deployed width whose rounding the quantisation error measures.
    public var quantErrorBits = 4
    /// The quantisation error relative to the weights' energy (1/SQNR), not in units of the step.
    public var quantErrorRelative = true

    public init(_ terms: Set<PenaltyTerm> = []) {
        self.terms = terms
        mask = PenaltySettings.mask(terms)
    }

    private static func mask(_ terms: Set<PenaltyTerm>) -> UInt8 { terms.reduce(0) { $0 | $1.bit } }

    public var isActive: Bool { mask != 0 }
    public func has(_ t: PenaltyTerm) -> Bool { mask & t.bit != 0 }
}

/// Variance below which a group counts as constant: its shape terms are 0 and push nothing.
let varianceFloor = 1e-30

/// Everything one group needs between computing the values and writing the gradient.
public struct PenaltyState: Sendable {
    public var n = 0
    public var mean = 0.0, m2 = 0.0, m3 = 0.0, m4 = 0.0
    public var maxAbs: Float = 0
    /// The first index where |w| = `maxAbs`, found with the quantisation sums.
    public var argMax = 0
    /// The start of the first block of the moment pass whose maximum is `maxAbs`: where the
    /// search for `argMax` begins.
    var maxBlockStart = 0
    public var kurtosis = 0.0, skewness = 0.0
    /// The smooth range R and Σ pᵢ·sᵢ of its softmax weights. When an upper bound of R is within
    /// the target (the term and its gradient are then 0), `range` is that bound and the sums are
    /// not computed: max s + ln(n)/β, or the tighter one of `RangeBand` (while that is pending,
    /// `rangeBand`, the first).
    public var range = 0.0, rangeMeanS = 0.0
    /// exp(β(sᵢ − max s)) for every weight of a run of 16 that has one above the cut-off (0 for
    /// the others), kept so the gradient pass need not compute them again.
    var rangeExponentials: [Float] = []
    /// mean((u − round u)²) and mean((u − round u)·u).
    public var quantError = 0.0, quantCross = 0.0
    /// The range bound's band when `evaluate` left its sums to the gradient pass (the range term is
    /// then off there; `addGradient` adds it after when the bound exceeds the target).
    var rangeBand: RangeBand?
    /// The quantisation sums are left to the gradient pass, which computes the residuals anyway:
    /// `quantError` (and `argMax`) are not known until `addGradient` has run.
    public internal(set) var quantSumsPending = false
    public var sumSquares = 0.0

    /// U' = (Σu² − qmax²)/n = (m₂ + μ²)·(qmax/M)² − qmax²/n: the energy of every weight but the
    /// maximum, in steps of the grid (0 when there is none).
    func servedEnergySteps(_ s: PenaltySettings) -> Double {
        guard maxAbs > 0 else { return 0 }
        let qmax = Double(BitWidth.qmax(s.quantErrorBits)), k = qmax / Double(maxAbs)
        return max(0, (m2 + mean * mean) * k * k - qmax * qmax / Double(n))
    }

    /// The relative quantisation error E/U' (0 when no weight but the maximum has energy).
    func relativeQuantError(_ s: PenaltySettings) -> Double {
        let u = servedEnergySteps(s)
        return u > 1e-300 ? quantError / u : 0
    }

    /// Each term's value, unweighted by λ but with its target: (K − K_T)², (S − S_T)², …
    public func values(_ s: PenaltySettings) -> [PenaltyTerm: Double] {
        var v: [PenaltyTerm: Double] = [:]
        termValues(s).forEach { v[$0] = $1 }
        return v
    }

    /// The same in a `TermTable`.
    func termValues(_ s: PenaltySettings) -> TermTable {
        var v = TermTable()
        for t in PenaltyTerm.ordered where s.has(t) {
            switch t {
            case .kurtosis: v[t] = (kurtosis - s.kurtosisTarget) * (kurtosis - s.kurtosisTarget)
            case .skewness: v[t] = (skewness - s.skewnessTarget) * (skewness - s.skewnessTarget)
            case .range: let e = max(0, range - s.rangeTarget); v[t] = e * e
            case .quantError: v[t] = s.quantErrorRelative ? relativeQuantError(s) : quantError
            case .l2: v[t] = 0.5 * sumSquares
            }
        }
        return v
    }
}

/// The gradient of every term on one group, as coefficients of one expression per weight:
///
///     g = a·d³ + b·d² + c·d + e          kurtosis, skewness, range through σ, and L2  (d = w − μ)
///       + quantGain·(u − round u)         quantisation error, rounding held fixed
///       + rangeGain·sign(w)·pⱼ            range through the softmax weights pⱼ
///
/// with `scales` each term's λ (times aggregation and ramp); terms `s` leaves off are ignored.
struct GradientCoefficients {
    var a = 0.0, b = 0.0, c = 0.0, e = 0.0
    var rangeGain = 0.0
    /// λ_q·2/n: times qmax/M it multiplies the residual (u − r); 0 when the term is off.
    var quantFactor = 0.0
    /// λ_q of the quantisation term when it is on (its push on the maximum needs it).
    var quantWeight = 0.0
    /// The maximum's push is −2·λ_q·sign/M·(mean((u − r)·u)·crossScale − crossShift):
    /// 1 and 0 for the error in steps; for the relative error see `init`.
    var crossScale = 1.0, crossShift = 0.0
    /// The relative error's parts that need E are left out: its sums are pending.
    var relativePending = false

    init(_ st: PenaltyState, _ s: PenaltySettings, scales: TermTable) {
        let n = Double(st.n)
        let scales = scales.filter { s.has($0) }
        // A constant group (no variance) has no shape: only L2 pushes it.
        let shaped = st.m2 > varianceFloor
        if shaped, let k = scales[.kurtosis], k != 0 {
            // ∂K/∂wᵢ = 4/(n·m₂²)·(dᵢ³ − m₃) − 4·m₄/(n·m₂³)·dᵢ
            let coef = k * 2 * (st.kurtosis - s.kurtosisTarget), m2sq = st.m2 * st.m2
            a += coef * 4 / (n * m2sq)
            e -= coef * 4 * st.m3 / (n * m2sq)
            c -= coef * 4 * st.m4 / (n * m2sq * st.m2)
        }
        if shaped, let k = scales[.skewness], k != 0 {
            // ∂S/∂wᵢ = 3/(n·m₂^1.5)·(dᵢ² − m₂) − 3·m₃/(n·m₂^2.5)·dᵢ
            let coef = k * 2 * (st.skewness - s.skewnessTarget), m15 = st.m2 * st.m2.squareRoot()
            b += coef * 3 / (n * m15)
            e -= coef * 3 * st.m2 / (n * m15)
            c -= coef * 3 * st.m3 / (n * m15 * st.m2)
        }
        if shaped, let k = scales[.range], k != 0, st.range > s.rangeTarget, st.rangeBand == nil {
            // ∂R/∂wⱼ = pⱼ·sign(wⱼ)/σ − (Σ pᵢsᵢ)·dⱼ/(n·σ²),  pⱼ = exp(β(sⱼ − m))/Z, kept from the sums
            precondition(st.rangeExponentials.count == st.n, "the range term's state comes from evaluate")
            let coef = k * 2 * (st.range - s.rangeTarget), sigma = st.m2.squareRoot()
            let logZ = s.rangeSharpness * (st.range - Double(st.maxAbs) / sigma)
            c -= coef * st.rangeMeanS / (n * st.m2)
            rangeGain = coef / sigma * _exp(-logZ)
        }
        if let k = scales[.l2] {
            // λ·w = λ·d + λ·μ
            c += k
            e += k * st.mean
        }
        if shaped, let k = scales[.quantError], k != 0, st.maxAbs > 0 {
            // ∂E/∂wⱼ = 2(uⱼ − rⱼ)·qmax/(n·M) with u = w·qmax/M (j ≠ argmax);
            // the maximum moves M: ∂E/∂w_max = −2·sign(w_max)/M · mean((u − r)·u).
            quantFactor = k * 2 / n
            quantWeight = k
            if s.quantErrorRelative {
                // E' = E/U' (the maximum's own residual is 0). For j ≠ max, ∂U'/∂wⱼ = 2uⱼ·qmax/(n·M):
                // ∂E'/∂wⱼ = (∂E/∂wⱼ − E'·∂U'/∂wⱼ)/U' — the residual's factor over U', and
                // −K·wⱼ with K = 2E'/D', D' = Σ'w² — linear in w, so written for every weight and
                // taken back at the maximum (+K·M·sign). Through M: ∂E'/∂M = −(2/M)·(cross/U' − E').
                // Both at the maximum: −(2/M)·sign·(cross/U' − E'·(1 + qmax²/(n·U'))).
                let served = st.servedEnergySteps(s)
                guard served > 1e-300 else { quantFactor = 0; quantWeight = 0; return }
                quantFactor /= served
                crossScale = 1 / served
                // The parts that need E wait for the gradient pass that sums it.
                relativePending = st.quantSumsPending
                if !relativePending {
                    let parts = GradientCoefficients.relativeParts(st, s, weight: k)
                    c -= parts.linear
                    e -= parts.linear * st.mean
                    crossShift = parts.crossShift
                }
            }
        }
    }

    /// The relative error's parts that need E: K of its gradient's −K·w (times λ_q = `weight`),
    /// and the maximum's `crossShift`.
    static func relativeParts(
        _ st: PenaltyState, _ s: PenaltySettings, weight k: Double
    ) -> (linear: Double, crossShift: Double) {
        let n = Double(st.n), served = st.servedEnergySteps(s)
        let relative = st.quantError / served, qmax = Double(BitWidth.qmax(s.quantErrorBits))
        let steps = qmax / Double(st.maxAbs)
        return (k * 2 * relative * steps * steps / (n * served), relative * (1 + qmax * qmax / (n * served)))
    }

    /// The maximum's extra gradient coefficient −2·λ_q·sign(w_max)/M: times mean((u − r)·u).
    func argMaxCoefficient(negative: Bool, maxAbs: Float) -> Double {
        -quantWeight * 2 * (negative ? -1 : 1) / Double(maxAbs)
    }
}
