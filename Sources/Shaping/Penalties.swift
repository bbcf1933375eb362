import Tensors

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
/// in 8-wide Float lanes inside 1024-value blocks, combined in Double.
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
    public var argMax = 0
    public var kurtosis = 0.0, skewness = 0.0
    /// The smooth range R and Σ pᵢ·sᵢ of its softmax weights. When even R's upper bound
    /// max s + ln(n)/β is within the target (the term and its gradient are then 0), `range` is
    /// that bound and the sums are not computed.
    public var range = 0.0, rangeMeanS = 0.0
    /// exp(β(sᵢ − max s)) for every weight of a group of 8 that has one above the cut-off (0 for
    /// the others), kept so the gradient pass need not compute them again.
    var rangeExponentials: [Float] = []
    /// mean((u − round u)²) and mean((u − round u)·u).
    public var quantError = 0.0, quantCross = 0.0
    /// The quantisation sums (and `argMax`) are left to the gradient pass, which computes the
    /// residuals anyway: `quantError` is not known until `addGradient` has run.
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
        // Σ(w − c)ᵏ for k = 1…4 and max|w|, then the shift formulas give the moments about μ.
        // max|w| costs as much as the moments; only the range and quantisation terms need it.
        let needMax = s.rangeWeight > 0 || s.quantErrorWeight > 0
        let sums = needMax ? reduceBlocks(w) { momentSums($0, center: c, max: true) }
                           : reduceBlocks(w) { momentSums($0, center: c, max: false) }
        let (s1, s2, s3, s4, mx) = (sums.a, sums.b, sums.c, sums.d, sums.max)
        let nd = Double(n), e = s1 / nd                                   // μ − c
        let r2 = s2 / nd, r3 = s3 / nd, r4 = s4 / nd
        st.mean = Double(c) + e
        st.m2 = max(0, r2 - e * e)
        st.m3 = r3 - 3 * e * r2 + 2 * e * e * e
        st.m4 = r4 - 4 * e * r3 + 6 * e * e * r2 - 3 * e * e * e * e
        st.maxAbs = mx
        st.sumSquares = nd * (st.m2 + st.mean * st.mean)
        guard st.m2 > varianceFloor else { return st }
        st.kurtosis = st.m4 / (st.m2 * st.m2)
        st.skewness = st.m3 / (st.m2 * st.m2.squareRoot())
        // R lies in [max s, max s + ln(n)/β]. When the top of that interval is within the target,
        // the term and its gradient are 0 whatever R is: its exponentials are not needed.
        let rangeBound = Double(mx) / st.m2.squareRoot() + _log(nd) / s.rangeSharpness
        let range = s.rangeWeight > 0 && rangeBound > s.rangeTarget
        var quant = s.quantErrorWeight > 0 && mx > 0
        if s.rangeWeight > 0 && !range { st.range = rangeBound }
        if quant && !quantisationSums { st.quantSumsPending = true; quant = false }
        if range || quant { tailSums(w, &st, s, range: range, quant: quant) }
        return st
    }

    /// Σ(w − c)ᵏ for k = 1…4 of one block, and max|w| when asked.
    @inline(__always)
    static func momentSums(_ block: UnsafeBufferPointer<Float>, center c: Float, max withMax: Bool) -> BlockSums {
        var a1 = SIMD8<Float>(), a2 = a1, a3 = a1, a4 = a1, top = a1
        var i = 0
        while i + 8 <= block.count {
            let x = load8(block, i), d = x - c, d2 = d * d
            a1 += d; a2 += d2; a3 += d2 * d; a4 += d2 * d2
            if withMax {
                let ax = magnitude(x)
                top.replace(with: ax, where: ax .> top)
            }
            i += 8
        }
        var r = BlockSums(a: Double(a1.sum()), b: Double(a2.sum()), c: Double(a3.sum()), d: Double(a4.sum()), max: top.max())
        while i < block.count {
            let d = Double(block[i] - c), d2 = d * d
            r.a += d; r.b += d2; r.c += d2 * d; r.d += d2 * d2
            r.max = Swift.max(r.max, abs(block[i]))
            i += 1
        }
        return r
    }

    /// One pass for the terms that need σ and max|w| first:
    ///     R = m + (1/β)·log Σ exp(β(sᵢ − m)),  sᵢ = |wᵢ|/σ,  m = max sᵢ  (every exponent ≤ 0)
    ///     E = mean((u − round u)²),  mean((u − round u)·u),  u = w·qmax/max|w|
    /// Only weights near the maximum carry weight in Z: groups of 8 whose exponents are all below
    /// −`rangeExponentCutoff` are skipped (see `rangeCutoff`).
    static func tailSums(_ w: UnsafeBufferPointer<Float>, _ st: inout PenaltyState, _ s: PenaltySettings,
                         range: Bool, quant: Bool) {
        let sigma = st.m2.squareRoot(), beta = s.rangeSharpness, m = Double(st.maxAbs) / sigma
        let k = Float(beta / sigma), bm = Float(beta * m), inv = Float(1 / sigma)   // β(sᵢ − m) = k·|wᵢ| − βm
        let qk = Float((1 << (s.quantErrorBits - 1)) - 1) / st.maxAbs
        let cutoff = rangeCutoff(k: k, shift: bm)
        if range { st.rangeExponentials = [Float](unsafeUninitializedCapacity: w.count) { _, n in n = w.count } }
        let sums = st.rangeExponentials.withUnsafeMutableBufferPointer { exps in reduceBlocks(w) { block in
            var a = SIMD8<Float>(), b = a, c = a, d = a
            let out = range ? exps.baseAddress! + (block.baseAddress! - w.baseAddress!) : nil
            var i = 0
            while i + 8 <= block.count {
                let x = load8(block, i)
                if let out {
                    let ax = magnitude(x)
                    var p = SIMD8<Float>()
                    if any(ax .>= cutoff) { p = expNonPositive(k * ax - bm); a += p; b += p * (ax * inv) }
                    UnsafeMutableRawPointer(out + i).storeBytes(of: p, as: SIMD8<Float>.self)
                }
                if quant {
                    let u = x * qk, r = roundingResidual(u)
                    c += r * r; d += r * u
                }
                i += 8
            }
            var r = BlockSums(a: Double(a.sum()), b: Double(b.sum()), c: Double(c.sum()), d: Double(d.sum()), max: 0)
            while i < block.count {
                let x = block[i]
                if let out { let si = Double(abs(x)) / sigma, p = _exp(beta * (si - m)); r.a += p; r.b += p * si; out[i] = Float(p) }
                if quant { let u = x * qk, q = u - u.rounded(.toNearestOrAwayFromZero); r.c += Double(q * q); r.d += Double(q * u) }
                i += 1
            }
            return r
        } }
        if range { st.range = m + _log(sums.a) / beta; st.rangeMeanS = sums.b / sums.a }
        if quant { completeQuantisation(w, &st, sums) }
    }

    /// Adds `Σ_t scale_t·∂P_t/∂w` to `grad`, where `scale_t` is the term's total weight (λ times
    /// the aggregation and schedule factors) and P_t the unweighted term value of `values`.
    /// Terms that `s` leaves off are ignored whatever their scale.
    /// Every term's gradient is written in one pass:
    ///
    ///     g = a·d³ + b·d² + c·d + e          kurtosis, skewness, and range through σ  (d = w − μ)
    ///       + l2·w
    ///       + qGain·(u − round u)             quantisation error, rounding held fixed
    ///       + rGain·sign(w)·pⱼ                range through the softmax weights pⱼ
    ///
    /// Returns the state with the quantisation sums filled in when `evaluate` left them pending.
    @discardableResult
    public static func addGradient(_ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
                                   _ st: PenaltyState, _ s: PenaltySettings, scales: [PenaltyTerm: Double]) -> PenaltyState {
        let n = Double(st.n)
        var st = st
        guard st.n > 0 else { return st }
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
        var quantScale: Float = 0, quantGain: Float = 0
        let quant = shaped && (scales[.quantError] ?? 0) != 0 && st.maxAbs > 0
        if quant {
            // ∂E/∂wⱼ = 2(uⱼ − rⱼ)·qmax/(n·M) with u = w·qmax/M (j ≠ argmax)
            quantScale = Float((1 << (s.quantErrorBits - 1)) - 1) / st.maxAbs
            quantGain = Float(scales[.quantError]! * 2 / n) * quantScale
        }
        let sums = st.rangeExponentials.withUnsafeBufferPointer { exps in
            gradientPass(w, grad, a: Float(a), b: Float(b), c: Float(c), e: Float(e), l2: Float(scales[.l2] ?? 0),
                         mean: Float(st.mean), quantScale: quantScale, quantGain: quantGain,
                         rangeGain: rangeGain, rangeExponentials: exps)
        }
        if st.quantSumsPending {
            if quant { completeQuantisation(w, &st, sums) } else { tailSums(w, &st, s, range: false, quant: true) }
            st.quantSumsPending = false
        }
        if quant {
            // The maximum moves M: ∂E/∂w_max = −2·sign(w_max)/M · mean((u − r)·u); its own residual is 0.
            let k = scales[.quantError]!, sign: Double = w[st.argMax] < 0 ? -1 : 1
            grad[st.argMax] += Float(-k * 2 * sign / Double(st.maxAbs) * st.quantCross)
        }
        return st
    }

    /// E, mean((u − r)·u) and the maximum's index from the sums Σ(u − r)², Σ(u − r)·u (`c`, `d`).
    static func completeQuantisation(_ w: UnsafeBufferPointer<Float>, _ st: inout PenaltyState, _ sums: BlockSums) {
        st.argMax = firstIndex(w, magnitude: st.maxAbs)
        st.quantError = sums.c / Double(w.count)
        st.quantCross = sums.d / Double(w.count)
    }

    static func gradientPass(_ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
                             a: Float, b: Float, c: Float, e: Float, l2: Float, mean: Float,
                             quantScale: Float, quantGain: Float, rangeGain: Float, rangeExponentials p: UnsafeBufferPointer<Float>) -> BlockSums {
        // Specialised copies per combination of terms keep the loop free of branches.
        switch (quantGain != 0, rangeGain != 0) {
        case (false, false): return gradientPass(w, grad, a: a, b: b, c: c, e: e, l2: l2, mean: mean, quantScale: 0, quantGain: 0, rangeGain: 0, rangeExponentials: p, quant: false, range: false)
        case (true, false): return gradientPass(w, grad, a: a, b: b, c: c, e: e, l2: l2, mean: mean, quantScale: quantScale, quantGain: quantGain, rangeGain: 0, rangeExponentials: p, quant: true, range: false)
        case (false, true): return gradientPass(w, grad, a: a, b: b, c: c, e: e, l2: l2, mean: mean, quantScale: 0, quantGain: 0, rangeGain: rangeGain, rangeExponentials: p, quant: false, range: true)
        case (true, true): return gradientPass(w, grad, a: a, b: b, c: c, e: e, l2: l2, mean: mean, quantScale: quantScale, quantGain: quantGain, rangeGain: rangeGain, rangeExponentials: p, quant: true, range: true)
        }
    }

    /// One pass: g += a·d³ + b·d² + c·d + e + l2·w (+ the quantisation residual) (+ rangeGain·sign(w)·pⱼ·Z,
    /// the range term's exponentials kept from `tailSums`). With the quantisation term it also
    /// returns Σ(u − r)² and Σ(u − r)·u (`c`, `d`), per 1024-value block in Float, across blocks
    /// in Double.
    @inline(__always)
    static func gradientPass(_ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
                             a: Float, b: Float, c: Float, e: Float, l2: Float, mean: Float,
                             quantScale: Float, quantGain: Float, rangeGain: Float, rangeExponentials p: UnsafeBufferPointer<Float>,
                             quant: Bool, range: Bool) -> BlockSums {
        let signBit = SIMD8<UInt32>(repeating: 0x8000_0000)
        return reduceBlocks(w) { block in
            let offset = block.baseAddress! - w.baseAddress!, gp = grad.baseAddress! + offset
            var squares = SIMD8<Float>(), cross = squares
            var i = 0
            while i + 8 <= block.count {
                let x = load8(block, i), d = x - mean
                var g = ((a * d + b) * d + c) * d + e + l2 * x
                if quant {
                    let u = x * quantScale, r = roundingResidual(u)
                    g += quantGain * r
                    squares += r * r; cross += r * u
                }
                if range {   // rangeGain·pⱼ with wⱼ's sign
                    let r = unsafeBitCast(rangeGain * load8(p, offset + i), to: SIMD8<UInt32>.self) ^ (unsafeBitCast(x, to: SIMD8<UInt32>.self) & signBit)
                    g += unsafeBitCast(r, to: SIMD8<Float>.self)
                }
                let old = UnsafeRawPointer(gp + i).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(gp + i).storeBytes(of: old + g, as: SIMD8<Float>.self)
                i += 8
            }
            var sums = BlockSums(c: Double(squares.sum()), d: Double(cross.sum()))
            while i < block.count {
                let x = block[i], d = x - mean
                var g = ((a * d + b) * d + c) * d + e + l2 * x
                if quant {
                    let u = x * quantScale, r = u - u.rounded(.toNearestOrAwayFromZero)
                    g += quantGain * r
                    sums.c += Double(r * r); sums.d += Double(r * u)
                }
                if range { g += rangeGain * p[offset + i] * (x < 0 ? -1 : 1) }
                gp[i] += g
                i += 1
            }
            return sums
        }
    }
}

