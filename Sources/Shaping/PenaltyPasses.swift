// The passes over one group's weights: the moments and maximum, the range and quantisation sums,
// and the gradient's completion after its pass (PenaltyGradient.swift). The maths of the terms is
// PenaltyTerms.swift; the blocked sums BlockSums.swift; the lane helpers LaneMath.swift.
import Tensors
import IntegerRuntime

/// The work is two passes over the weights, sometimes three or four: the central moments and the
/// maximum (around a mean hint, so no separate mean pass); the range and quantisation sums when
/// those terms need them first (keeping the range term's exponentials); and one pass writing every
/// term's gradient, which can also take the quantisation sums and the range bound's band
/// (`evaluate(deferring:)`). Sums run in 16 Float lanes inside 1024-value blocks, combined in Double.
public enum Penalties {
    /// Moments and term values of one group. `meanHint` (last step's mean, say) is the centre the
    /// moments are summed around; any value is exact, a close one keeps the Float sums precise.
    /// `deferring` leaves to `addGradient`'s pass what it can sum there, saving a pass: the
    /// quantisation error's sums and the range bound's band. The term values are complete only
    /// after that pass; for callers whose gradient scales do not depend on those terms' values.
    public static func evaluate(
        _ w: UnsafeBufferPointer<Float>, _ s: PenaltySettings, meanHint: Float? = nil, deferring: Bool = false
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
        var quant = s.has(.quantError) && st.maxAbs > 0
        if quant && deferring { st.quantSumsPending = true; quant = false }
        // R lies in [max s, max s + ln(n)/β]. When the top of that interval is within the target,
        // the term and its gradient are 0 whatever R is: its exponentials are not needed. Else a
        // tighter bound, from the exponentials of the weights near the maximum only, often is;
        // its pass also sums the quantisation error when that is due.
        var range = false
        if s.has(.range) {
            st.range = Double(st.maxAbs) / st.m2.squareRoot() + _log(nd) / s.rangeSharpness
            if st.range > s.rangeTarget, let band = rangeBand(st, s) {
                if deferring {
                    st.rangeBand = band
                } else {
                    let sums = quant ? band.sums(w, On.self) : band.sums(w, Off.self)
                    if quant { completeQuantisation(&st, sums, argMax: st.firstMaximum(w)) }
                    st.range = min(st.range, band.bound(sums))
                    quant = false
                }
            }
            range = st.range > s.rangeTarget && st.rangeBand == nil
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

    /// The band of an upper bound on R that takes exponentials only near the maximum, or nil where
    /// it cannot beat max s + ln(n)/β. With δ > 0 every weight with sᵢ < m − δ adds at most
    /// e^(−βδ) to Z, so
    ///     Z ≤ Σ_{runs of 16 with some sᵢ ≥ m − δ} e^(β(sᵢ − m)) + (the other weights' count)·e^(−βδ).
    /// R reaches the target R_T at Z_T = e^(β(R_T − m)); δ is chosen so that the second part is
    /// Z_T/2. In training, most groups whose first bound exceeds R_T are then found within it.
    static func rangeBand(_ st: PenaltyState, _ s: PenaltySettings) -> RangeBand? {
        let sigma = st.m2.squareRoot(), beta = s.rangeSharpness, m = Double(st.maxAbs) / sigma,
            n = Double(st.n)
        let zTarget = _exp(beta * (s.rangeTarget - m))
        let delta = _log(2 * n / zTarget) / beta
        // Z ≥ 1 (the maximum's own term): a target below m is exceeded whatever Z is; and from
        // δ = 40/β on, the band is what the exact pass computes anyway.
        guard zTarget > 1, delta > 0, delta < Double(rangeExponentCutoff) / beta else { return nil }
        return RangeBand(
            sigma: sigma, beta: beta, m: m, low: m - delta, n: st.n,
            qk: Float(BitWidth.qmax(s.quantErrorBits)) / st.maxAbs)
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
    /// Returns the state completed where `evaluate` deferred sums to this pass.
    /// `overwrite`: write the gradient over what `grad` holds instead of adding to it (the
    /// training loop then need not zero it first).
    @discardableResult
    public static func addGradient(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
        _ st: PenaltyState, _ s: PenaltySettings, scales: [PenaltyTerm: Double], overwrite: Bool = false
    ) -> PenaltyState {
        let (done, decay) = addGradient(w, grad, st, s, scales: TermTable(scales), overwrite: overwrite)
        if decay != 0 { for i in grad.indices { grad[i] += decay * w[i] } }
        return done
    }

    /// The same with the scales in a `TermTable` (the loss term's), leaving one part of the
    /// gradient to the caller: when `evaluate` deferred the relative quantisation error's sums,
    /// the part −K·w, whose K needs them, is not written. `decay` is −K: the full gradient is
    /// grad + decay·w (the optimiser adds it as it adds L2: `Parameter.gradientDecay`).
    static func addGradient(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
        _ st: PenaltyState, _ s: PenaltySettings, scales: TermTable, overwrite: Bool
    ) -> (state: PenaltyState, decay: Float) {
        guard st.n > 0 else { return (st, 0) }
        let kernel = PenaltyGradient(w, st, s, scales: scales)
        let sums = gradientPass(w, grad, kernel, overwrite: overwrite)
        var st = st, decay: Float = 0
        if st.quantSumsPending {
            if kernel.quant {
                completeQuantisation(&st, sums, argMax: kernel.argMax)
            } else {
                tailSums(w, &st, s, range: false, quant: true)
            }
            st.quantSumsPending = false
        }
        if kernel.quant {
            var shift = kernel.crossShift
            if kernel.relativePending {
                let parts = GradientCoefficients.relativeParts(st, s, weight: kernel.quantWeight)
                (shift, decay) = (parts.crossShift, Float(-parts.linear))
            }
            grad[kernel.argMax] += kernel.argMaxCorrection(quantCross: st.quantCross * kernel.crossScale - shift)
        }
        if let band = st.rangeBand {
            st.rangeBand = nil
            st.range = min(st.range, band.bound(sums))
            // Beyond the target after all: R's exact sums, and its gradient added in a pass of its own.
            if st.range > s.rangeTarget {
                tailSums(w, &st, s, range: true, quant: false)
                var rangeScale = TermTable()
                rangeScale[.range] = scales[.range]
                let rangeOnly = PenaltyGradient(w, st, s, scales: rangeScale)
                if rangeOnly.range { _ = gradientPass(w, grad, rangeOnly, overwrite: false) }
            }
        }
        return (st, decay)
    }

    /// E and mean((u − r)·u) from the sums Σ(u − r)², Σ(u − r)·u (`c`, `d`), with the index of
    /// the maximum whose push they feed.
    static func completeQuantisation(_ st: inout PenaltyState, _ sums: BlockSums, argMax: Int) {
        st.quantError = sums.c / Double(st.n)
        st.quantCross = sums.d / Double(st.n)
        st.argMax = argMax
    }
}

/// Compile-time switches: generic specialisation gives each combination of terms its own loop
/// (`@inline(__always)` functions with Bool arguments were not always inlined, and kept their
/// branches).
protocol Flag { static var on: Bool { get } }
enum On: Flag { static var on: Bool { true } }
enum Off: Flag { static var on: Bool { false } }
