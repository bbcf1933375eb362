// The range term's upper bound (`Penalties.rangeBand`): the exponentials of the weights near the
// maximum only, in a pass of their own (with the quantisation error's sums when due) or in the
// gradient pass.
import Tensors

/// The band near the maximum whose exponentials exp(β(sᵢ − m)) = exp(k·|wᵢ| − shift) the bound
/// takes: runs of 16 with some |wᵢ| ≥ `edge`; single weights (the group's tail) with sᵢ ≥ m − δ.
/// Its sums come from a pass of their own (`sums`) or from the gradient pass (`add`).
struct RangeBand: Sendable {
    /// σ, β, m = max s and m − δ, in Double for the tail's weights.
    let sigma: Double, beta: Double, m: Double, low: Double
    /// The group's size, and e^(−βδ): the most a weight outside the band adds to Z.
    let n: Double, outside: Double
    /// qmax/max|w|: the quantisation error's scale.
    let qk: Float
    /// β(sᵢ − m) = k·|wᵢ| − shift; the band's edge in |w|, σ·(m − δ).
    let k: Float, shift: Float, edge: Float

    init(sigma: Double, beta: Double, m: Double, low: Double, n: Int, qk: Float) {
        (self.sigma, self.beta, self.m, self.low, self.qk) = (sigma, beta, m, low, qk)
        (self.n, outside) = (Double(n), _exp(-beta * (m - low)))
        (k, shift, edge) = (Float(beta / sigma), Float(beta * m), Float(sigma * low))
    }

    /// A band for passes that take none (it is not read).
    static let unused = RangeBand(sigma: 1, beta: 1, m: 0, low: 0, n: 0, qk: 0)

    /// The upper bound on R from the band's sums (`a`: its exponentials, `b`: the weights they
    /// cover): Z ≤ a + (n − b)·e^(−βδ).
    func bound(_ sums: BlockSums) -> Double {
        // 1e-6: the Float exponentials' relative error (2e-7) and their sums', with room to spare.
        let z = sums.a * (1 + 1e-6) + (n - sums.b) * outside
        return m + _log(z) / beta
    }

    /// `a`: Σ of the band's exponentials; `b`: how many weights they cover; with `Quant`, `c`, `d`:
    /// Σ(u − r)², Σ(u − r)·u. `Quant.on` is read inside the closure, as in `tailSums`.
    func sums<Quant: Flag>(_ w: UnsafeBufferPointer<Float>, _: Quant.Type) -> BlockSums {
        let base = w.baseAddress!
        return sumBlocks(0..<w.count) { start, end in
            var sums = LaneSums()
            // The band, then the quantisation sums, in two loops over the block (in L1 for the
            // second; see `LaneSums.addQuantisation(_:scale:from:to:)`).
            var i = start
            while i + Lanes.scalarCount <= end { add(loadLanes(base + i), into: &sums); i += Lanes.scalarCount }
            while i < end { add(base[i], into: &sums); i += 1 }
            if Quant.on { sums.addQuantisation(base, scale: qk, from: start, to: end) }
            return sums.sum
        }
    }

    /// 16 weights' share of the band: their exponentials into `sums.a`, the weights they cover into
    /// `sums.tail.b`, when one of them is in it.
    @inline(__always)
    func add(_ x: Lanes, into sums: inout LaneSums) {
        let ax = magnitude(x)
        if anyAtLeast(ax, Lanes(repeating: edge)) {
            sums.a += expNonPositive(k * ax - shift); sums.tail.b += Double(Lanes.scalarCount)
        }
    }

    /// One weight's (the group's tail), in Double.
    @inline(__always)
    func add(_ x: Float, into sums: inout LaneSums) {
        let si = Double(abs(x)) / sigma
        if si >= low { sums.tail.a += _exp(beta * (si - m)); sums.tail.b += 1 }
    }
}
