// Integer convolution with a 32-bit accumulator through the dense layers' C kernel: the
// patches of sixteen output positions play the kernel's packed rows, and eight output channels'
// weights its samples, so each call yields 16 positions × 8 channels in vector lanes.
import CIntegerKernels

extension IntegerEngine {
    /// A convolution's weights as the kernel's samples: each output channel's C·K·K weights
    /// padded with a zero to an even count, and zero channels up to a multiple of eight.
    static func packConv(_ c: IntegerConv) -> [Int16] {
        let n = c.inChannels * c.kernel * c.kernel
        return padded(c.weight, count: c.outChannels, n: n, width: (n + 1) / 2 * 2)
    }

    /// The input's patches in the kernel's packed form: blocks of sixteen output positions, each
    /// [pairs of patch entries][16 positions][2], zeros where the kernel covers padding, past the
    /// last position and after an odd patch length. Built a pair of entries at a time: each
    /// entry's values at every position as one row (contiguous copies of the input's rows), then
    /// the two rows interleaved into the blocks.
    static func packedPatches(
        _ c: IntegerConv, _ x: [Int16], _ s: [Int]
    ) -> (patches: [Int16], oh: Int, ow: Int) {
        let h = s[1], wd = s[2], k = c.kernel
        let oh = (h + 2 * c.padding - k) / c.stride + 1, ow = (wd + 2 * c.padding - k) / c.stride + 1
        let entries = c.inChannels * k * k, pairs = (entries + 1) / 2, blocks = (oh * ow + 15) / 16
        // Every value of both is written below (`qs_interleave16` fills whole blocks).
        var packed = [Int16](unsafeUninitializedCapacity: blocks * pairs * 32) { $1 = $0.count }
        var rows = [Int16](unsafeUninitializedCapacity: 2 * blocks * 16) { $1 = $0.count }
        packed.withUnsafeMutableBufferPointer { pp in
            x.withUnsafeBufferPointer { xp in
                rows.withUnsafeMutableBufferPointer { rp in
                    let row0 = rp.baseAddress!, row1 = row0 + blocks * 16
                    for p in 0..<pairs {
                        patchRow(c, entry: 2 * p, xp.baseAddress!, h: h, w: wd, oh: oh, ow: ow, into: row0)
                        patchRow(
                            c, entry: 2 * p + 1, xp.baseAddress!, h: h, w: wd, oh: oh, ow: ow, into: row1)
                        for b in 0..<blocks {
                            qs_interleave16(
                                row0 + b * 16, row1 + b * 16, pp.baseAddress! + (b * pairs + p) * 32)
                        }
                    }
                }
            }
        }
        return (packed, oh, ow)
    }

    /// Patch entry `entry` (channel, ky, kx) at every output position, into `row` (oh·ow values,
    /// then zeros to a multiple of sixteen): zeros where the kernel covers padding, and all zeros
    /// for the entry past the patch's end that pads an odd length.
    private static func patchRow(
        _ c: IntegerConv, entry: Int, _ x: UnsafePointer<Int16>, h: Int, w: Int, oh: Int, ow: Int,
        into row: UnsafeMutablePointer<Int16>
    ) {
        let k = c.kernel
        row.update(repeating: 0, count: (oh * ow + 15) / 16 * 16)
        guard entry < c.inChannels * k * k else { return }
        let ch = entry / (k * k), ky = entry / k % k, kx = entry % k
        // Output columns whose input column is inside the image: ox in [lo, hi).
        let lo = max(0, (c.padding - kx + c.stride - 1) / c.stride)
        let hi = min(ow, max(lo, (w + c.padding - kx + c.stride - 1) / c.stride))
        if c.stride == 1 && oh == h && ow == w {
            // "Same" size: the row is the input plane shifted by (ky − p)·w + (kx − p), so one copy
            // from the first tap inside the image to the last, then zeros on the columns it
            // wrapped onto (rows of 7–28 values, one copy each, spent their time starting copies).
            let y0 = max(0, c.padding - ky), y1 = min(h, h + c.padding - ky)
            guard y0 < y1 && lo < hi else { return }
            let first = y0 * w + lo, end = (y1 - 1) * w + hi, shift = (ky - c.padding) * w + kx - c.padding
            (row + first).update(from: x + ch * h * w + first + shift, count: end - first)
            for oy in y0..<y1 {
                for ox in 0..<lo { row[oy * w + ox] = 0 }
                for ox in hi..<w { row[oy * w + ox] = 0 }
            }
            return
        }
        for oy in 0..<oh {
            let iy = oy * c.stride - c.padding + ky
            guard iy >= 0 && iy < h else { continue }
            let src = x + (ch * h + iy) * w - c.padding + kx, dst = row + oy * ow
            if c.stride == 1 {
                (dst + lo).update(from: src + lo, count: hi - lo)
            } else {
                for ox in lo..<hi { dst[ox] = src[ox * c.stride] }
            }
        }
    }

