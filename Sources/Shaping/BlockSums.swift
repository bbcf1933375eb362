// Blocked summation: Float lanes within a block of 1024 values, Double across blocks, in block
// order whichever thread ran a block, so the sums are the same on one thread or two.
import Tensors

/// Values per block: each block sums in Float lanes, the blocks in Double.
let blockSize = 1024

/// The fewest blocks a loop shares with other threads (`BlockSharing`); smaller ones run on the
/// calling thread. Handing blocks to another processor costs about 0.5–1 µs a loop: a plain sum of
/// 8 blocks took longer shared than alone, one of 16 about as long, one of 32 less
/// (Docs/Performance.md). The examples' small layers (the last dense layers, the CNN's
/// convolutions, 1–5 blocks) run alone.
let minimumSharedBlocks = 16

/// Σ of `body(start, end)` over consecutive blocks of at most `blockSize` values of `range`.
/// Each body keeps its accumulators local (as `LaneSums`): captured from outside, they lived in
/// memory and the loops ran at half speed.
/// With a `BlockSharing` current, other threads may run some of the blocks; their sums are kept
/// apart and added in block order all the same, so the result does not depend on who ran what.
@inline(__always)
func sumBlocks(_ range: Range<Int>, _ body: (Int, Int) -> BlockSums) -> BlockSums {
    let blocks = BlockSharing.blockCount(range, size: blockSize)
    /// Block b's sums, marked with its start (where its maximum is searched for).
    func block(_ b: Int) -> BlockSums {
        let r = BlockSharing.block(b, of: range, size: blockSize)
        var part = body(r.lowerBound, r.upperBound)
        part.maxStart = r.lowerBound
        return part
    }
    if blocks >= minimumSharedBlocks, let sharing = BlockSharing.current {
        return sharedSum(blocks, sharing, block)
    }
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
        a += v; b += v2; c = fused(v2, v, c); d = fused(v2, v2, d)
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

    /// Σ(u − round u)², Σ(u − round u)·u into c, d, u = x·`scale` (the quantisation error's sums).
    @inline(__always)
    mutating func addQuantisation(_ x: Lanes, scale: Float) {
        let u = x * scale
        addQuantisation(residual: roundingResidual(u), of: u)
    }

    @inline(__always)
    mutating func addQuantisation(_ x: Float, scale: Float) {
        let u = x * scale
        addQuantisation(residual: roundingResidual(u), of: u)
    }

    /// The same over x[start..<end], 16 at a time and the rest one by one. A loop of its own:
    /// where it shared one with the range term's exponentials, their constants crowded these
    /// accumulators out of the registers on AVX2 (16 of them, two per 16 lanes), and every step
    /// waited on a store and a load of each (`perf`: the range bound's pass took half as long again).
    @inline(__always)
    mutating func addQuantisation(_ x: UnsafePointer<Float>, scale: Float, from start: Int, to end: Int) {
        var i = start
        while i + Lanes.scalarCount <= end {
            addQuantisation(loadLanes(x + i), scale: scale); i += Lanes.scalarCount
        }
        while i < end { addQuantisation(x[i], scale: scale); i += 1 }
    }

    /// The same sums from a residual r = u − round u already at hand.
    @inline(__always)
    mutating func addQuantisation(residual r: Lanes, of u: Lanes) { c = fused(r, r, c); d = fused(r, u, d) }

    @inline(__always)
    mutating func addQuantisation(residual r: Float, of u: Float) {
        tail.c += Double(r * r); tail.d += Double(r * u)
    }

    var sum: BlockSums {
        @inline(__always) get {
            var s = BlockSums()
            (s.a, s.b, s.c, s.d) = (
                Double(laneSum(a)) + tail.a, Double(laneSum(b)) + tail.b,
                Double(laneSum(c)) + tail.c, Double(laneSum(d)) + tail.d
            )
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
