import Tensors
import CVectorMath

/// The shaping penalties on one group of weights (a whole tensor, or one output channel), their
/// values and their exact gradients. Derivations: Docs/Shaping.md.
///
///     kurtosis     λ·(K − K_T)²
///     skewness     λ·(S − S_T)²
///     range        λ·max(0, R − R_T)²,  R = LSE_β(|w|/σ) = max|w|/σ + (1/β)·log Σ exp(β(|wᵢ|/σ − max|w|/σ))
///     quant_error  λ·mean((u − round(u))²),  u = w·qmax/max|w|  (the rounding held fixed: straight-through)
///     l2           λ·½·Σ w²
///
/// The work is two or three passes over the weights: the central moments and the maximum (around a
/// mean hint, so no separate mean pass), the range and quantisation sums when those terms need them
/// (keeping the range term's exponentials), and one pass writing every term's gradient. Sums run
/// in 16 Float lanes inside 1024-value blocks, combined in Double.
public struct PenaltySettings: Equatable, Sendable {
    public var kurtosisWeight = 0.0, kurtosisTarget = 1.8
    public var skewnessWeight = 0.0, skewnessTarget = 0.0
    public var rangeWeight = 0.0, rangeTarget = 3.0, rangeSharpness = 20.0
    public var quantErrorWeight = 0.0, quantErrorBits = 4
    public var l2Weight = 0.0
    public init() {}

    public var isActive: Bool { PenaltyTerm.allCases.contains { weight($0) > 0 } }

    /// λ of one term (0 when off).
    public func weight(_ t: PenaltyTerm) -> Double {
        switch t {
        case .kurtosis: kurtosisWeight
        case .skewness: skewnessWeight
        case .range: rangeWeight
        case .quantError: quantErrorWeight
        case .l2: l2Weight
        }
    }
}

/// The names of the terms, as in configs and logs.
public enum PenaltyTerm: String, CaseIterable, Sendable {
    case kurtosis, skewness, range, quantError = "quant_error", l2
}

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
    /// not computed: max s + ln(n)/β, or the tighter `rangeUpperBound`.
    public var range = 0.0, rangeMeanS = 0.0
    /// exp(β(sᵢ − max s)) for every weight of a run of 16 that has one above the cut-off (0 for
    /// the others), kept so the gradient pass need not compute them again.
    var rangeExponentials: [Float] = []
    /// mean((u − round u)²) and mean((u − round u)·u).
    public var quantError = 0.0, quantCross = 0.0
    /// The quantisation sums are left to the gradient pass, which computes the residuals anyway:
    /// `quantError` (and `argMax`) are not known until `addGradient` has run.
    public internal(set) var quantSumsPending = false
    public var sumSquares = 0.0

    /// Each term's value, unweighted by λ but with its target: (K − K_T)², (S − S_T)², …
    public func values(_ s: PenaltySettings) -> [PenaltyTerm: Double] {
        var v: [PenaltyTerm: Double] = [:]
        for t in PenaltyTerm.allCases where s.weight(t) > 0 {
            switch t {
            case .kurtosis: v[t] = (kurtosis - s.kurtosisTarget) * (kurtosis - s.kurtosisTarget)
            case .skewness: v[t] = (skewness - s.skewnessTarget) * (skewness - s.skewnessTarget)
            case .range: let e = max(0, range - s.rangeTarget); v[t] = e * e
            case .quantError: v[t] = quantError
            case .l2: v[t] = 0.5 * sumSquares
            }
        }
        return v
    }
}

/// Variance below which a group counts as constant: its shape terms are 0 and push nothing.
let varianceFloor = 1e-30

