// The passes over one group's weights: the moments and maximum, the range and quantisation sums,
// and one pass writing every term's gradient, each specialised on the terms that are on. The maths
// of the terms is PenaltyTerms.swift; the blocked sums BlockSums.swift; the lane helpers LaneMath.swift.
import Tensors
import IntegerRuntime

/// The work is two or three passes over the weights: the central moments and the maximum (around a
/// mean hint, so no separate mean pass), the range and quantisation sums when those terms need them
/// (keeping the range term's exponentials), and one pass writing every term's gradient. Sums run
/// in 16 Float lanes inside 1024-value blocks, combined in Double.
public enum Penalties {
    /// Moments and term values of one group. `meanHint` (last step's mean, say) is the centre the
    /// moments are summed around; any value is exact, a close one keeps the Float sums precise.
    /// `quantisationSums: false` leaves the quantisation error's sums to `addGradient`, saving a
    /// pass: for callers whose gradient scales do not depend on that term's value.
    public static func evaluate(
        _ w: UnsafeBufferPointer<Float>, _ s: PenaltySettings, meanHint: Float? = nil,
        quantisationSums: Bool = true
    ) -> PenaltyState {
        var st = PenaltyState()
        let n = w.count
        st.n = n
        guard n > 0 else { return st }
        let c = meanHint ?? Float(blockSum(w) / Double(n))
        // Σ(w − c)ᵏ for k = 1…4 (and max|w|), then the shift formulas give the moments about μ.
        let sums = momentSums(w, center: c, maximum: needsMaximum(s))
        let nd = Double(n), e = sums.a / nd  // μ − c
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
        // tighter bound, from the exponentials of the weights near the maximum only, often is;
        // its pass also sums the quantisation error when that is due.
        var quant = s.has(.quantError) && st.maxAbs > 0
        // The relative error's gradient coefficients need E before the gradient pass.
        if quant && !quantisationSums && !s.quantErrorRelative { st.quantSumsPending = true; quant = false }
        var range = false
        if s.has(.range) {
            st.range = Double(st.maxAbs) / st.m2.squareRoot() + _log(nd) / s.rangeSharpness
            if st.range > s.rangeTarget, let bound = rangeUpperBound(w, &st, s, quant: quant) {
                st.range = min(st.range, bound)
                quant = false
            }
            range = st.range > s.rangeTarget
        }
        if range || quant { tailSums(w, &st, s, range: range, quant: quant) }
        return st
    }

    /// Whether the settings need max|w| (the range and quantisation terms do); it costs as much as
    /// the moments.
    static func needsMaximum(_ s: PenaltySettings) -> Bool { s.has(.range) || s.has(.quantError) }

    /// Σ(w − c)ᵏ for k = 1…4 (`a`…`d`), and max|w| when asked (else 0).
    static func momentSums(_ w: UnsafeBufferPointer<Float>, center c: Float, maximum: Bool) -> BlockSums {
        maximum ? momentPass(w, center: c, On.self) : momentPass(w, center: c, Off.self)
    }

    static func momentPass<Maximum: Flag>(
        _ w: UnsafeBufferPointer<Float>, center c: Float, _: Maximum.Type
    ) -> BlockSums {
        // `Maximum.on` is read inside the loop's closure, which is then specialised with the pass
        // (see `tailSums`).
        let base = w.baseAddress!
        return sumBlocks(0..<w.count) { start, end in
            var sums = LaneSums()
            var i = start
            while i + Lanes.scalarCount <= end {
                sums.addMoments(loadLanes(base + i), center: c, maximum: Maximum.on); i += Lanes.scalarCount
            }
            while i < end { sums.addMoments(base[i], center: c, maximum: Maximum.on); i += 1 }
            return sums.sum
        }
    }