// MARK: - Blocked summation

@inline(__always)
func load8(_ p: UnsafeBufferPointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p.baseAddress! + i).loadUnaligned(as: SIMD8<Float>.self)
}

/// Partial sums of one block (or several, merged): four Double sums and a maximum.
struct BlockSums {
    var a = 0.0, b = 0.0, c = 0.0, d = 0.0
    var max: Float = 0
    static func + (l: BlockSums, r: BlockSums) -> BlockSums {
        BlockSums(a: l.a + r.a, b: l.b + r.b, c: l.c + r.c, d: l.d + r.d, max: Swift.max(l.max, r.max))
    }
}

/// Σ over blocks of at most 1024 values of `body(block)`: each block's lanes sum in Float,
/// the blocks in Double. (Splitting large groups across two threads was measured: libdispatch's
/// hand-off costs 50–70 µs here, more than the pass itself.)
@inline(__always)
func reduceBlocks(_ w: UnsafeBufferPointer<Float>, _ body: (UnsafeBufferPointer<Float>) -> BlockSums) -> BlockSums {
    var total = BlockSums()
    var start = 0
    while start < w.count {
        let end = min(w.count, start + 1024)
        total = total + body(UnsafeBufferPointer(rebasing: w[start..<end]))
        start = end
    }
    return total
}