public enum Penalties {
    /// Moments and term values of one group. `meanHint` (last step's mean, say) is the centre the
    /// moments are summed around; any value is exact, a close one keeps the Float sums precise.
    /// `quantisationSums: false` leaves the quantisation error's sums to `addGradient`, saving a
    /// pass: for callers whose gradient scales do not depend on that term's value.
    public static func evaluate(_ w: UnsafeBufferPointer<Float>, _ s: PenaltySettings, meanHint: Float? = nil,
                                quantisationSums: Bool = true) -> PenaltyState {
        var st = PenaltyState()
        let n = w.count
        st.n = n
        guard n > 0 else { return st }
        let c = meanHint ?? Float(blockSum(w) / Double(n))
        // Σ(w − c)ᵏ for k = 1…4 (and max|w|), then the shift formulas give the moments about μ.
        let sums = momentSums(w, center: c, maximum: needsMaximum(s))
        let nd = Double(n), e = sums.a / nd                                   // μ − c
        let r2 = sums.b / nd, r3 = sums.c / nd, r4 = sums.d / nd
        st.mean = Double(c) + e
        st.m2 = max(0, r2 - e * e)
        st.m3 = r3 - 3 * e * r2 + 2 * e * e * e
        st.m4 = r4 - 4 * e * r3 + 6 * e * e * r2 - 3 * e * e * e * e
        st.maxAbs = sums.max
        st.maxBlockStart = sums.maxStart
        st.sumSquares = nd * (st.m2 + st.mean * st.mean)
        guard st.m2 > varianceFloor else { return st }
        st.kurtosis = st.m4 / (st.m2 * st.m2)
        st.skewness = st.m3 / (st.m2 * st.m2.squareRoot())
        // R lies in [max s, max s + ln(n)/β]. When the top of that interval is within the target,
        // the term and its gradient are 0 whatever R is: its exponentials are not needed. Else a
        // tighter bound, from the exponentials of the weights near the maximum only, often is.
        var range = false
        if s.rangeWeight > 0 {
            st.range = Double(st.maxAbs) / st.m2.squareRoot() + _log(nd) / s.rangeSharpness
            if st.range > s.rangeTarget, let bound = rangeUpperBound(w, st, s) { st.range = min(st.range, bound) }
            range = st.range > s.rangeTarget
        }
        var quant = s.quantErrorWeight > 0 && st.maxAbs > 0
        if quant && !quantisationSums { st.quantSumsPending = true; quant = false }
        if range || quant { tailSums(w, &st, s, range: range, quant: quant) }
        return st
    }

    /// Whether the settings need max|w| (the range and quantisation terms do); it costs as much as
    /// the moments.
    static func needsMaximum(_ s: PenaltySettings) -> Bool { s.rangeWeight > 0 || s.quantErrorWeight > 0 }

    /// Σ(w − c)ᵏ for k = 1…4 (`a`…`d`), and max|w| when asked (else 0).
    static func momentSums(_ w: UnsafeBufferPointer<Float>, center c: Float, maximum: Bool) -> BlockSums {
        maximum ? momentPass(w, center: c, On.self) : momentPass(w, center: c, Off.self)
    }

    static func momentPass<Maximum: Flag>(_ w: UnsafeBufferPointer<Float>, center c: Float, _: Maximum.Type) -> BlockSums {
        let maximum = Maximum.on
        let base = w.baseAddress!
        return sumBlocks(0..<w.count) { start, end in
            var sums = LaneSums()
            var i = start
            while i + Lanes.scalarCount <= end { sums.addMoments(loadLanes(base + i), center: c, maximum: maximum); i += Lanes.scalarCount }
            while i < end { sums.addMoments(base[i], center: c, maximum: maximum); i += 1 }
            return sums.sum
        }
    }

