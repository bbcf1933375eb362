// The shaping terms and their gradients written plainly in Double, one formula per line, as
// Docs/Shaping.md derives them: the twin the fast passes (PenaltyPasses.swift) are tested against,
// and itself tested against central finite differences.
import Tensors
import IntegerRuntime

/// Naive Double values and gradients of the shaping terms on one group of weights.
public enum PenaltyReference {
    /// μ and the central moments m₂, m₃, m₄ (two passes).
    public static func moments(_ w: [Double]) -> (mean: Double, m2: Double, m3: Double, m4: Double) {
        let n = Double(w.count), mu = w.reduce(0, +) / n
        let d = w.map { $0 - mu }
        return (
            mu, d.map { $0 * $0 }.reduce(0, +) / n, d.map { $0 * $0 * $0 }.reduce(0, +) / n,
            d.map { $0 * $0 * $0 * $0 }.reduce(0, +) / n
        )
    }

    /// K = m₄ / m₂².
    public static func kurtosis(_ w: [Double]) -> Double { let m = moments(w); return m.m4 / (m.m2 * m.m2) }

    /// S = m₃ / m₂^1.5.
    public static func skewness(_ w: [Double]) -> Double {
        let m = moments(w); return m.m3 / (m.m2 * m.m2.squareRoot())
    }

    /// R = m + (1/β)·log Σ exp(β(sᵢ − m)), sᵢ = |wᵢ|/σ, m = max sᵢ.
    public static func range(_ w: [Double], beta: Double) -> Double {
        let sigma = moments(w).m2.squareRoot()
        let s = w.map { abs($0) / sigma }, m = s.max()!
        return m + _log(s.map { _exp(beta * ($0 - m)) }.reduce(0, +)) / beta
    }

    /// u = w·qmax/max|w| and its residual u − round(u) (half away from zero, as deployed).
    static func residuals(_ w: [Double], bits: Int) -> (u: [Double], r: [Double], maxAbs: Double) {
        let qmax = Double(BitWidth.qmax(bits)), mx = w.map(abs).max()!
        let u = w.map { $0 * qmax / mx }
        return (u, u.map { $0 - $0.rounded(.toNearestOrAwayFromZero) }, mx)
    }

    /// E = mean((u − round u)²); relative: Σ'(w − ŵ)²/Σ'w², ŵ = round(u)·M/qmax, Σ' over every
    /// weight but the first maximum (0 when they have no energy).
    public static func quantError(_ w: [Double], bits: Int, relative: Bool = false) -> Double {
        let q = residuals(w, bits: bits), steps = q.r.map { $0 * $0 }.reduce(0, +) / Double(w.count)
        guard relative else { return steps }
        let qmax = Double(BitWidth.qmax(bits)), top = w.firstIndex { abs($0) == q.maxAbs }!
        let others = w.indices.filter { $0 != top }
        let noise = others.map {
            let d = q.r[$0] * q.maxAbs / qmax; return d * d
        }.reduce(0, +)
        let energy = others.map { w[$0] * w[$0] }.reduce(0, +)
        return energy > 0 ? noise / energy : 0
    }

    /// Each term's value with its target, unweighted: (K − K_T)², (S − S_T)², max(0, R − R_T)², E, ½Σw².
    public static func values(_ w: [Double], _ s: PenaltySettings) -> [PenaltyTerm: Double] {
        var v: [PenaltyTerm: Double] = [:]
        for t in s.terms {
            switch t {
            case .kurtosis: v[t] = (kurtosis(w) - s.kurtosisTarget) * (kurtosis(w) - s.kurtosisTarget)
            case .skewness: v[t] = (skewness(w) - s.skewnessTarget) * (skewness(w) - s.skewnessTarget)
            case .range: let e = max(0, range(w, beta: s.rangeSharpness) - s.rangeTarget); v[t] = e * e
            case .quantError: v[t] = quantError(w, bits: s.quantErrorBits, relative: s.quantErrorRelative)
            case .l2: v[t] = 0.5 * w.map { $0 * $0 }.reduce(0, +)
            }
        }
        return v
    }

    /// Σ_t scale_t · value_t.
    public static func total(_ w: [Double], _ s: PenaltySettings, scales: [PenaltyTerm: Double]) -> Double {
        values(w, s).reduce(0) { $0 + (scales[$1.key] ?? 0) * $1.value }
    }

