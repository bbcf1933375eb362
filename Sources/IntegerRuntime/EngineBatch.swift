// The integer engine over a batch of samples: dense layers as one integer matrix product over
// the batch (sixteen rows by eight samples per call of the C kernel), every other layer sample by
// sample.
import CIntegerKernels
import CProcessor

extension IntegerEngine {
    /// `count` samples stored one after another (each `model.inputShape` long) through every
    /// layer; the outputs one after another. Gives exactly what `run` gives for each sample.
    public func runBatch(_ inputs: [Int16], count: Int) -> [Int16] {
        precondition(count >= 0 && inputs.count == count * model.inputShape.reduce(1, *))
        var x = inputs, shape = model.inputShape, i = 0
        while i < model.layers.count {
            let layer = model.layers[i], next = IntegerEngine.outputShape(layer, shape)
            let inSize = shape.reduce(1, *), outSize = next.reduce(1, *)
            switch layer {
            case .dense(let d) where d.requant.accumulatorBits <= 32:
                x = IntegerEngine.denseBatch(
                    d, packed: packedWeights[i], narrow: narrowMultipliers[i], x, count: count)
            case .flatten: break
            case .clamp: x = apply(i, layer, x, shape)  // element-wise: the whole batch at once
            case .conv(let c) where foldedClamps[i] != nil:
                // The clamp right after the convolution is its saturation's range, made narrower.
                x = bySample(x, count: count, inSize, outSize) {
                    IntegerEngine.convPacked(
                        c, weights: packedWeights[i], narrow: narrowMultipliers[i], $0, shape,
                        range: foldedClamps[i])
                }
                i += 1
            default:
                x = bySample(x, count: count, inSize, outSize) { apply(i, layer, $0, shape) }
            }
            shape = next
            i += 1
        }
        return x
    }

    /// `body` on each sample's slice of the batch, the outputs laid out one after another.
    private func bySample(
        _ x: [Int16], count: Int, _ inSize: Int, _ outSize: Int, _ body: ([Int16]) -> [Int16]
    ) -> [Int16] {
        [Int16](unsafeUninitializedCapacity: count * outSize) { y, n in
            for s in 0..<count {
                let out = body(Array(x[s * inSize..<(s + 1) * inSize]))
                out.withUnsafeBufferPointer {
                    (y.baseAddress! + s * outSize).initialize(from: $0.baseAddress!, count: outSize)
                }
            }
            n = count * outSize
        }
    }

    /// The saturation range of a requantisation followed by `next` when that is a clamp whose
    /// range overlaps it: clamp(saturate(v, a, b), c, d) = saturate(v, max(a, c), min(b, d)).
    static func foldedClamp(_ r: Requantization, _ next: IntegerLayer) -> (lo: Int64, hi: Int64)? {
        guard case let .clamp(c, d) = next else { return nil }
        let lo = max(r.outMin, c), hi = min(r.outMax, d)
        return r.outMin <= r.outMax && c <= d && lo <= hi ? (lo, hi) : nil
    }

    /// Where entry 0 of matrix row `row` goes in the kernel's packed form (blocks of sixteen
    /// rows, each [pairs][16][2]); entry k is (k / 2)·32 + k % 2 further on.
    @inline(__always)
    static func packedSlot(row: Int, pairs: Int) -> Int { (row / 16) * pairs * 32 + (row % 16) * 2 }

    /// A dense layer's weights for `qs_dense16x8`: blocks of sixteen rows (the last padded with
    /// zero rows), each as [pairs of inputs][16 rows][2], an odd input count padded with a zero.
    static func packDense(_ d: IntegerDense) -> [Int16] {
        let n = d.inFeatures, pairs = (n + 1) / 2, blocks = (d.outFeatures + 15) / 16
        var packed = [Int16](repeating: 0, count: blocks * pairs * 32)
        for o in 0..<d.outFeatures {
            let base = packedSlot(row: o, pairs: pairs)
            for k in 0..<n { packed[base + (k / 2) * 32 + k % 2] = d.weight[o * n + k] }
        }
        return packed
    }

    /// A dense layer with a 32-bit accumulator over `count` samples: y[s, o] = requant(bias[o] +
    /// Σ_k W[o,k]·x[s,k]). Sixteen rows by eight samples per kernel call, their sums in vector
    /// lanes (no horizontal sums); each block of rows (a few tens of KB) stays in the first-level
    /// cache while every sample passes it.
    static func denseBatch(
        _ d: IntegerDense, packed: [Int16], narrow: [Int32]?, _ x: [Int16], count: Int
    ) -> [Int16] {
        let n = d.inFeatures, m = d.outFeatures
        let pairs = (n + 1) / 2, width = 2 * pairs, blocks = (m + 15) / 16, groups = (count + 7) / 8
        let input = width == n && count == groups * 8 ? x : padded(x, count: count, n: n, width: width)
        // The kernel's sums for every sample and row, then requantised sample by sample.
        var sums = [Int32](repeating: 0, count: count * m)
        var scratch = [Int32](repeating: 0, count: 128)
        packed.withUnsafeBufferPointer { wp in
            input.withUnsafeBufferPointer { xp in
                sums.withUnsafeMutableBufferPointer { sp in
                    for b in 0..<blocks {
                        for g in 0..<groups {
                            tile(
                                wp.baseAddress! + b * pairs * 32, xp.baseAddress! + g * 8 * width,
                                stride: width,
                                pairs: pairs, rows: min(16, m - b * 16), samples: min(8, count - g * 8),
                                into: sp.baseAddress! + g * 8 * m + b * 16, outStride: m, scratch: &scratch)
                        }
                    }
                }
            }
        }
        if let narrow {
            return requantizedRows(sums, rows: count, columns: m, bias: d.bias, d.requant, narrow)
        }
        return requantizedRows(sums, rows: count, columns: m, bias: d.bias, d.requant, d.requant.multiplier)
    }