    /// An upper bound on R from one pass that takes exponentials only near the maximum, or nil
    /// where it cannot beat max s + ln(n)/β. With δ > 0 every weight with sᵢ < m − δ adds at most
    /// e^(−βδ) to Z, so
    ///     Z ≤ Σ_{runs of 16 with some sᵢ ≥ m − δ} e^(β(sᵢ − m)) + (the other weights' count)·e^(−βδ).
    /// R reaches the target R_T at Z_T = e^(β(R_T − m)); δ is chosen so that the second part is
    /// Z_T/2. In training, most groups whose first bound exceeds R_T are then found within it.
    static func rangeUpperBound(_ w: UnsafeBufferPointer<Float>, _ st: PenaltyState, _ s: PenaltySettings) -> Double? {
        let sigma = st.m2.squareRoot(), beta = s.rangeSharpness, m = Double(st.maxAbs) / sigma, n = Double(w.count)
        let zTarget = _exp(beta * (s.rangeTarget - m))
        let delta = _log(2 * n / zTarget) / beta
        // Z ≥ 1 (the maximum's own term): a target below m is exceeded whatever Z is; and from
        // δ = 40/β on, the band is what the exact pass computes anyway.
        guard zTarget > 1, delta > 0, delta < Double(rangeExponentCutoff) / beta else { return nil }
        let k = Float(beta / sigma), bm = Float(beta * m)                        // β(sᵢ − m) = k·|wᵢ| − βm
        let band = Lanes(repeating: Float(sigma * (m - delta)))
        let base = w.baseAddress!
        let sums = sumBlocks(0..<w.count) { start, end in
            var z = Lanes(), taken = 0
            var tail = 0.0
            var i = start
            while i + Lanes.scalarCount <= end {
                let ax = magnitude(loadLanes(base + i))
                if any(ax .>= band) { z += expNonPositive(k * ax - bm); taken += Lanes.scalarCount }
                i += Lanes.scalarCount
            }
            while i < end {
                let si = Double(abs(base[i])) / sigma
                if si >= m - delta { tail += _exp(beta * (si - m)); taken += 1 }
                i += 1
            }
            var r = BlockSums()
            (r.a, r.b) = (Double(laneSum(z)) + tail, Double(taken))
            return r
        }
        // 1e-6: the Float exponentials' relative error (2e-7) and their sums', with room to spare.
        let z = sums.a * (1 + 1e-6) + (n - sums.b) * _exp(-beta * delta)
        return m + _log(z) / beta
    }

    /// One pass for the terms that need σ and max|w| first:
    ///     R = m + (1/β)·log Σ exp(β(sᵢ − m)),  sᵢ = |wᵢ|/σ,  m = max sᵢ  (every exponent ≤ 0)
    ///     E = mean((u − round u)²),  mean((u − round u)·u),  u = w·qmax/max|w|
    /// Only weights near the maximum carry weight in Z: runs of 16 whose exponents are all below
    /// −`rangeExponentCutoff` are skipped (see `rangeCutoff`).
    static func tailSums(_ w: UnsafeBufferPointer<Float>, _ st: inout PenaltyState, _ s: PenaltySettings,
                         range: Bool, quant: Bool) {
        switch (range, quant) {
        case (true, true): tailSums(w, &st, s, On.self, On.self)
        case (true, false): tailSums(w, &st, s, On.self, Off.self)
        case (false, true): tailSums(w, &st, s, Off.self, On.self)
        case (false, false): break
        }
    }

