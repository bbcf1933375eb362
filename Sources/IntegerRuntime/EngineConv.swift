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
    /// last position and after an odd patch length.
    static func packedPatches(
        _ c: IntegerConv, _ x: [Int16], _ s: [Int]
    ) -> (patches: [Int16], oh: Int, ow: Int) {
        let h = s[1], wd = s[2], k = c.kernel
        let oh = (h + 2 * c.padding - k) / c.stride + 1, ow = (wd + 2 * c.padding - k) / c.stride + 1
        let pairs = (c.inChannels * k * k + 1) / 2, blocks = (oh * ow + 15) / 16
        var packed = [Int16](repeating: 0, count: blocks * pairs * 32)
        // Where position l's first entry goes: its block, then its lane.
        let slot = (0..<(oh * ow)).map { packedSlot(row: $0, pairs: pairs) }
        packed.withUnsafeMutableBufferPointer { pp in
            x.withUnsafeBufferPointer { xp in
                slot.withUnsafeBufferPointer { sp in
                    for ch in 0..<c.inChannels {
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let entry = (ch * k + ky) * k + kx
                                let lane = pp.baseAddress! + (entry / 2) * 32 + entry % 2
                                // Output columns whose input column is inside the image: ox in [lo, hi).
                                let lo = max(0, (c.padding - kx + c.stride - 1) / c.stride)
                                let hi = min(ow, max(lo, (wd + c.padding - kx + c.stride - 1) / c.stride))
                                for oy in 0..<oh {
                                    let iy = oy * c.stride - c.padding + ky
                                    guard iy >= 0 && iy < h else { continue }
                                    let src = xp.baseAddress! + (ch * h + iy) * wd - c.padding + kx
                                    let slots = sp.baseAddress! + oy * ow
                                    for ox in lo..<hi { lane[slots[ox]] = src[ox * c.stride] }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (packed, oh, ow)
    }

    /// y[o, l] = requant(bias[o] + Σ_k W[o,k]·patch_l[k]) with a 32-bit accumulator: for each
    /// block of sixteen positions and group of eight channels one kernel call, its sums copied
    /// into the channels' rows; then each channel requantised with its multiplier, shift and bias
    /// read once (a loop the compiler vectorises; output by output it cost as much as the
    /// products). Output (O, OH, OW).
    static func convPacked(_ c: IntegerConv, weights: [Int16], _ x: [Int16], _ s: [Int]) -> [Int16] {
        let (patches, oh, ow) = packedPatches(c, x, s)
        let positions = oh * ow, pairs = (c.inChannels * c.kernel * c.kernel + 1) / 2, m = c.outChannels
        var sums = [Int32](repeating: 0, count: m * positions + 128)
        patches.withUnsafeBufferPointer { pp in
            weights.withUnsafeBufferPointer { wp in
                sums.withUnsafeMutableBufferPointer { sp in
                    let rows = sp.baseAddress!, acc = rows + m * positions
                    for b in 0..<(positions + 15) / 16 {
                        let count = min(16, positions - b * 16)
                        for g in 0..<(m + 7) / 8 {
                            qs_dense16x8(
                                pp.baseAddress! + b * pairs * 32, wp.baseAddress! + g * 16 * pairs, 2 * pairs,
                                pairs,
                                acc)
                            for j in 0..<min(8, m - g * 8) {
                                let row = rows + (g * 8 + j) * positions + b * 16
                                for r in 0..<count { row[r] = acc[j * 16 + r] }
                            }
                        }
                    }
                }
            }
        }
        var y = [Int16](repeating: 0, count: m * positions)
        let limit = c.requant.accumulatorLimit, lo = c.requant.outMin, hi = c.requant.outMax
        sums.withUnsafeBufferPointer { sp in
            y.withUnsafeMutableBufferPointer { yp in
                for o in 0..<m {
                    let mul = c.requant.multiplier[o], sh = c.requant.shift[o], b = c.bias[o]
                    let a = sp.baseAddress! + o * positions, out = yp.baseAddress! + o * positions
                    for l in 0..<positions {
                        let v = requantize(
                            b &+ Int64(a[l]), multiplier: mul, shift: sh, accumulatorLimit: limit)
                        out[l] = Int16(truncatingIfNeeded: saturate(v, lo, hi))
                    }
                }
            }
        }
        return y
    }
}