    /// y[o, l] = requant(bias[o] + Σ_k W[o,k]·patch_l[k]) with a 32-bit accumulator: for each
    /// block of sixteen positions and group of eight channels one kernel call, its sums written
    /// into the channels' rows; then the rows requantised. Output (O, OH, OW), saturated to
    /// `range` (default: the requantisation's output range).
    static func convPacked(
        _ c: IntegerConv, weights: [Int16], narrow: [Int32]?, _ x: [Int16], _ s: [Int],
        range: (lo: Int64, hi: Int64)? = nil
    ) -> [Int16] {
        let (patches, oh, ow) = packedPatches(c, x, s)
        let positions = oh * ow, pairs = (c.inChannels * c.kernel * c.kernel + 1) / 2, m = c.outChannels
        // Every sum is written by the kernel calls (`tile` copies partial tiles' valid part).
        var sums = [Int32](unsafeUninitializedCapacity: m * positions) { $1 = $0.count }
        var scratch = [Int32](repeating: 0, count: 128)
        patches.withUnsafeBufferPointer { pp in
            weights.withUnsafeBufferPointer { wp in
                sums.withUnsafeMutableBufferPointer { sp in
                    for b in 0..<(positions + 15) / 16 {
                        for g in 0..<(m + 7) / 8 {
                            tile(
                                pp.baseAddress! + b * pairs * 32, wp.baseAddress! + g * 16 * pairs,
                                stride: 2 * pairs,
                                pairs: pairs, rows: min(16, positions - b * 16), samples: min(8, m - g * 8),
                                into: sp.baseAddress! + g * 8 * positions + b * 16, outStride: positions,
                                scratch: &scratch)
                        }
                    }
                }
            }
        }
        let r = range ?? (c.requant.outMin, c.requant.outMax)
        if let narrow { return requantizedChannels(sums, c, positions, narrow, r) }
        return requantizedChannels(sums, c, positions, c.requant.multiplier, r)
    }

    /// y[o, l] = saturate(requant(bias[o] + sums[o, l])): each channel's multiplier, shift and
    /// bias read once for its row (a loop the compiler vectorises; output by output it cost as
    /// much as the products), in 32-bit multipliers where they give the same values.
    private static func requantizedChannels<M: FixedWidthInteger & SignedInteger>(
        _ sums: [Int32], _ c: IntegerConv, _ positions: Int, _ multiplier: [M],
        _ range: (lo: Int64, hi: Int64)
    ) -> [Int16] {
        var y = [Int16](unsafeUninitializedCapacity: c.outChannels * positions) { $1 = $0.count }
        let limit = c.requant.accumulatorLimit, lo = range.lo, hi = range.hi
        sums.withUnsafeBufferPointer { sp in
            y.withUnsafeMutableBufferPointer { yp in
                for o in 0..<c.outChannels {
                    let mul = multiplier[o], sh = c.requant.shift[o], b = c.bias[o]
                    let a = sp.baseAddress! + o * positions, out = yp.baseAddress! + o * positions
                    for l in 0..<positions {
                        let v = requantize(
                            b &+ Int64(a[l]), narrowMultiplier: mul, shift: sh, accumulatorLimit: limit)
                        out[l] = Int16(truncatingIfNeeded: saturate(v, lo, hi))
                    }
                }
            }
        }
        return y
    }
}