    static func tailSums<Range: Flag, Quant: Flag>(_ w: UnsafeBufferPointer<Float>, _ st: inout PenaltyState, _ s: PenaltySettings,
                                                   _: Range.Type, _: Quant.Type) {
        let range = Range.on, quant = Quant.on
        let sigma = st.m2.squareRoot(), beta = s.rangeSharpness, m = Double(st.maxAbs) / sigma
        let k = Float(beta / sigma), bm = Float(beta * m), inv = Float(1 / sigma)   // β(sᵢ − m) = k·|wᵢ| − βm
        let qk = Float((1 << (s.quantErrorBits - 1)) - 1) / st.maxAbs
        let cutoff = rangeCutoff(k: k, shift: bm)
        if range { st.rangeExponentials = [Float](unsafeUninitializedCapacity: w.count) { _, n in n = w.count } }
        let base = w.baseAddress!
        let total = st.rangeExponentials.withUnsafeMutableBufferPointer { exps in
            sumBlocks(0..<w.count) { start, end in
                var sums = LaneSums()
                var i = start
                while i + Lanes.scalarCount <= end {
                    let x = loadLanes(base + i)
                    if range {
                        let ax = magnitude(x)
                        var p = Lanes()
                        if any(ax .>= cutoff) { p = expNonPositive(k * ax - bm); sums.a += p; sums.b += p * (ax * inv) }
                        storeLanes(p, exps.baseAddress! + i)
                    }
                    if quant {
                        let u = x * qk, r = roundingResidual(u)
                        sums.c += r * r; sums.d += r * u
                    }
                    i += Lanes.scalarCount
                }
                while i < end {
                    let x = base[i]
                    if range {
                        let si = Double(abs(x)) / sigma, p = _exp(beta * (si - m))
                        sums.tail.a += p; sums.tail.b += p * si; exps[i] = Float(p)
                    }
                    if quant { let u = x * qk, q = u - u.rounded(.toNearestOrAwayFromZero); sums.tail.c += Double(q * q); sums.tail.d += Double(q * u) }
                    i += 1
                }
                return sums.sum
            }
        }
        if range { st.range = m + _log(total.a) / beta; st.rangeMeanS = total.b / total.a }
        if quant { completeQuantisation(&st, total); st.argMax = firstIndex(w, magnitude: st.maxAbs, from: st.maxBlockStart) }
    }

    /// Adds `Σ_t scale_t·∂P_t/∂w` to `grad`, where `scale_t` is the term's total weight (λ times
    /// the aggregation and schedule factors) and P_t the unweighted term value of `values`.
    /// Terms that `s` leaves off are ignored whatever their scale. One pass writes every term's
    /// gradient (`PenaltyGradient`); the quantisation term's push on the maximum follows it.
    /// `overwrite` writes the gradient as if `grad` were all zeros (+0), without reading it.
    ///
    /// Returns the state with the quantisation sums filled in when `evaluate` left them pending.
    @discardableResult
    public static func addGradient(_ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
                                   _ st: PenaltyState, _ s: PenaltySettings, scales: [PenaltyTerm: Double],
                                   overwrite: Bool = false) -> PenaltyState {
        guard st.n > 0 else { return st }
        let kernel = PenaltyGradient(w, st, s, scales: scales)
        let sums = gradientPass(w, grad, kernel, overwrite: overwrite)
        var st = st
        if st.quantSumsPending {
            if kernel.quant { completeQuantisation(&st, sums); st.argMax = kernel.argMax }
            else { tailSums(w, &st, s, range: false, quant: true) }
            st.quantSumsPending = false
        }
        if kernel.quant { grad[kernel.argMax] += kernel.argMaxCorrection(quantCross: st.quantCross) }
        return st
    }

    /// E and mean((u − r)·u) from the sums Σ(u − r)², Σ(u − r)·u (`c`, `d`).
    static func completeQuantisation(_ st: inout PenaltyState, _ sums: BlockSums) {
        st.quantError = sums.c / Double(st.n)
        st.quantCross = sums.d / Double(st.n)
    }

    /// `grad += kernel(w)` over the group (`grad = 0 + kernel(w)` when `overwrite`); returns
    /// Σ(u − r)², Σ(u − r)·u (`c`, `d`) when the quantisation term is on. One specialised copy per
    /// combination of terms keeps the loop free of branches.
    static func gradientPass(_ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>, _ k: PenaltyGradient,
                             overwrite: Bool) -> BlockSums {
        switch (k.quant, k.range) {
        case (false, false): gradientPass(w, grad, k, overwrite, Off.self, Off.self)
        case (true, false): gradientPass(w, grad, k, overwrite, On.self, Off.self)
        case (false, true): gradientPass(w, grad, k, overwrite, Off.self, On.self)
        case (true, true): gradientPass(w, grad, k, overwrite, On.self, On.self)
        }
    }

