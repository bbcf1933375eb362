// Double-precision reference forwards: the definitions, written as plainly as possible. They are
// the "naive twins" of the layers and the functions that finite differences differentiate.
import Tensors
import NeuralNet

enum Ref {
    /// y[n, o] = b[o] + Σᵢ W[o, i]·x[n, i]
    static func dense(_ x: [Double], n: Int, w: [Double], b: [Double]?, inF: Int, outF: Int) -> [Double] {
        var y = [Double](repeating: 0, count: n * outF)
        for s in 0..<n {
            for o in 0..<outF {
                var acc = b?[o] ?? 0
                for i in 0..<inF { acc += w[o * inF + i] * x[s * inF + i] }
                y[s * outF + o] = acc
            }
        }
        return y
    }

    /// Cross-correlation with zero padding.
    static func conv(
        _ x: [Double], n: Int, c: Int, h: Int, wd: Int, w: [Double], b: [Double]?,
        o: Int, k: Int, stride: Int, pad: Int
    ) -> [Double] {
        let oh = (h + 2 * pad - k) / stride + 1, ow = (wd + 2 * pad - k) / stride + 1
        var y = [Double](repeating: 0, count: n * o * oh * ow)
        for s in 0..<n {
            for oc in 0..<o {
                for yy in 0..<oh {
                    for xx in 0..<ow {
                        var acc = b?[oc] ?? 0
                        for ic in 0..<c {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let iy = yy * stride - pad + ky, ix = xx * stride - pad + kx
                                    guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                                    acc +=
                                        w[((oc * c + ic) * k + ky) * k + kx]
                                        * x[((s * c + ic) * h + iy) * wd + ix]
                                }
                            }
                        }
                        y[((s * o + oc) * oh + yy) * ow + xx] = acc
                    }
                }
            }
        }
        return y
    }

    static func pool(
        _ x: [Double], planes: Int, h: Int, w: Int, k: Int, stride: Int, pad: Int, max: Bool
    ) -> [Double] {
        let oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1
        var y = [Double](repeating: 0, count: planes * oh * ow)
        for p in 0..<planes {
            for yy in 0..<oh {
                for xx in 0..<ow {
                    var best = -Double.infinity, sum = 0.0
                    for ky in 0..<k {
                        for kx in 0..<k {
                            let iy = yy * stride - pad + ky, ix = xx * stride - pad + kx
                            guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                            let v = x[(p * h + iy) * w + ix]
                            best = Swift.max(best, v); sum += v
                        }
                    }
                    y[(p * oh + yy) * ow + xx] = max ? best : sum / Double(k * k)
                }
            }
        }
        return y
    }

    static func clamp(_ x: [Double], cap: Double) -> [Double] { x.map { Swift.min(Swift.max($0, 0), cap) } }

    /// Training-mode batch norm on (N, C, S).
    static func batchNorm(
        _ x: [Double], n: Int, c: Int, s: Int, gamma: [Double], beta: [Double], eps: Double
    ) -> [Double] {
        var y = x
        let m = Double(n * s)
        for ch in 0..<c {
            var mean = 0.0
            for i in 0..<n { for j in 0..<s { mean += x[(i * c + ch) * s + j] } }
            mean /= m
            var v = 0.0
            for i in 0..<n { for j in 0..<s { let d = x[(i * c + ch) * s + j] - mean; v += d * d } }
            v /= m
            for i in 0..<n {
                for j in 0..<s {
                    let k = (i * c + ch) * s + j
                    y[k] = gamma[ch] * (x[k] - mean) / (v + eps).squareRoot() + beta[ch]
                }
            }
        }
        return y
    }

    /// Mean softmax cross-entropy.
    static func crossEntropy(_ z: [Double], labels: [Int32], k: Int) -> Double {
        var total = 0.0
        for (i, label) in labels.enumerated() {
            let row = Array(z[(i * k)..<((i + 1) * k)])
            let m = row.max()!
            let lse = m + _log(row.map { _exp($0 - m) }.reduce(0, +))
            total += lse - row[Int(label)]
        }
        return total / Double(labels.count)
    }
}

/// Central finite differences in Double: ∂f/∂xᵢ ≈ (f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h.
func numericGradient(
    _ x: [Double], indices: [Int]? = nil, h: Double = 1e-6, _ f: ([Double]) -> Double
) -> [Int: Double] {
    var out: [Int: Double] = [:]
    var xp = x
    for i in indices ?? Array(0..<x.count) {
        let orig = xp[i]
        xp[i] = orig + h; let fp = f(xp)
        xp[i] = orig - h; let fm = f(xp)
        xp[i] = orig
        out[i] = (fp - fm) / (2 * h)
    }
    return out
}

/// max |analytic − numeric| / max |numeric| over the checked entries.
func relativeError(_ analytic: [Float], _ numeric: [Int: Double]) -> Double {
    var num = 0.0, den = 1e-8
    for (i, n) in numeric { num = max(num, abs(Double(analytic[i]) - n)); den = max(den, abs(n)) }
    return num / den
}

func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = SeededRandom(seed: seed)
    return Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in rng.uniform(-scale, scale) })
}

extension Array where Element == Float { var doubles: [Double] { map(Double.init) } }
extension Array where Element == Double { var floats: [Float] { map(Float.init) } }

/// Σ out ⊙ r: a scalar loss whose gradient with respect to `out` is `r`.
func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