/// Σ wᵢ: 8 Float lanes within a block, Double across blocks.
func blockSum(_ w: UnsafeBufferPointer<Float>) -> Double {
    reduceBlocks(w) { block in
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= block.count { acc += load8(block, i); i += 8 }
        var t = Double(acc.sum())
        while i < block.count { t += Double(block[i]); i += 1 }
        return BlockSums(a: t)
    }.a
}

/// 1.5·2²³: adding it to a Float of magnitude below 2²² rounds to an integer (to nearest, ties to
/// even) and leaves that integer in the low mantissa bits. Swift's generic SIMD rounding and
/// Float→Int conversions become per-lane library calls; this is two vector additions.
let roundingMagic: Float = 12_582_912

/// u − round(u), lane-wise, for |u| < 2²², with the deployed rounding (half away from zero):
/// the residual of nearest-even rounding, with ties — rare, so behind one test — set to −½·sign(u).
@inline(__always)
func roundingResidual(_ u: SIMD8<Float>) -> SIMD8<Float> {
    let d = u - ((u + roundingMagic) - roundingMagic)
    let tie = magnitude(d) .== 0.5
    guard any(tie) else { return d }
    return d.replacing(with: SIMD8(repeating: -0.5).replacing(with: 0.5, where: u .< 0), where: tie)
}