    static func gradientPass<Quant: Flag, Range: Flag>(_ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
                                                       _ k: PenaltyGradient, _ overwrite: Bool, _: Quant.Type, _: Range.Type) -> BlockSums {
        let x = w.baseAddress!, g = grad.baseAddress!
        return k.exponentials.withUnsafeBufferPointer { p in
            sumBlocks(0..<w.count) { start, end in
                var sums = LaneSums()
                var i = start
                // 0 + g rather than g: the same bits as adding to a zeroed gradient (−0 becomes +0).
                while i + Lanes.scalarCount <= end {
                    let before = overwrite ? Lanes() : loadLanes(g + i)
                    storeLanes(before + k.lanes(loadLanes(x + i), at: i, p, quant: Quant.on, range: Range.on, sums: &sums), g + i)
                    i += Lanes.scalarCount
                }
                while i < end {
                    g[i] = (overwrite ? 0 : g[i]) + k.scalar(x[i], at: i, p, quant: Quant.on, range: Range.on, sums: &sums)
                    i += 1
                }
                return sums.sum
            }
        }
    }
}

/// Compile-time switches: generic specialisation gives each combination of terms its own loop
/// (`@inline(__always)` functions with Bool arguments were not always inlined, and kept their
/// branches).
protocol Flag { static var on: Bool { get } }
enum On: Flag { static var on: Bool { true } }
enum Off: Flag { static var on: Bool { false } }

/// Every term's gradient on one group, weight by weight:
///
///     g = a·d³ + b·d² + c·d + e          kurtosis, skewness, range through σ, and L2  (d = w − μ)
///       + qGain·(u − round u)             quantisation error, rounding held fixed
///       + rGain·sign(w)·pⱼ                range through the softmax weights pⱼ
///
/// and, on the group's maximum only, the quantisation term's push through max|w|, which needs the
/// whole group's mean((u − r)·u) first (`argMaxCorrection`).
struct PenaltyGradient {
    let a, b, c, e, mean, quantScale, quantGain, rangeGain: Float
    /// Which of the two optional parts are on: the pass is specialised on them.
    let quant: Bool, range: Bool
    /// The range term's exp(β(sⱼ − max s)) (empty unless `range`).
    let exponentials: [Float]
    /// The index of the group's maximum |w| and −2·λ_q·sign(w_max)/M: the maximum's extra gradient
    /// is that times mean((u − r)·u) (its own residual is 0).
    let argMax: Int
    let argMaxCoefficient: Double

    init(_ w: UnsafeBufferPointer<Float>, _ st: PenaltyState, _ s: PenaltySettings, scales: [PenaltyTerm: Double]) {
        let n = Double(st.n)
        let scales = scales.filter { s.weight($0.key) > 0 }
        var a = 0.0, b = 0.0, c = 0.0, e = 0.0
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
        var rangeGain: Float = 0
        if shaped, let k = scales[.range], k != 0, st.range > s.rangeTarget {
            // ∂R/∂wⱼ = pⱼ·sign(wⱼ)/σ − (Σ pᵢsᵢ)·dⱼ/(n·σ²),  pⱼ = exp(β(sⱼ − m))/Z, kept from the sums
            precondition(st.rangeExponentials.count == st.n, "the range term's state comes from evaluate")
            let coef = k * 2 * (st.range - s.rangeTarget), sigma = st.m2.squareRoot()
            let logZ = s.rangeSharpness * (st.range - Double(st.maxAbs) / sigma)
            c -= coef * st.rangeMeanS / (n * st.m2)
            rangeGain = Float(coef / sigma * _exp(-logZ))
        }
        if let k = scales[.l2] {
            // λ·w = λ·d + λ·μ
            c += k
            e += k * st.mean
        }
        (self.a, self.b, self.c, self.e, mean) = (Float(a), Float(b), Float(c), Float(e), Float(st.mean))
        self.rangeGain = rangeGain
        range = rangeGain != 0
        exponentials = range ? st.rangeExponentials : []
        quant = shaped && (scales[.quantError] ?? 0) != 0 && st.maxAbs > 0
        if quant {
            // ∂E/∂wⱼ = 2(uⱼ − rⱼ)·qmax/(n·M) with u = w·qmax/M (j ≠ argmax);
            // the maximum moves M: ∂E/∂w_max = −2·sign(w_max)/M · mean((u − r)·u).
            let k = scales[.quantError]!
            quantScale = Float((1 << (s.quantErrorBits - 1)) - 1) / st.maxAbs
            quantGain = Float(k * 2 / n) * quantScale
            argMax = st.quantSumsPending ? firstIndex(w, magnitude: st.maxAbs, from: st.maxBlockStart) : st.argMax
            argMaxCoefficient = -k * 2 * (w[argMax] < 0 ? -1 : 1) / Double(st.maxAbs)
        } else {
            (quantScale, quantGain, argMax, argMaxCoefficient) = (0, 0, 0, 0)
        }
    }

