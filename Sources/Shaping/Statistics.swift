// Population moments of a set of weights in Double (what `qshape stats` and the logs report).
/// Population moments of a set of weights, computed in Double with two passes (the reference
/// numbers that `qshape stats` and the run logs report).
///
///     μ = mean(w),  d = w − μ,  m_k = mean(d^k)
///     σ = √m₂,  skewness S = m₃ / m₂^1.5,  kurtosis K = m₄ / m₂²  (not excess: normal = 3)
///
/// A constant tensor (m₂ = 0) has no defined shape: its skewness and kurtosis are reported as 0.
public struct WeightStatistics: Equatable, Sendable {
    public var count: Int
    public var mean: Double
    public var std: Double
    public var skewness: Double
    public var kurtosis: Double
    public var maxAbs: Double

    /// max|w| / σ: what a max-abs quantiser pays for (0 when σ = 0).
    public var maxAbsOverStd: Double { std > 0 ? maxAbs / std : 0 }

    public init(_ w: UnsafeBufferPointer<Float>) {
        count = w.count
        guard !w.isEmpty else { mean = 0; std = 0; skewness = 0; kurtosis = 0; maxAbs = 0; return }
        var sum = 0.0, mx: Float = 0
        for x in w { sum += Double(x); mx = max(mx, abs(x)) }
        let mu = sum / Double(w.count)
        var s2 = 0.0, s3 = 0.0, s4 = 0.0
        for x in w {
            let d = Double(x) - mu, d2 = d * d
            s2 += d2; s3 += d2 * d; s4 += d2 * d2
        }
        let n = Double(w.count), m2 = s2 / n, m3 = s3 / n, m4 = s4 / n
        mean = mu
        maxAbs = Double(mx)
        std = m2.squareRoot()
        if m2 > 0 {
            skewness = m3 / (m2 * m2.squareRoot())
            kurtosis = m4 / (m2 * m2)
        } else {
            skewness = 0; kurtosis = 0
        }
    }

    public init(_ w: [Float]) { self = w.withUnsafeBufferPointer { WeightStatistics($0) } }
}

/// Row `r` of a weight tensor whose first axis is the output channel: Dense `[out, in]` rows,
/// Conv `[out, in, kh, kw]` filters.
@inline(__always)
public func channelSlice(
    _ w: UnsafeBufferPointer<Float>, channels: Int, _ r: Int
) -> UnsafeBufferPointer<Float> {
    let size = w.count / channels
    return UnsafeBufferPointer(rebasing: w[(r * size)..<((r + 1) * size)])
}