    /// An upper bound on R from one pass that takes exponentials only near the maximum, or nil
    /// (and no pass) where it cannot beat max s + ln(n)/β. With δ > 0 every weight with
    /// sᵢ < m − δ adds at most e^(−βδ) to Z, so
    ///     Z ≤ Σ_{runs of 16 with some sᵢ ≥ m − δ} e^(β(sᵢ − m)) + (the other weights' count)·e^(−βδ).
    /// R reaches the target R_T at Z_T = e^(β(R_T − m)); δ is chosen so that the second part is
    /// Z_T/2. In training, most groups whose first bound exceeds R_T are then found within it.
    /// With `quant` the same pass sums the quantisation error into `st` (as `tailSums` would).
    static func rangeUpperBound(
        _ w: UnsafeBufferPointer<Float>, _ st: inout PenaltyState, _ s: PenaltySettings, quant: Bool
    ) -> Double? {
        let sigma = st.m2.squareRoot(), beta = s.rangeSharpness, m = Double(st.maxAbs) / sigma,
            n = Double(w.count)
        let zTarget = _exp(beta * (s.rangeTarget - m))
        let delta = _log(2 * n / zTarget) / beta
        // Z ≥ 1 (the maximum's own term): a target below m is exceeded whatever Z is; and from
        // δ = 40/β on, the band is what the exact pass computes anyway.
        guard zTarget > 1, delta > 0, delta < Double(rangeExponentCutoff) / beta else { return nil }
        let band = RangeBand(
            sigma: sigma, beta: beta, m: m, low: m - delta,
            qk: Float(BitWidth.qmax(s.quantErrorBits)) / st.maxAbs)
        let sums = quant ? band.sums(w, On.self) : band.sums(w, Off.self)
        if quant { completeQuantisation(&st, sums, argMax: st.firstMaximum(w)) }
        // 1e-6: the Float exponentials' relative error (2e-7) and their sums', with room to spare.
        let z = sums.a * (1 + 1e-6) + (n - sums.b) * _exp(-beta * delta)
        return m + _log(z) / beta
    }

    /// One pass for the terms that need σ and max|w| first:
    ///     R = m + (1/β)·log Σ exp(β(sᵢ − m)),  sᵢ = |wᵢ|/σ,  m = max sᵢ  (every exponent ≤ 0)
    ///     E = mean((u − round u)²),  mean((u − round u)·u),  u = w·qmax/max|w|
    /// Only weights near the maximum carry weight in Z: runs of 16 whose exponents are all below
    /// −`rangeExponentCutoff` are skipped (see `rangeCutoff`).
    static func tailSums(
        _ w: UnsafeBufferPointer<Float>, _ st: inout PenaltyState, _ s: PenaltySettings,
        range: Bool, quant: Bool
    ) {
        switch (range, quant) {
        case (true, true): tailSums(w, &st, s, On.self, On.self)
        case (true, false): tailSums(w, &st, s, On.self, Off.self)
        case (false, true): tailSums(w, &st, s, Off.self, On.self)
        case (false, false): break
        }
    }

    static func tailSums<Range: Flag, Quant: Flag>(
        _ w: UnsafeBufferPointer<Float>, _ st: inout PenaltyState, _ s: PenaltySettings,
        _: Range.Type, _: Quant.Type
    ) {
        // `Range.on` and `Quant.on` are read where they are used, the loop's closure included: a
        // closure that captured them as Bools would not depend on the flags, and one unspecialised
        // copy with both branches would serve every combination (at half speed, its accumulators
        // spilled).
        let sigma = st.m2.squareRoot(), beta = s.rangeSharpness, m = Double(st.maxAbs) / sigma
        let k = Float(beta / sigma), bm = Float(beta * m), inv = Float(1 / sigma)  // β(sᵢ − m) = k·|wᵢ| − βm
        let qk = Float(BitWidth.qmax(s.quantErrorBits)) / st.maxAbs
        let cutoff = rangeCutoff(k: k, shift: bm)
        if Range.on {
            st.rangeExponentials = [Float](unsafeUninitializedCapacity: w.count) { _, n in n = w.count }
        }
        let base = w.baseAddress!
        let total = st.rangeExponentials.withUnsafeMutableBufferPointer { exps in
            sumBlocks(0..<w.count) { start, end in
                var sums = LaneSums()
                // The range sums, then the quantisation sums, in two loops over the block (see
                // `LaneSums.addQuantisation(_:scale:from:to:)`).
                if Range.on {
                    var i = start
                    while i + Lanes.scalarCount <= end {
                        let ax = magnitude(loadLanes(base + i))
                        var p = Lanes()
                        if anyAtLeast(ax, cutoff) {
                            p = expNonPositive(k * ax - bm); sums.a += p; sums.b += p * (ax * inv)
                        }
                        storeLanes(p, exps.baseAddress! + i)
                        i += Lanes.scalarCount
                    }
                    while i < end {
                        let si = Double(abs(base[i])) / sigma, p = _exp(beta * (si - m))
                        sums.tail.a += p; sums.tail.b += p * si; exps[i] = Float(p)
                        i += 1
                    }
                }
                if Quant.on { sums.addQuantisation(base, scale: qk, from: start, to: end) }
                return sums.sum
            }
        }
        if Range.on { st.range = m + _log(total.a) / beta; st.rangeMeanS = total.b / total.a }
        if Quant.on {
            completeQuantisation(&st, total, argMax: st.firstMaximum(w))
        }
    }