    /// The gradient of 16 weights from index `i` of the group; adds their Σ(u − r)², Σ(u − r)·u to
    /// `sums.c`, `sums.d` when `quant`. `p`: the exponentials' storage, when `range`.
    @inline(__always)
    func lanes(_ x: Lanes, at i: Int, _ p: UnsafeBufferPointer<Float>, quant: Bool, range: Bool, sums: inout LaneSums) -> Lanes {
        let d = x - mean
        var g = ((a * d + b) * d + c) * d + e
        if quant {
            let u = x * quantScale, r = roundingResidual(u)
            g += quantGain * r
            sums.c += r * r; sums.d += r * u
        }
        if range { g += withSign(rangeGain * loadLanes(p.baseAddress! + i), of: x) }
        return g
    }

    /// The same for one weight (the same operations in the same order: the same result).
    @inline(__always)
    func scalar(_ x: Float, at i: Int, _ p: UnsafeBufferPointer<Float>, quant: Bool, range: Bool, sums: inout LaneSums) -> Float {
        let d = x - mean
        var g = ((a * d + b) * d + c) * d + e
        if quant {
            let u = x * quantScale, r = u - u.rounded(.toNearestOrAwayFromZero)
            g += quantGain * r
            sums.tail.c += Double(r * r); sums.tail.d += Double(r * u)
        }
        if range { g += Float(bitPattern: (rangeGain * p[i]).bitPattern ^ (x.bitPattern & 0x8000_0000)) }
        return g
    }

    /// The maximum's extra gradient, given the group's mean((u − r)·u).
    func argMaxCorrection(quantCross: Double) -> Float { Float(argMaxCoefficient * quantCross) }
}

// MARK: - Blocked summation

/// Values per block: each block sums in Float lanes, the blocks in Double.
let blockSize = 1024

/// Σ of `body(start, end)` over consecutive blocks of at most `blockSize` values of `range`.
/// Each body keeps its accumulators local (as `LaneSums`): captured from outside, they lived in
/// memory and the loops ran at half speed.
/// With a `BlockSharing` current, other threads may run some of the blocks; their sums are kept
/// apart and added in block order all the same, so the result does not depend on who ran what.
@inline(__always)
func sumBlocks(_ range: Range<Int>, _ body: (Int, Int) -> BlockSums) -> BlockSums {
    let blocks = (range.count + blockSize - 1) / blockSize
    /// Block b's sums, marked with its start (where its maximum is searched for).
    func block(_ b: Int) -> BlockSums {
        let start = range.lowerBound + b * blockSize
        var part = body(start, Swift.min(range.upperBound, start + blockSize))
        part.maxStart = start
        return part
    }
    if blocks > 1, let sharing = BlockSharing.current { return sharedSum(blocks, sharing, block) }
    var total = BlockSums()
    for b in 0..<blocks { total = total + block(b) }
    return total
}

