// The gradient pass over one group's weights: every term's gradient in one expression per weight,
// specialised on the terms that are on, with the sums `evaluate` deferred to it (the quantisation
// error's, the range bound's band). The coefficients are `GradientCoefficients` (PenaltyTerms.swift).
import Tensors
import IntegerRuntime

extension Penalties {
    /// `grad += kernel(w)` over the group (`grad = kernel(w)` when `overwrite`); returns Σ(u − r)²,
    /// Σ(u − r)·u (`c`, `d`) when the kernel sums the quantisation error (`evaluate` left them
    /// pending; summing them again when it did not doubled the pass's time), and the range band's
    /// sums (`a`, `b`) when it has one. One specialised copy per combination keeps the loop free
    /// of branches.
    static func gradientPass(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>, _ k: PenaltyGradient,
        overwrite: Bool
    ) -> BlockSums {
        overwrite ? gradientPass(w, grad, k, On.self) : gradientPass(w, grad, k, Off.self)
    }

    static func gradientPass<Overwrite: Flag>(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>, _ k: PenaltyGradient,
        _: Overwrite.Type
    ) -> BlockSums {
        func pass<Q: Flag, S: Flag, R: Flag, B: Flag>(_: Q.Type, _: S.Type, _: R.Type, _: B.Type) -> BlockSums {
            gradientPass(w, grad, k, Q.self, S.self, R.self, B.self, Overwrite.self)
        }
        // (quantisation, its sums, range, band): the range term is off while its band is pending.
        switch (k.quant, k.quantSums, k.range, k.band != nil) {
        case (false, _, false, false): return pass(Off.self, Off.self, Off.self, Off.self)
        case (false, _, false, true): return pass(Off.self, Off.self, Off.self, On.self)
        case (false, _, true, _): return pass(Off.self, Off.self, On.self, Off.self)
        case (true, false, false, false): return pass(On.self, Off.self, Off.self, Off.self)
        case (true, false, false, true): return pass(On.self, Off.self, Off.self, On.self)
        case (true, false, true, _): return pass(On.self, Off.self, On.self, Off.self)
        case (true, true, false, false): return pass(On.self, On.self, Off.self, Off.self)
        case (true, true, false, true): return pass(On.self, On.self, Off.self, On.self)
        case (true, true, true, _): return pass(On.self, On.self, On.self, Off.self)
        }
    }

    static func gradientPass<Quant: Flag, Sums: Flag, Range: Flag, Band: Flag, Overwrite: Flag>(
        _ w: UnsafeBufferPointer<Float>, _ grad: UnsafeMutableBufferPointer<Float>,
        _ k: PenaltyGradient, _: Quant.Type, _: Sums.Type, _: Range.Type, _: Band.Type, _: Overwrite.Type
    ) -> BlockSums {
        let x = w.baseAddress!, g = grad.baseAddress!
        let band = k.band ?? RangeBand.unused
        return k.exponentials.withUnsafeBufferPointer { p in
            sumBlocks(0..<w.count) { start, end in
                var sums = LaneSums()
                var i = start
                while i + Lanes.scalarCount <= end {
                    let xi = loadLanes(x + i)
                    storeLanes(
                        (Overwrite.on ? Lanes() : loadLanes(g + i))
                            + k.lanes(
                                xi, at: i, p, quant: Quant.on, range: Range.on, quantSums: Sums.on, into: &sums),
                        g + i)
                    if Band.on { band.add(xi, into: &sums) }
                    i += Lanes.scalarCount
                }
                while i < end {
                    if Overwrite.on { g[i] = 0 }
                    g[i] += k.scalar(
                        x[i], at: i, p, quant: Quant.on, range: Range.on, quantSums: Sums.on, into: &sums)
                    if Band.on { band.add(x[i], into: &sums) }
                    i += 1
                }
                return sums.sum
            }
        }
    }
}

/// Every term's gradient on one group, weight by weight, in Float: `GradientCoefficients`' expression
/// and, on the group's maximum only, the quantisation term's push through max|w|, which needs the
/// whole group's mean((u − r)·u) first (`argMaxCorrection`).
struct PenaltyGradient {
    let a, b, c, e, mean, quantScale, quantGain, rangeGain: Float
    /// Which of the two optional parts are on: the pass is specialised on them.
    let quant: Bool, range: Bool
    /// Whether the pass sums the quantisation error (`evaluate` deferred it); whether the relative
    /// error's parts that need it (`GradientCoefficients.relativeParts`) are left until then.
    let quantSums: Bool, relativePending: Bool
    /// The range bound's band, when `evaluate` deferred it to this pass.
    let band: RangeBand?
    /// The range term's exp(β(sⱼ − max s)) (empty unless `range`).
    let exponentials: [Float]
    /// The index of the group's maximum |w|, λ_q and −2·λ_q·sign(w_max)/M: the maximum's extra
    /// gradient is that times mean((u − r)·u) (its own residual is 0).
    let argMax: Int
    let quantWeight: Double, argMaxCoefficient: Double
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
        band = st.rangeBand
        quant = k.quantWeight != 0
        quantWeight = k.quantWeight
        (quantSums, relativePending) = (quant && st.quantSumsPending, quant && k.relativePending)
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