    /// Adds `Σ_t scale_t·∂P_t/∂w` to `grad`, where `scale_t` is the term's total weight (λ times
    /// the aggregation and schedule factors) and P_t the unweighted term value of `values`.
    /// Terms that `s` leaves off are ignored whatever their scale. One pass writes every term's
    /// gradient (`PenaltyGradient`); the quantisation term's push on the maximum follows it.
    ///
    /// Returns the state with the quantisation sums filled in when `evaluate` left them pending.
    /// `overwrite`: write the gradient over what `grad` holds instead of adding to it (the
    /// training loop then need not zero it first).
    @discardableResult
    public static func addGradient(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
        _ st: PenaltyState, _ s: PenaltySettings, scales: [PenaltyTerm: Double], overwrite: Bool = false
    ) -> PenaltyState {
        addGradient(w, grad, st, s, scales: TermTable(scales), overwrite: overwrite)
    }

    /// The same with the scales in a `TermTable` (the loss term's).
    @discardableResult
    static func addGradient(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
        _ st: PenaltyState, _ s: PenaltySettings, scales: TermTable, overwrite: Bool
    ) -> PenaltyState {
        guard st.n > 0 else { return st }
        let kernel = PenaltyGradient(w, st, s, scales: scales)
        let pending = st.quantSumsPending
        let sums =
            overwrite
            ? gradientPass(w, grad, kernel, quantisationSums: pending, On.self)
            : gradientPass(w, grad, kernel, quantisationSums: pending, Off.self)
        var st = st
        if st.quantSumsPending {
            if kernel.quant {
                completeQuantisation(&st, sums, argMax: kernel.argMax)
            } else {
                tailSums(w, &st, s, range: false, quant: true)
            }
            st.quantSumsPending = false
        }
        if kernel.quant {
            grad[kernel.argMax] += kernel.argMaxCorrection(
                quantCross: st.quantCross * kernel.crossScale - kernel.crossShift)
        }
        return st
    }

    /// E and mean((u − r)·u) from the sums Σ(u − r)², Σ(u − r)·u (`c`, `d`), with the index of
    /// the maximum whose push they feed.
    static func completeQuantisation(_ st: inout PenaltyState, _ sums: BlockSums, argMax: Int) {
        st.quantError = sums.c / Double(st.n)
        st.quantCross = sums.d / Double(st.n)
        st.argMax = argMax
    }

    /// `grad += kernel(w)` over the group (`grad = kernel(w)` when `Overwrite`); returns Σ(u − r)²,
    /// Σ(u − r)·u (`c`, `d`) when the quantisation term is on and `quantisationSums` asks for
    /// them (`evaluate` left them pending; summing them again when it did not doubled the pass's
    /// time). One specialised copy per combination keeps the loop free of branches.
    static func gradientPass<Overwrite: Flag>(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>, _ k: PenaltyGradient,
        quantisationSums: Bool, _: Overwrite.Type
    ) -> BlockSums {
        switch (k.quant, k.range, k.quant && quantisationSums) {
        case (false, false, _): gradientPass(w, grad, k, Off.self, Off.self, Off.self, Overwrite.self)
        case (false, true, _): gradientPass(w, grad, k, Off.self, On.self, Off.self, Overwrite.self)
        case (true, false, false): gradientPass(w, grad, k, On.self, Off.self, Off.self, Overwrite.self)
        case (true, true, false): gradientPass(w, grad, k, On.self, On.self, Off.self, Overwrite.self)
        case (true, false, true): gradientPass(w, grad, k, On.self, Off.self, On.self, Overwrite.self)
        case (true, true, true): gradientPass(w, grad, k, On.self, On.self, On.self, Overwrite.self)
        }
    }