/// Σ of `block(b)` over 0..<blocks, the blocks run by whichever threads share them, their sums
/// added in block order.
func sharedSum(_ blocks: Int, _ sharing: BlockSharing, _ block: (Int) -> BlockSums) -> BlockSums {
    withUnsafeTemporaryAllocation(of: BlockSums.self, capacity: blocks) { parts in
        sharing.forEach(blocks) { b in (parts.baseAddress! + b).initialize(to: block(b)) }
        var total = BlockSums()
        for b in 0..<blocks { total = total + parts[b] }
        return total
    }
}

/// Four Double sums and a maximum, with the start of the first block that holds it.
struct BlockSums {
    var a = 0.0, b = 0.0, c = 0.0, d = 0.0
    var max: Float = 0
    var maxStart = 0
    /// `l` the earlier blocks, `r` the later ones.
    static func + (l: BlockSums, r: BlockSums) -> BlockSums {
        var s = BlockSums()
        (s.a, s.b, s.c, s.d) = (l.a + r.a, l.b + r.b, l.c + r.c, l.d + r.d)
        (s.max, s.maxStart) = r.max > l.max ? (r.max, r.maxStart) : (l.max, l.maxStart)
        return s
    }
}

/// The running sums of one block: four lane-wise Float sums and a lane-wise maximum, with single
/// values (the block's tail) in Double; `sum` adds them up in Double.
struct LaneSums {
    var a = Lanes(), b = Lanes(), c = Lanes(), d = Lanes(), top = Lanes()
    var tail = BlockSums()

    /// Σ(x − c)ᵏ for k = 1…4 into a…d, and max|x| when `maximum`.
    @inline(__always)
    mutating func addMoments(_ x: Lanes, center: Float, maximum: Bool) {
        let v = x - center, v2 = v * v
        a += v; b += v2; c += v2 * v; d += v2 * v2
        if maximum {
            let ax = magnitude(x)
            top.replace(with: ax, where: ax .> top)
        }
    }

    @inline(__always)
    mutating func addMoments(_ x: Float, center: Float, maximum: Bool) {
        let v = Double(x - center), v2 = v * v
        tail.a += v; tail.b += v2; tail.c += v2 * v; tail.d += v2 * v2
        if maximum { tail.max = Swift.max(tail.max, abs(x)) }
    }

    var sum: BlockSums {
        @inline(__always) get {
            var s = BlockSums()
            (s.a, s.b, s.c, s.d) = (Double(laneSum(a)) + tail.a, Double(laneSum(b)) + tail.b,
                                    Double(laneSum(c)) + tail.c, Double(laneSum(d)) + tail.d)
            s.max = Swift.max(laneMax(top), tail.max)
            return s
        }
    }
}

/// Σ of the 16 lanes, halving the vector three times (the standard library's `sum()` adds them
/// one by one: a sixth of the moment pass's time).
@inline(__always)
func laneSum(_ v: Lanes) -> Float {
    let h8 = v.lowHalf + v.highHalf, h4 = h8.lowHalf + h8.highHalf, h2 = h4.lowHalf + h4.highHalf
    return h2[0] + h2[1]
}

/// The largest lane, the same way (`pointwiseMax` is a generic call here).
@inline(__always)
func laneMax(_ v: Lanes) -> Float {
    let h8 = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let h4 = h8.lowHalf.replacing(with: h8.highHalf, where: h8.highHalf .> h8.lowHalf)
    let h2 = h4.lowHalf.replacing(with: h4.highHalf, where: h4.highHalf .> h4.lowHalf)
    return Swift.max(h2[0], h2[1])
}

/// Σ wᵢ: Float lanes within a block, Double across blocks.
func blockSum(_ w: UnsafeBufferPointer<Float>) -> Double {
    let base = w.baseAddress!
    return sumBlocks(0..<w.count) { start, end in
        var sums = LaneSums()
        var i = start
        while i + Lanes.scalarCount <= end { sums.a += loadLanes(base + i); i += Lanes.scalarCount }
        while i < end { sums.tail.a += Double(base[i]); i += 1 }
        return sums.sum
    }.a
}

