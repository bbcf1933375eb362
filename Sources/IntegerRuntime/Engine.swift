// The integer engine: an IntegerModel run on integer inputs with integer arithmetic only, exactly
// as the exported C runs it.
/// Runs an `IntegerModel` on integer inputs with integer arithmetic only.
///
/// Activations travel as Int16 (uint8 pixels, int8/uint8 or int16 activations all fit), weights
/// are Int16, products are summed in Int32 or Int64 as the layer's accumulator says, then
/// requantised (`requantize`) and clamped (`saturate`). Every multiply and add that could wrap
/// uses explicit wrapping operators, so the engine never traps; the converter's headroom analysis
/// guarantees that no accepted model actually wraps.
public struct IntegerEngine: Sendable {
    public let model: IntegerModel
    /// Each weight layer's weights as the C kernel reads them (`packDense`, `packConv`; empty for
    /// other layers).
    let packedWeights: [[Int16]]
    /// Each weight layer's multipliers as Int32 where 32-bit requantisation gives the same values
    /// (`Requantization.narrowMultipliers`; nil elsewhere), decided once per layer.
    let narrowMultipliers: [[Int32]?]
    /// For a convolution with a 32-bit accumulator followed by a clamp: the saturation range that
    /// does both (`foldedClamp`), which `runBatch` uses in place of the clamp's pass; nil elsewhere.
    let foldedClamps: [(lo: Int64, hi: Int64)?]

    public init(_ model: IntegerModel) {
        self.model = model
        packedWeights = model.layers.map { layer in
            switch layer {
            case .dense(let d): IntegerEngine.packDense(d)
            case .conv(let c): IntegerEngine.packConv(c)
            default: []
            }
        }
        narrowMultipliers = model.layers.map { layer in
            switch layer {
            case .dense(let d): d.requant.narrowMultipliers
            case .conv(let c): c.requant.narrowMultipliers
            default: nil
            }
        }
        foldedClamps = model.layers.indices.map { i in
            guard case .conv(let c) = model.layers[i], c.requant.accumulatorBits <= 32,
                i + 1 < model.layers.count
            else { return nil }
            return IntegerEngine.foldedClamp(c.requant, model.layers[i + 1])
        }
    }

    /// Shape of one sample after each layer.
    public var shapes: [[Int]] {
        var shape = model.inputShape
        return model.layers.map { layer in
            shape = IntegerEngine.outputShape(layer, shape)
            return shape
        }
    }

    public static func outputShape(_ layer: IntegerLayer, _ s: [Int]) -> [Int] {
        switch layer {
        case .dense(let d): return [d.outFeatures]
        case .conv(let c):
            return [
                c.outChannels, (s[1] + 2 * c.padding - c.kernel) / c.stride + 1,
                (s[2] + 2 * c.padding - c.kernel) / c.stride + 1
            ]
        case let .maxPool(k, st, p):
            return [s[0], (s[1] + 2 * p - k) / st + 1, (s[2] + 2 * p - k) / st + 1]
        case let .avgPool(k, st):
            return [s[0], (s[1] - k) / st + 1, (s[2] - k) / st + 1]
        case .globalAvgPool: return [s[0], 1, 1]
        case .flatten: return [s.reduce(1, *)]
        case .clamp: return s
        }
    }

    /// One sample through every layer; `capture` receives each layer's output.
    public func run(_ input: [Int16], capture: ((Int, [Int16]) -> Void)? = nil) -> [Int16] {
        var x = input, shape = model.inputShape
        for (i, layer) in model.layers.enumerated() {
            x = apply(i, layer, x, shape)
            shape = IntegerEngine.outputShape(layer, shape)
            capture?(i, x)
        }
        return x
    }

    /// The index of the largest output (the first on ties).
    public func classify(_ input: [Int16]) -> Int { IntegerEngine.argmax(run(input)) }

    /// The index of the largest output, the first on ties.
    public static func argmax(_ y: [Int16]) -> Int {
        var best = 0
        for j in y.indices where y[j] > y[best] { best = j }
        return best
    }