    static func gradientPass<Quant: Flag, Range: Flag, Sums: Flag, Overwrite: Flag>(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
        _ k: PenaltyGradient, _: Quant.Type, _: Range.Type, _: Sums.Type, _: Overwrite.Type
    ) -> BlockSums {
        let x = w.baseAddress!, g = grad.baseAddress!
        return k.exponentials.withUnsafeBufferPointer { p in
            sumBlocks(0..<w.count) { start, end in
                var sums = LaneSums()
                var i = start
                while i + Lanes.scalarCount <= end {
                    storeLanes(
                        (Overwrite.on ? Lanes() : loadLanes(g + i))
                            + k.lanes(
                                loadLanes(x + i), at: i, p, quant: Quant.on, range: Range.on,
                                quantSums: Sums.on, into: &sums),
                        g + i)
                    i += Lanes.scalarCount
                }
                while i < end {
                    if Overwrite.on { g[i] = 0 }
                    g[i] += k.scalar(
                        x[i], at: i, p, quant: Quant.on, range: Range.on, quantSums: Sums.on, into: &sums)
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

/// Every term's gradient on one group, weight by weight, in Float: `GradientCoefficients`' expression
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
    /// What mean((u − r)·u) becomes in the maximum's push (`GradientCoefficients`).
    let crossScale: Double, crossShift: Double

    init(
        _ w: UnsafeBufferPointer<Float>, _ st: PenaltyState, _ s: PenaltySettings,
        scales: TermTable
    ) {
        let k = GradientCoefficients(st, s, scales: scales)
        (a, b, c, e, mean) = (Float(k.a), Float(k.b), Float(k.c), Float(k.e), Float(st.mean))
        rangeGain = Float(k.rangeGain)
        range = rangeGain != 0
        exponentials = range ? st.rangeExponentials : []
        quant = k.quantWeight != 0
        (crossScale, crossShift) = (k.crossScale, k.crossShift)
        if quant {
            quantScale = Float(BitWidth.qmax(s.quantErrorBits)) / st.maxAbs
            quantGain = Float(k.quantFactor) * quantScale
            argMax = st.quantSumsPending ? st.firstMaximum(w) : st.argMax
            argMaxCoefficient = k.argMaxCoefficient(negative: w[argMax] < 0, maxAbs: st.maxAbs)
        } else {
            (quantScale, quantGain, argMax, argMaxCoefficient) = (0, 0, 0, 0)
        }
    }

    /// The gradient of 16 weights from index `i` of the group; adds their Σ(u − r)², Σ(u − r)·u to
    /// `sums.c`, `sums.d` when `quant` and `quantSums`. `p`: the exponentials' storage, when `range`.
    @inline(__always)
    func lanes(
        _ x: Lanes, at i: Int, _ p: UnsafeBufferPointer<Float>, quant: Bool, range: Bool, quantSums: Bool,
        into sums: inout LaneSums
    ) -> Lanes {
        let d = x - mean
        var g = fused(
            fused(fused(Lanes(repeating: a), d, Lanes(repeating: b)), d, Lanes(repeating: c)), d,
            Lanes(repeating: e))
        if quant {
            let u = x * quantScale, r = roundingResidual(u)
            g = fused(Lanes(repeating: quantGain), r, g)
            if quantSums { sums.addQuantisation(residual: r, of: u) }
        }
        if range { g += withSign(rangeGain * loadLanes(p.baseAddress! + i), of: x) }
        return g
    }

    /// The same for one weight (the same operations in the same order: the same result).
    @inline(__always)
    func scalar(
        _ x: Float, at i: Int, _ p: UnsafeBufferPointer<Float>, quant: Bool, range: Bool, quantSums: Bool,
        into sums: inout LaneSums
    ) -> Float {
        let d = x - mean
        var g = fused(fused(fused(a, d, b), d, c), d, e)
        if quant {
            let u = x * quantScale, r = roundingResidual(u)
            g = fused(quantGain, r, g)
            if quantSums { sums.addQuantisation(residual: r, of: u) }
        }
        if range { g += Float(bitPattern: (rangeGain * p[i]).bitPattern ^ (x.bitPattern & 0x8000_0000)) }
        return g
    }

    /// The maximum's extra gradient, given the group's mean((u − r)·u).
    func argMaxCorrection(quantCross: Double) -> Float { Float(argMaxCoefficient * quantCross) }
}