// MARK: - Lane-wise helpers

/// 1.5·2²³: adding it to a Float of magnitude below 2²² rounds to an integer (to nearest, ties to
/// even) and leaves that integer in the low mantissa bits. Swift's generic SIMD rounding and
/// Float→Int conversions become per-lane library calls; this is two vector additions.
let roundingMagic: Float = 12_582_912

/// u − round(u), lane-wise, for |u| < 2²², with the deployed rounding (half away from zero):
/// the residual of nearest-even rounding, with ties — rare, so behind one test — set to −½·sign(u).
@inline(__always)
func roundingResidual(_ u: Lanes) -> Lanes {
    let d = u - qs_round_even16(u)
    let tie = magnitude(d) .== 0.5
    guard any(tie) else { return d }
    return d.replacing(with: Lanes(repeating: -0.5).replacing(with: 0.5, where: u .< 0), where: tie)
}

/// |x| lane-wise: the sign bit cleared.
@inline(__always)
func magnitude(_ x: Lanes) -> Lanes {
    unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7fff_ffff, to: Lanes.self)
}

/// |y| with the sign of x, lane-wise, for y ≥ 0: y's bits with x's sign bit.
@inline(__always)
func withSign(_ y: Lanes, of x: Lanes) -> Lanes {
    unsafeBitCast(unsafeBitCast(y, to: SIMD16<UInt32>.self) ^ (unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x8000_0000), to: Lanes.self)
}

/// The range term's terms exp(β(sᵢ − max s)) below e⁻⁴⁰ ≈ 4·10⁻¹⁸ are left out (counted as 0):
/// Z ≥ 1 (the maximum's own term), so even 10⁸ of them move R by under 10⁻⁹ — far below Float
/// resolution. On heavy-tailed weights only those within 40/β standard deviations of the maximum
/// remain, and the exponentials cost almost nothing; on nearly uniform weights all remain.
let rangeExponentCutoff: Float = 40

/// The smallest |w| whose range exponent k·|w| − shift is at least −`rangeExponentCutoff`.
@inline(__always)
func rangeCutoff(k: Float, shift: Float) -> Lanes {
    Lanes(repeating: k > 0 ? max(0, (shift - rangeExponentCutoff) / k) : 0)
}

/// The first index from `start` on where |w| equals `m` (the maximum), 16 lanes at a time.
func firstIndex(_ w: UnsafeBufferPointer<Float>, magnitude m: Float, from start: Int = 0) -> Int {
    let base = w.baseAddress!
    var i = start
    while i + Lanes.scalarCount <= w.count {
        if any(magnitude(loadLanes(base + i)) .== m) { break }
        i += Lanes.scalarCount
    }
    while i < w.count, abs(w[i]) != m { i += 1 }
    return i < w.count ? i : 0
}

/// eˣ lane-wise in Float for x ≤ 0 (the softmax weights of the range term): x = n·ln2 + r with
/// |r| ≤ ln2/2 (Cody–Waite split of ln2), eʳ by its degree-6 Taylor polynomial (relative error
/// below 2e-7 there), times 2ⁿ built in the exponent bits. Below −87 the result is 0.
@inline(__always)
func expNonPositive(_ x: Lanes) -> Lanes {
    let clamped = x.replacing(with: -87, where: x .< -87)
    let t = clamped * 1.442_695_04 + roundingMagic
    let n = t - roundingMagic                                    // round(x·log₂e)
    let r = clamped - n * 0.693_145_75 - n * 1.428_606_8e-06
    var p = Lanes(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let bits = unsafeBitCast(t, to: SIMD16<Int32>.self) &- unsafeBitCast(Lanes(repeating: roundingMagic), to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((bits &+ 127) &<< 23, to: Lanes.self)
    return (p * scale).replacing(with: 0, where: x .< -87)
}
