// The pass of the range term's upper bound (`Penalties.rangeUpperBound`): the exponentials of the
// weights near the maximum only, and, in the same pass, the quantisation error's sums when due.
import Tensors

/// The band near the maximum whose exponentials exp(β(sᵢ − m)) = exp(k·|wᵢ| − shift) the bound
/// takes: runs of 16 with some |wᵢ| ≥ `edge`; single weights (the group's tail) with sᵢ ≥ m − δ.
struct RangeBand {
    /// σ, β, m = max s and m − δ, in Double for the tail's weights.
    let sigma: Double, beta: Double, m: Double, low: Double
    /// qmax/max|w|: the quantisation error's scale.
    let qk: Float
    /// β(sᵢ − m) = k·|wᵢ| − shift; the band's edge in |w|, σ·(m − δ).
    let k: Float, shift: Float, edge: Float

    init(sigma: Double, beta: Double, m: Double, low: Double, qk: Float) {
        (self.sigma, self.beta, self.m, self.low, self.qk) = (sigma, beta, m, low, qk)
        (k, shift, edge) = (Float(beta / sigma), Float(beta * m), Float(sigma * low))
    }

    /// `a`: Σ of the band's exponentials; `b`: how many weights they cover; with `Quant`, `c`, `d`:
    /// Σ(u − r)², Σ(u − r)·u. `Quant.on` is read inside the closure, as in `tailSums`.
    func sums<Quant: Flag>(_ w: UnsafeBufferPointer<Float>, _: Quant.Type) -> BlockSums {
        let base = w.baseAddress!
        return sumBlocks(0..<w.count) { start, end in
            var sums = LaneSums()
            // The band, then the quantisation sums, in two loops over the block (in L1 for the
            // second; see `LaneSums.addQuantisation(_:scale:from:to:)`).
            addBand(base, start, end, into: &sums)
            if Quant.on { sums.addQuantisation(base, scale: qk, from: start, to: end) }
            return sums.sum
        }
    }

    /// The band's exponentials of w[start..<end] into `sums.a`, the weights they cover into `sums.tail.b`.
    @inline(__always)
    private func addBand(_ base: UnsafePointer<Float>, _ start: Int, _ end: Int, into sums: inout LaneSums) {
        let bandEdge = Lanes(repeating: edge)
        var i = start
        while i + Lanes.scalarCount <= end {
            let ax = magnitude(loadLanes(base + i))
            if anyAtLeast(ax, bandEdge) {
                sums.a += expNonPositive(k * ax - shift); sums.tail.b += Double(Lanes.scalarCount)
            }
            i += Lanes.scalarCount
        }
        while i < end {
            let si = Double(abs(base[i])) / sigma
            if si >= low { sums.tail.a += _exp(beta * (si - m)); sums.tail.b += 1 }
            i += 1
        }
    }
}