    func apply(_ index: Int, _ layer: IntegerLayer, _ x: [Int16], _ shape: [Int]) -> [Int16] {
        switch layer {
        case .dense(let d): return dense(d, d.weight, x)
        case .conv(let c): return conv(index, c, x, shape)
        case let .maxPool(k, s, p): return maxPool(x, shape, k, s, p)
        case let .avgPool(k, s): return avgPool(x, shape, k, s)
        case .globalAvgPool:
            let size = shape[1] * shape[2]
            return (0..<shape[0]).map { c in
                var sum: Int64 = 0
                for i in 0..<size { sum &+= Int64(x[c * size + i]) }
                return Int16(truncatingIfNeeded: roundedDivide(sum, by: Int64(size)))
            }
        case .flatten: return x
        case let .clamp(lo, hi): return x.map { Int16(truncatingIfNeeded: saturate(Int64($0), lo, hi)) }
        }
    }

    /// Σ w·x over `count` Int16 pairs, in Int32 (the pattern compilers turn into multiply-add
    /// instructions) or, for a 64-bit accumulator, in Int64.
    @inline(__always)
    static func dot(_ w: UnsafePointer<Int16>, _ x: UnsafePointer<Int16>, _ count: Int, wide: Bool) -> Int64 {
        if wide {
            var acc: Int64 = 0
            for k in 0..<count { acc &+= Int64(Int32(w[k]) &* Int32(x[k])) }
            return acc
        }
        var acc: Int32 = 0
        for k in 0..<count { acc &+= Int32(w[k]) &* Int32(x[k]) }
        return Int64(acc)
    }

    @inline(__always)
    static func output(_ acc: Int64, _ r: Requantization, _ channel: Int, _ limit: Int64) -> Int16 {
        let v = requantize(
            acc, multiplier: r.multiplier[channel], shift: r.shift[channel], accumulatorLimit: limit)
        return Int16(truncatingIfNeeded: saturate(v, r.outMin, r.outMax))
    }

    /// y[o] = requant(bias[o] + Σ_k W[o,k]·x[k])
    private func dense(_ d: IntegerDense, _ w: [Int16], _ x: [Int16]) -> [Int16] {
        let wide = d.requant.accumulatorBits > 32, limit = d.requant.accumulatorLimit
        return w.withUnsafeBufferPointer { wp in
            x.withUnsafeBufferPointer { xp in
                (0..<d.outFeatures).map { o in
                    let acc =
                        d.bias[o]
                        &+ IntegerEngine.dot(
                            wp.baseAddress! + o * d.inFeatures, xp.baseAddress!, d.inFeatures, wide: wide)
                    return IntegerEngine.output(acc, d.requant, o, limit)
                }
            }
        }
    }

    /// Convolution as a matrix product over integer patches. With a 32-bit accumulator, the
    /// dense layers' C kernel (`convPacked`); with a 64-bit one, cols (C·K·K, L) with zeros for
    /// the padding, then for each output channel acc[l] = bias + Σ_k W[o,k]·cols[k,l] across all
    /// L positions at once. Output (O, OH, OW).
    private func conv(_ index: Int, _ c: IntegerConv, _ x: [Int16], _ s: [Int]) -> [Int16] {
        if c.requant.accumulatorBits <= 32 {
            return IntegerEngine.convPacked(
                c, weights: packedWeights[index], narrow: narrowMultipliers[index], x, s)
        }
        let (cols, oh, ow) = IntegerEngine.patches(c, x, s)
        let patch = c.inChannels * c.kernel * c.kernel, positions = oh * ow
        var y = [Int16](repeating: 0, count: c.outChannels * positions)
        var acc64 = [Int64](repeating: 0, count: positions)
        c.weight.withUnsafeBufferPointer { wp in
            cols.withUnsafeBufferPointer { cp in
                y.withUnsafeMutableBufferPointer { yp in
                    for o in 0..<c.outChannels {
                        IntegerEngine.channel64(
                            c, o, wp.baseAddress! + o * patch, cp.baseAddress!, patch: patch,
                            positions: positions,
                            &acc64, yp.baseAddress! + o * positions)
                    }
                }
            }
        }
        return y
    }