/// |x| lane-wise: the sign bit cleared.
@inline(__always)
func magnitude(_ x: SIMD8<Float>) -> SIMD8<Float> {
    unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7fff_ffff, to: SIMD8<Float>.self)
}

/// The range term's terms exp(β(sᵢ − max s)) below e⁻⁴⁰ ≈ 4·10⁻¹⁸ are left out (counted as 0):
/// Z ≥ 1 (the maximum's own term), so even 10⁸ of them move R by under 10⁻⁹ — far below Float
/// resolution. On heavy-tailed weights only those within 40/β standard deviations of the maximum
/// remain, and the exponentials cost almost nothing; on nearly uniform weights all remain.
let rangeExponentCutoff: Float = 40

/// The smallest |w| whose range exponent k·|w| − shift is at least −`rangeExponentCutoff`.
@inline(__always)
func rangeCutoff(k: Float, shift: Float) -> SIMD8<Float> {
    SIMD8(repeating: k > 0 ? max(0, (shift - rangeExponentCutoff) / k) : 0)
}

/// The first index where |w| equals `m` (the maximum), 8 lanes at a time.
func firstIndex(_ w: UnsafeBufferPointer<Float>, magnitude m: Float) -> Int {
    var i = 0
    while i + 8 <= w.count {
        if any(magnitude(load8(w, i)) .== m) { break }
        i += 8
    }
    while i < w.count, abs(w[i]) != m { i += 1 }
    return i < w.count ? i : 0
}

/// eˣ lane-wise in Float for x ≤ 0 (the softmax weights of the range term): x = n·ln2 + r with
/// |r| ≤ ln2/2 (Cody–Waite split of ln2), eʳ by its degree-6 Taylor polynomial (relative error
/// below 2e-7 there), times 2ⁿ built in the exponent bits. Below −87 the result is 0.
@inline(__always)
func expNonPositive(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let clamped = x.replacing(with: -87, where: x .< -87)
    let t = clamped * 1.442_695_04 + roundingMagic
    let n = t - roundingMagic                                    // round(x·log₂e)
    let r = clamped - n * 0.693_145_75 - n * 1.428_606_8e-06
    var p = SIMD8<Float>(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let bits = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(SIMD8<Float>(repeating: roundingMagic), to: SIMD8<Int32>.self)
    let scale = unsafeBitCast((bits &+ 127) &<< 23, to: SIMD8<Float>.self)
    return (p * scale).replacing(with: 0, where: x .< -87)
}