    /// ∂(Σ_t scale_t · value_t)/∂w, term by term (Docs/Shaping.md, "Gradients").
    public static func gradient(
        _ w: [Double], _ s: PenaltySettings, scales: [PenaltyTerm: Double]
    ) -> [Double] {
        let n = Double(w.count), mo = moments(w), d = w.map { $0 - mo.mean }
        let sigma = mo.m2.squareRoot()
        var g = [Double](repeating: 0, count: w.count)
        for t in s.terms {
            let k = scales[t] ?? 0
            switch t {
            case .kurtosis:
                // ∂K/∂wᵢ = 4/(n·m₂²)·(dᵢ³ − m₃) − 4·m₄/(n·m₂³)·dᵢ
                let outer = k * 2 * (kurtosis(w) - s.kurtosisTarget)
                for i in w.indices {
                    let dK =
                        4 / (n * mo.m2 * mo.m2) * (d[i] * d[i] * d[i] - mo.m3) - 4 * mo.m4
                        / (n * mo.m2 * mo.m2 * mo.m2) * d[i]
                    g[i] += outer * dK
                }
            case .skewness:
                // ∂S/∂wᵢ = 3/(n·m₂^1.5)·(dᵢ² − m₂) − 3·m₃/(n·m₂^2.5)·dᵢ
                let outer = k * 2 * (skewness(w) - s.skewnessTarget), m15 = mo.m2 * sigma
                for i in w.indices {
                    g[i] +=
                        outer * (3 / (n * m15) * (d[i] * d[i] - mo.m2) - 3 * mo.m3 / (n * m15 * mo.m2) * d[i])
                }
            case .range:
                // ∂R/∂wⱼ = pⱼ·sign(wⱼ)/σ − (Σ pᵢsᵢ)·dⱼ/(n·σ²),  pⱼ = softmax(β·s)ⱼ
                let r = range(w, beta: s.rangeSharpness)
                guard r > s.rangeTarget else { continue }
                let outer = k * 2 * (r - s.rangeTarget)
                let sv = w.map { abs($0) / sigma }, m = sv.max()!
                let e = sv.map { _exp(s.rangeSharpness * ($0 - m)) }, z = e.reduce(0, +)
                let p = e.map { $0 / z }, meanS = zip(p, sv).map { $0 * $1 }.reduce(0, +)
                for j in w.indices {
                    g[j] += outer * (p[j] * (w[j] < 0 ? -1 : 1) / sigma - meanS * d[j] / (n * mo.m2))
                }
            case .quantError:
                addQuantErrorGradient(w, s, k, into: &g)
            case .l2:
                for i in w.indices { g[i] += k * w[i] }
            }
        }
        return g
    }

    /// The quantisation-error term's gradient, scaled by `k`, added to `g` (both forms).
    static func addQuantErrorGradient(
        _ w: [Double], _ s: PenaltySettings, _ k: Double, into g: inout [Double]
    ) {
        let n = Double(w.count)
        let q = residuals(w, bits: s.quantErrorBits), qmax = Double(BitWidth.qmax(s.quantErrorBits))
        let top = w.firstIndex { abs($0) == q.maxAbs }!, sign = w[top] < 0 ? -1.0 : 1.0
        if s.quantErrorRelative {
            // E' = N/D, N = Σ'(wⱼ − ŵⱼ)², D = Σ'wⱼ² (all but the maximum, whose residual is 0):
            // ∂E'/∂wⱼ = 2(wⱼ − ŵⱼ)/D − 2E'·wⱼ/D for j ≠ max; the maximum moves M and with it
            // every ŵᵢ = round(uᵢ)·M/qmax: ∂E'/∂M = −2Σ'(wᵢ − ŵᵢ)·round(uᵢ)/(qmax·D).
            let dw = q.r.map { $0 * q.maxAbs / qmax }
            let d = w.indices.filter { $0 != top }.map { w[$0] * w[$0] }.reduce(0, +)
            guard d > 0 else { return }
            let e = dw.map { $0 * $0 }.reduce(0, +) / d
            for j in w.indices where j != top { g[j] += k * (2 * dw[j] - 2 * e * w[j]) / d }
            let pull = w.indices.map { dw[$0] * (q.u[$0] - q.r[$0]) }.reduce(0, +)
            g[top] += k * sign * -2 * pull / (qmax * d)
        } else {
            // ∂E/∂wⱼ = 2rⱼ·qmax/(n·M); the first maximum also moves M: −2·sign(w)/M·mean(r·u)
            for j in w.indices { g[j] += k * 2 * q.r[j] * qmax / (n * q.maxAbs) }
            let cross = zip(q.r, q.u).map { $0 * $1 }.reduce(0, +) / n
            g[top] += k * -2 * sign / q.maxAbs * cross
        }
    }
}