    /// The input's patches as rows of cols (C·K·K, OH·OW), zeros where the kernel covers padding.
    static func patches(_ c: IntegerConv, _ x: [Int16], _ s: [Int]) -> (cols: [Int16], oh: Int, ow: Int) {
        let h = s[1], wd = s[2], k = c.kernel
        let oh = (h + 2 * c.padding - k) / c.stride + 1, ow = (wd + 2 * c.padding - k) / c.stride + 1
        let positions = oh * ow
        var cols = [Int16](repeating: 0, count: c.inChannels * k * k * positions)
        cols.withUnsafeMutableBufferPointer { cp in
            x.withUnsafeBufferPointer { xp in
                for ch in 0..<c.inChannels {
                    for ky in 0..<k {
                        for kx in 0..<k {
                            let row = cp.baseAddress! + ((ch * k + ky) * k + kx) * positions
                            // Output columns whose input column is inside the image: ox in [lo, hi).
                            let lo = max(0, (c.padding - kx + c.stride - 1) / c.stride)
                            let hi = min(ow, max(lo, (wd + c.padding - kx + c.stride - 1) / c.stride))
                            for oy in 0..<oh {
                                let iy = oy * c.stride - c.padding + ky
                                guard iy >= 0 && iy < h else { continue }
                                let src = (ch * h + iy) * wd - c.padding + kx, dst = row + oy * ow
                                for ox in lo..<hi { dst[ox] = xp[src + ox * c.stride] }
                            }
                        }
                    }
                }
            }
        }
        return (cols, oh, ow)
    }

    /// Output channel `o` with a 64-bit accumulator.
    @inline(__always)
    static func channel64(
        _ c: IntegerConv, _ o: Int, _ row: UnsafePointer<Int16>, _ cols: UnsafePointer<Int16>,
        patch: Int, positions: Int, _ acc64: inout [Int64], _ out: UnsafeMutablePointer<Int16>
    ) {
        let limit = c.requant.accumulatorLimit
        for l in 0..<positions { acc64[l] = c.bias[o] }
        for kk in 0..<patch {
            let wk = Int32(row[kk]), src = cols + kk * positions
            for l in 0..<positions { acc64[l] &+= Int64(wk &* Int32(src[l])) }
        }
        for l in 0..<positions { out[l] = IntegerEngine.output(acc64[l], c.requant, o, limit) }
    }

    private func maxPool(_ x: [Int16], _ s: [Int], _ k: Int, _ st: Int, _ p: Int) -> [Int16] {
        let h = s[1], w = s[2], oh = (h + 2 * p - k) / st + 1, ow = (w + 2 * p - k) / st + 1
        var y = [Int16](repeating: 0, count: s[0] * oh * ow)
        if k == 2 && st == 2 && p == 0 {  // the common window, without bounds tests
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    for c in 0..<s[0] {
                        for oy in 0..<oh {
                            let r0 = xp.baseAddress! + (c * h + 2 * oy) * w, r1 = r0 + w
                            let o = yp.baseAddress! + (c * oh + oy) * ow
                            for ox in 0..<ow {
                                o[ox] = max(max(r0[2 * ox], r0[2 * ox + 1]), max(r1[2 * ox], r1[2 * ox + 1]))
                            }
                        }
                    }
                }
            }
            return y
        }
        for c in 0..<s[0] {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var best = Int16.min
                    for ky in 0..<k {
                        let iy = oy * st - p + ky
                        guard iy >= 0 && iy < h else { continue }
                        for kx in 0..<k {
                            let ix = ox * st - p + kx
                            guard ix >= 0 && ix < w else { continue }
                            best = max(best, x[(c * h + iy) * w + ix])
                        }
                    }
                    y[(c * oh + oy) * ow + ox] = best
                }
            }
        }
        return y
    }

    private func avgPool(_ x: [Int16], _ s: [Int], _ k: Int, _ st: Int) -> [Int16] {
        let h = s[1], w = s[2], oh = (h - k) / st + 1, ow = (w - k) / st + 1
        var y = [Int16](repeating: 0, count: s[0] * oh * ow)
        for c in 0..<s[0] {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var sum: Int64 = 0
                    for ky in 0..<k {
                        for kx in 0..<k { sum &+= Int64(x[(c * h + oy * st + ky) * w + ox * st + kx]) }
                    }
                    y[(c * oh + oy) * ow + ox] = Int16(
                        truncatingIfNeeded: roundedDivide(sum, by: Int64(k * k)))
                }
            }
        }
        return y
    }
}