    /// The widest of the kernel's instruction sets this processor and its operating system have
    /// (CPUID and XGETBV): 3 AVX-512 VNNI, 2 AVX-512BW, 1 AVX2, 0 the build's own target. Every
    /// level gives the same sums; only the speed differs.
    public static let kernelLevel: Int32 = {
        let f = qs_cpu_features()
        func has(_ bits: [UInt32]) -> Bool { bits.allSatisfy { f & $0 != 0 } }
        let ymm = UInt32(QS_CPU_OS_YMM), zmm = UInt32(QS_CPU_OS_ZMM), avx2 = UInt32(QS_CPU_AVX2)
        let avx512 = [UInt32(QS_CPU_AVX512F), UInt32(QS_CPU_AVX512BW), UInt32(QS_CPU_AVX512VL), ymm, zmm]
        if has(avx512 + [UInt32(QS_CPU_AVX512VNNI)]) { return 3 }
        if has(avx512) { return 2 }
        return has([avx2, ymm]) ? 1 : 0
    }()

    /// The chosen kernel's instruction set, for records.
    public static var kernelName: String {
        ["the build's target", "AVX2", "AVX-512BW", "AVX-512 VNNI"][Int(kernelLevel)]
    }

    /// One call of the kernel: sums of sixteen packed rows with eight samples into out[s·outStride
    /// + r], for the `rows` × `samples` of them that exist; straight from the kernel when all do,
    /// else through `scratch` (128 values).
    @inline(__always)
    static func tile(
        _ w: UnsafePointer<Int16>, _ x: UnsafePointer<Int16>, stride: Int, pairs: Int, rows: Int,
        samples: Int,
        into out: UnsafeMutablePointer<Int32>, outStride: Int, scratch: inout [Int32]
    ) {
        guard rows < 16 || samples < 8 else {
            return qs_dense16x8(w, x, stride, pairs, out, outStride, kernelLevel)
        }
        scratch.withUnsafeMutableBufferPointer { acc in
            qs_dense16x8(w, x, stride, pairs, acc.baseAddress!, 16, kernelLevel)
            for s in 0..<samples {
                (out + s * outStride).update(from: acc.baseAddress! + s * 16, count: rows)
            }
        }
    }

    /// out[s, o] = saturate(requant(bias[o] + sums[s, o])) for `rows` rows of `columns` outputs,
    /// each row one loop over the outputs (their multipliers, shifts and biases contiguous: a loop
    /// the compiler vectorises); `multiplier` is the layer's, or its 32-bit copy where that gives
    /// the same values.
    static func requantizedRows<M: FixedWidthInteger & SignedInteger>(
        _ sums: [Int32], rows: Int, columns m: Int, bias: [Int64], _ r: Requantization, _ multiplier: [M]
    ) -> [Int16] {
        var y = [Int16](repeating: 0, count: rows * m)
        let limit = r.accumulatorLimit, lo = r.outMin, hi = r.outMax
        sums.withUnsafeBufferPointer { sp in
            y.withUnsafeMutableBufferPointer { yp in
                bias.withUnsafeBufferPointer { bp in
                    multiplier.withUnsafeBufferPointer { mp in
                        r.shift.withUnsafeBufferPointer { shp in
                            for s in 0..<rows {
                                let a = sp.baseAddress! + s * m, out = yp.baseAddress! + s * m
                                for o in 0..<m {
                                    let v = requantize(
                                        bp[o] &+ Int64(a[o]), narrowMultiplier: mp[o], shift: shp[o],
                                        accumulatorLimit: limit)
                                    out[o] = Int16(truncatingIfNeeded: saturate(v, lo, hi))
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// Samples of length `n` laid out `width` apart (zeros after each), and zero samples up to a
    /// multiple of eight.
    static func padded(_ x: [Int16], count: Int, n: Int, width: Int) -> [Int16] {
        var out = [Int16](repeating: 0, count: (count + 7) / 8 * 8 * width)
        for s in 0..<count { out.replaceSubrange(s * width..<s * width + n, with: x[s * n..<(s + 1) * n]) }
        return out
    }
}
