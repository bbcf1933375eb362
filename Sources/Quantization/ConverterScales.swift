// The integer side of a converted layer: how wide its accumulator must be, and its requantisation
// multipliers as fixed-point or power-of-two factors.
import Tensors
import NeuralNet
import IntegerRuntime

extension Converter {
    /// The bits the worst case of an accumulator needs, |bias| + Σ|w_q|·max|x_q| over each output
    /// row, and the accumulator that holds it: 32 bits, or 64 when allowed (up to 48 needed).
    static func accumulator(
        _ layer: String, bias: [Int64], weights: [Int32], maxInput: Int64,
        options o: QuantizeOptions
    ) throws -> (needed: Int, bits: Int) {
        let rows = bias.count, size = weights.count / rows
        var worst: Int64 = 0
        for c in 0..<rows {
            var s = abs(bias[c])
            for j in 0..<size { s += Int64(abs(weights[c * size + j])) * maxInput }
            worst = max(worst, s)
        }
        let needed = bitsNeeded(worst)
        guard needed > 32 else { return (needed, 32) }
        guard o.allowInt64Accumulator else {
            throw ConversionError(
                "\(layer): the worst-case accumulator needs \(needed) bits (|acc| ≤ \(worst)), more than int32; lower quantize.activation_bits or quantize.bits, or set quantize.accumulator: int64"
            )
        }
        guard needed <= 48 else {
            throw ConversionError(
                "\(layer): the worst-case accumulator needs \(needed) bits, more than QShape's 48-bit limit for a 64-bit accumulator"
            )
        }
        return (needed, 64)
    }

    /// Each row's requantisation multiplier M = s_in·s_w/s_out as M0·2^(−shift).
    static func multipliers(
        _ layer: String, rows: Int, scale: (Int) -> Double, bits: Int,
        options o: QuantizeOptions
    ) throws -> (multiplier: [Int64], shift: [Int64]) {
        var mult: [Int64] = [], shifts: [Int64] = []
        for c in 0..<rows {
            let m = scale(c)
            guard m.isFinite, m > 0, m < 65_536 else {
                throw ConversionError(
                    "\(layer): the requantisation multiplier s_in·s_w/s_out is \(m), outside (0, 65536); the layer's weights or activations are out of range"
                )
            }
            let (m0, sh) = o.scale == .powerOfTwo ? powerOfTwo(m) : fixedPoint(m, bits: bits)
            mult.append(m0); shifts.append(sh)
        }
        return (mult, shifts)
    }

    /// M = M0·2^(−shift) with M0 in [2^(bits−1), 2^bits) (frexp, round, renormalise on overflow).
    public static func fixedPoint(_ m: Double, bits: Int) -> (Int64, Int64) {
        guard m > 0 else { return (0, 0) }
        var e = 0, f = m
        while f >= 1 { f /= 2; e += 1 }
        while f < 0.5 { f *= 2; e -= 1 }
        var m0 = Int64((f * Double(Int64(1) << Int64(bits))).rounded())
        var shift = Int64(bits - e)
        if m0 == Int64(1) << Int64(bits) { m0 /= 2; shift -= 1 }
        // Very small multipliers: drop low bits until the shift is representable.
        while shift > 62 { m0 = (m0 + 1) / 2; shift -= 1 }
        // Multipliers ≥ 2^(bits−1)… with a negative shift: fold it into M0 (rare: M ≥ 1).
        while shift < 0 { m0 *= 2; shift += 1 }
        return (m0, shift)
    }

    /// M ≈ 2^(−shift): the nearest power of two (shift ≥ 0).
    public static func powerOfTwo(_ m: Double) -> (Int64, Int64) {
        guard m > 0 else { return (0, 0) }
        let shift = max(0, Int64((-_log(m) / _log(2)).rounded()))
        return (1, shift)
    }
}

extension Conversion {
    /// A forward hook that rounds each activation at a grid point to its integer grid (half away
    /// from zero), clamps it and scales it back: the fake quantisation of the simulation and of
    /// QAT. `layerIndex` maps the folded model's layer indices to the indices of the model the
    /// hook runs in (identity for `folded` itself).
    public func activationFakeQuantizer(layerIndex: (Int) -> Int = { $0 }) -> (Int, inout Tensor) -> Void {
        var grid: [Int: (scale: Float, lo: Float, hi: Float)] = [:]
        for (f, g) in activationGrid { grid[layerIndex(f)] = (Float(g.scale), Float(g.lo), Float(g.hi)) }
        return { i, h in
            guard let g = grid[i] else { return }
            let inv = 1 / g.scale
            h.withUnsafeMutableBufferPointer { p in
                for j in 0..<p.count { p[j] = min(max((p[j] * inv).rounded(), g.lo), g.hi) * g.scale }
            }
        }
    }
}
