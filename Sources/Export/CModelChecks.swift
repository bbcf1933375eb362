// What the C runtime assumes of a model, checked before any C is written, so the C and the
// integer engine cannot disagree silently: geometry, storage widths and accumulator headroom.
import IntegerRuntime

extension Plan {
    /// A pooling layer's geometry as the C runtime takes it.
    static func checkPool(_ layer: IntegerLayer, name: String, shape: [Int]) throws {
        switch layer {
        case let .maxPool(k, s, p):
            guard shape.count == 3, k > 0, s > 0, p >= 0, 2 * p <= k, shape[1] + 2 * p >= k,
                shape[2] + 2 * p >= k
            else {
                throw ExportError(
                    "\(name): kernel \(k), stride \(s), padding \(p) on \(shape); padding must be at most half the kernel"
                )
            }
        case let .avgPool(k, s):
            guard shape.count == 3, k > 0, k <= 255, s > 0, shape[1] >= k, shape[2] >= k else {
                throw ExportError(
                    "\(name): kernel \(k), stride \(s) on \(shape); the C runtime takes kernels 1…255 inside the input"
                )
            }
        default:
            guard shape.count == 3, shape[1] * shape[2] <= 65_535 else {
                throw ExportError(
                    "\(name): the C runtime averages at most 65,535 positions, the input has \(shape)")
            }
        }
    }

    /// Checks every assumption the C makes, so the C and the engine cannot disagree silently.
    func validate() throws {
        guard model.inputShape.count == 1 || model.inputShape.count == 3,
            model.inputShape.allSatisfy({ $0 > 0 })
        else {
            throw ExportError(
                "input shape \(model.inputShape): the C runtime takes (features) or (channels, height, width)"
            )
        }
        var shape = model.inputShape
        var range: (lo: Int64, hi: Int64) = (0, 255)
        for (i, layer) in model.layers.enumerated() {
            let name = "layer \(i) (\(Plan.typeName(layer)))"
            switch layer {
            case .dense(let d):
                guard shape.reduce(1, *) == d.inFeatures else {
                    throw ExportError("\(name) takes \(d.inFeatures) inputs, gets \(shape)")
                }
                try checkWeighted(
                    name, d.weight, d.bias, d.requant, rows: d.outFeatures, bits: d.weightBits.bits,
                    inputRange: range)
                range = (d.requant.outMin, d.requant.outMax)
            case .conv(let c):
                guard shape.count == 3, shape[0] == c.inChannels, c.kernel > 0, c.stride > 0, c.padding >= 0,
                    shape[1] + 2 * c.padding >= c.kernel, shape[2] + 2 * c.padding >= c.kernel
                else {
                    throw ExportError("\(name): geometry does not fit its input \(shape)")
                }
                try checkWeighted(
                    name, c.weight, c.bias, c.requant, rows: c.outChannels, bits: c.weightBits.bits,
                    inputRange: range)
                range = (c.requant.outMin, c.requant.outMax)
            case .maxPool, .avgPool, .globalAvgPool:
                try Plan.checkPool(layer, name: name, shape: shape)
            case .flatten: break
            case let .clamp(lo, hi):
                guard lo <= hi else { throw ExportError("\(name): clamp bounds \(lo) > \(hi)") }
                range = Plan.clamped(range, lo, hi)
            }
            shape = IntegerEngine.outputShape(layer, shape)
            guard range.lo >= -32768, range.hi <= 32767 else {
                throw ExportError(
                    "\(name): outputs \(range.lo)…\(range.hi) exceed int16, the widest activation")
            }
        }
    }

    /// The values min(max(x, lo), hi) takes for x in `range` (lo ≤ hi).
    static func clamped(_ range: (lo: Int64, hi: Int64), _ lo: Int64, _ hi: Int64) -> (lo: Int64, hi: Int64) {
        (min(max(range.lo, lo), hi), min(max(range.hi, lo), hi))
    }

    func checkWeighted(
        _ name: String, _ weight: [Int16], _ bias: [Int64], _ r: Requantization, rows: Int, bits: Int,
        inputRange: (lo: Int64, hi: Int64)
    ) throws {
        let format = WeightFormat.forBits(bits), (lo, hi) = format.range
        guard rows > 0, weight.count % rows == 0, bias.count == rows,
            r.multiplier.count == rows, r.shift.count == rows
        else {
            throw ExportError("\(name): weight, bias and requantisation sizes disagree")
        }
        if let bad = weight.first(where: { $0 < lo || $0 > hi }) {
            throw ExportError("\(name): weight \(bad) does not fit \(bits)-bit storage (\(lo)…\(hi))")
        }
        guard r.shift.allSatisfy({ (0...62).contains($0) }), r.multiplier.allSatisfy({ $0 >= 0 }) else {
            throw ExportError("\(name): requantisation shifts must be 0…62 and multipliers non-negative")
        }
        guard r.accumulatorBits == 32 || r.accumulatorBits == 64 else {
            throw ExportError(
                "\(name): accumulator of \(r.accumulatorBits) bits; the C runtime has 32 and 64")
        }
        // The C adds in int32_t (or int64_t) and multiplies in int64_t without wrapping: the worst
        // accumulator must fit its type, and worst · multiplier (plus the rounding term) 63 bits.
        let size = weight.count / rows, maxIn = max(abs(inputRange.lo), abs(inputRange.hi))
        let limit: Int64 = r.accumulatorBits == 32 ? Int64(Int32.max) : Int64.max / 2
        var worst: Int64 = 0
        for o in 0..<rows {
            var sum = abs(bias[o])
            for j in 0..<size where sum <= limit { sum += abs(Int64(weight[o * size + j])) * maxIn }
            guard sum <= limit else {
                throw ExportError("\(name): channel \(o) can exceed its \(r.accumulatorBits)-bit accumulator")
            }
            worst = max(worst, sum)
        }
        guard bitsNeeded(worst) + bitsNeeded(r.multiplier.max() ?? 0) <= 64 else {
            throw ExportError("\(name): accumulator × multiplier can exceed 63 bits")
        }
    }
}
