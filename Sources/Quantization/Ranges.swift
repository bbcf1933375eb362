// Choosing a tensor's clipping range: max, percentile, MSE, ACIQ and OCTAV.
import Tensors
import IntegerRuntime

/// How the clipping range of a tensor is chosen.
public enum RangeMethod: Equatable, Sendable {
    /// max|x| (weights) or the largest magnitude seen in calibration (activations).
    case max
    /// The p-th percentile of |x| (e.g. 99.99).
    case percentile(Double)
    /// The clip value minimising the mean squared quantisation error, searched over 100 candidates.
    case mse
    /// ACIQ's analytic clip for a Laplace(b) fit: 2.83b, 3.89b, 5.03b, 9.89b at 2, 3, 4, 8 bits.
    case aciqLaplace
    /// ACIQ's analytic clip for a Gaussian(σ) fit: 1.71σ, 2.15σ, 2.55σ, 3.92σ at 2, 3, 4, 8 bits.
    case aciqGaussian
    /// OCTAV (Sakr et al. 2022): the clip that minimises rounding noise plus clipping error on the
    /// tensor's own values, by Newton's fixed-point iteration; data-free for weights.
    case octav

    public var name: String {
        switch self {
        case .max: "max"
        case .percentile: "percentile"
        case .mse: "mse"
        case .aciqLaplace: "aciq_laplace"
        case .aciqGaussian: "aciq_gaussian"
        case .octav: "octav"
        }
    }
}

public enum RangeSetting {
    /// The clip value for `values` at `bits` (signed symmetric grid with qmax = 2^(b−1) − 1, or an
    /// unsigned grid 0…levels when `unsigned`). Never more than max|x|; at least a tiny positive value.
    public static func clip(
        _ values: [Float], bits: Int, method: RangeMethod, unsigned: Bool = false
    ) -> Float {
        let maxAbs = values.reduce(Float(0)) { Swift.max($0, abs($1)) }
        // Values that are all zero fit any grid; a unit range keeps the next layer's bias in range.
        guard maxAbs > 0 else { return 1 }
        switch method {
        case .max:
            return maxAbs
        case .percentile(let p):
            let sorted = values.map(abs).sorted()
            let index = Swift.min(
                sorted.count - 1, Swift.max(0, Int((p / 100 * Double(sorted.count - 1)).rounded())))
            return Swift.max(sorted[index], 1e-8)
        case .mse:
            let levels = Float(unsigned ? BitWidth.qmax(bits + 1) : BitWidth.qmax(bits))
            var best = maxAbs, bestError = Double.infinity
            for i in 1...100 {
                let clip = maxAbs * Float(i) / 100, step = clip / levels
                var e = 0.0
                for x in values {
                    let lo: Float = unsigned ? 0 : -levels
                    let q =
                        Swift.min(Swift.max((x / step).rounded(.toNearestOrAwayFromZero), lo), levels) * step
                    e += Double((x - q) * (x - q))
                }
                if e < bestError { bestError = e; best = clip }
            }
            return best
        case .octav:
            return octav(
                values, levels: Double(unsigned ? BitWidth.qmax(bits + 1) : BitWidth.qmax(bits)),
                maxAbs: maxAbs)
        case .aciqLaplace, .aciqGaussian:
            let n = Double(values.count)
            let mean = values.reduce(0.0) { $0 + Double($1) } / n
            let factors: [Int: (Double, Double)] = [
                2: (2.83, 1.71), 3: (3.89, 2.15), 4: (5.03, 2.55), 8: (9.89, 3.92)
            ]
            // Other widths: the nearest tabulated one at or below (8 for wider grids).
            let key = [8, 4, 3, 2].first { $0 <= bits } ?? 2
            let (laplace, gauss) = factors[key]!
            let c: Double
            if method == .aciqLaplace {
                let b = values.reduce(0.0) { $0 + abs(Double($1) - mean) } / n
                c = laplace * b
            } else {
                let sigma = (values.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / n)
                    .squareRoot()
                c = gauss * sigma
            }
            return Swift.max(Swift.min(maxAbs, Float(c)), 1e-8)
        }
    }

    /// OCTAV's clip s for a grid of `levels` steps on each side of zero (step Δ = s/levels). With
    /// rounding noise Δ²/12 inside the range and the clipping error outside, the mean squared error
    ///     J(s) = s²/(12·levels²) · P(|x| ≤ s) + E[(|x| − s)² · 1{|x| > s}]
    /// has dJ/ds = 0 where s · (P(|x| ≤ s)/(12·levels²) + P(|x| > s)) = E[|x| · 1{|x| > s}], so
    ///     s ← E[|x| · 1{|x| > s}] / (P(|x| ≤ s)/(12·levels²) + P(|x| > s)),
    /// iterated from s = E|x| until it settles (a few dozen steps at most).
    static func octav(_ values: [Float], levels: Double, maxAbs: Float) -> Float {
        let a = values.map { Double(abs($0)) }, n = Double(a.count), c = 1 / (12 * levels * levels)
        var s = a.reduce(0, +) / n
        for _ in 0..<100 {
            var above = 0.0, sumAbove = 0.0
            for x in a where x > s {
                above += 1
                sumAbove += x
            }
            let next = (sumAbove / n) / (c * (n - above) / n + above / n)
            if !(next > 0) { break }
            let settled = abs(next - s) <= 1e-7 * s
            s = next
            if settled { break }
        }
        return Swift.max(Swift.min(maxAbs, Float(s)), 1e-8)
    }
}
