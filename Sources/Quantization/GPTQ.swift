// GPTQ rounding: which way each weight rounds, chosen with the layer's inputs so the layer's
// outputs move least. The grid (scales, range, bits) is the converter's; only the integers change.
import Tensors
import NeuralNet

/// GPTQ (Frantar et al. 2023; Optimal Brain Quantization, Frantar & Alistarh 2022). For one row w
/// of a layer with inputs X (samples × K), the output error of quantised weights ŵ is
///
///     E(ŵ) = (w − ŵ)ᵀ H (w − ŵ),   H = XᵀX / n.
///
/// Columns are quantised one at a time. After column i is rounded, the weights not yet quantised
/// absorb its error so E is minimal over them (the OBS update):
///
///     δ = (wᵢ − ŵᵢ) / [H⁻¹]ᵢᵢ,    w_j ← w_j − δ·[H⁻¹]ᵢⱼ   (j after i)
///
/// where H⁻¹ is the inverse restricted to the columns not yet quantised. With U the upper Cholesky
/// factor of H⁻¹ (H⁻¹ = UᵀU), row i of U/Uᵢᵢ holds exactly those restricted entries for every i,
/// so one factorisation serves all columns: δ = (wᵢ − ŵᵢ)/Uᵢᵢ, w_j ← w_j − δ·Uᵢⱼ.
/// Columns go in order of decreasing Hᵢᵢ ("act order": the inputs with the most energy first,
/// while the most weights remain to compensate). H is dampened by 1% of its mean diagonal.
public enum GPTQ {
    /// H = XᵀX / n from a dense layer's inputs (n × K) or a conv's input patches.
    public static func hessian(_ spec: LayerSpec, inputs: [Tensor]) -> [Double] {
        var k = 0, sum: [Float] = [], count = 0
        for x in inputs {
            let (cols, rows, length) = patches(spec, x)  // cols: K × length (K = rows)
            if sum.isEmpty { k = rows; sum = [Float](repeating: 0, count: k * k) }
            cols.withUnsafeBufferPointer { c in
                sum.withUnsafeMutableBufferPointer { h in
                    gemm(
                        transB: true, m: k, n: k, k: length, a: c.baseAddress!, lda: length,
                        b: c.baseAddress!, ldb: length, beta: 1, c: h.baseAddress!, ldc: k)
                }
            }
            count += length
        }
        return sum.map { Double($0) / Double(max(1, count)) }
    }

    /// A layer's inputs as a K × length matrix: the transposed batch for a dense layer, the
    /// im2col patches for a conv.
    static func patches(_ spec: LayerSpec, _ x: Tensor) -> (cols: [Float], rows: Int, length: Int) {
        let n = x.shape[0]
        if case let .conv2d(_, _, kernel, stride, padding, _) = spec {
            let g = ConvGeometry(
                batch: n, channels: x.shape[1], height: x.shape[2], width: x.shape[3],
                kernelH: kernel, kernelW: kernel, stride: stride, padding: padding)
            var cols = [Float](repeating: 0, count: g.patchSize * g.columns)
            x.data.withUnsafeBufferPointer { i in
                cols.withUnsafeMutableBufferPointer {
                    im2col(g, input: i.baseAddress!, cols: $0.baseAddress!)
                }
            }
            return (cols, g.patchSize, g.columns)
        }
        let k = x.count / n
        var t = [Float](repeating: 0, count: x.count)
        for s in 0..<n { for j in 0..<k { t[j * n + s] = x.data[s * k + j] } }
        return (t, k, n)
    }

    /// The integers of `w` (rows × K, row-major) on the grid `factors` (one per row, or one for
    /// all), each column put on the grid by `quantizer.level`, rounded by GPTQ against `hessian`
    /// (K × K). Nil when H cannot be factorised even dampened (non-finite inputs).
    public static func round(
        _ w: [Float], rows: Int, hessian h: [Double], factors: [Float], quantizer: WeightQuantizer,
        damping: Double = 0.01
    ) -> [Int32]? {
        let k = w.count / rows
        precondition(h.count == k * k && (factors.count == 1 || factors.count == rows))
        // Act order, and the permuted, dampened H (an input that is always 0 gets Hᵢᵢ = 1: any
        // value of its weights gives the same outputs).
        let order = (0..<k).sorted {
            h[$0 * k + $0] > h[$1 * k + $1] || (h[$0 * k + $0] == h[$1 * k + $1] && $0 < $1)
        }
        let meanDiagonal = (0..<k).reduce(0) { $0 + h[$1 * k + $1] } / Double(k)
        var p = [Double](repeating: 0, count: k * k)
        for a in 0..<k {
            for b in 0..<k { p[a * k + b] = h[order[a] * k + order[b]] }
            if p[a * k + a] <= 0 { p[a * k + a] = 1 }
            p[a * k + a] += damping * max(meanDiagonal, 1e-12)
        }
        guard let u = inverseCholeskyUpper(p, k) else { return nil }
        var out = [Int32](repeating: 0, count: w.count)
        var row = [Double](repeating: 0, count: k)
        for r in 0..<rows {
            // A row of zeros has nothing to round and stays 0, exact (the binary grid has no 0 level
            // but keeps such groups at 0 too).
            if (0..<k).allSatisfy({ w[r * k + $0] == 0 }) { continue }
            let qf = Double(factors.count == 1 ? factors[0] : factors[r])
            for a in 0..<k { row[a] = Double(w[r * k + order[a]]) }
            for a in 0..<k {
                let q = Double(quantizer.level(Float(row[a] * qf)))
                out[r * k + order[a]] = Int32(q)
                let delta = (row[a] - q / qf) / u[a * k + a]
                if delta == 0 { continue }
                for b in (a + 1)..<k { row[b] -= delta * u[a * k + b] }
            }
        }
        return out
    }

    /// U upper triangular with UᵀU = A⁻¹, for a symmetric positive definite A (k × k). With J the
    /// reversal of the indices, J·A·J = L·Lᵀ (Cholesky, L lower), so A = V·Vᵀ with V = J·L·J upper,
    /// and A⁻¹ = V⁻ᵀ·V⁻¹: U = V⁻¹ = J·L⁻¹·J. Nil when A is not positive definite.
    static func inverseCholeskyUpper(_ a: [Double], _ k: Int) -> [Double]? {
        var reversed = [Double](repeating: 0, count: k * k)
        for i in 0..<k { for j in 0..<k { reversed[i * k + j] = a[(k - 1 - i) * k + (k - 1 - j)] } }
        guard let l = cholesky(reversed, k) else { return nil }
        // L⁻¹ (lower triangular) by forward substitution, column by column.
        var li = [Double](repeating: 0, count: k * k)
        for c in 0..<k {
            li[c * k + c] = 1 / l[c * k + c]
            for r in (c + 1)..<max(c + 1, k) {
                var s = 0.0
                for j in c..<r { s += l[r * k + j] * li[j * k + c] }
                li[r * k + c] = -s / l[r * k + r]
            }
        }
        var u = [Double](repeating: 0, count: k * k)
        for i in 0..<k { for j in 0..<k { u[i * k + j] = li[(k - 1 - i) * k + (k - 1 - j)] } }
        return u
    }

    /// The lower Cholesky factor of a symmetric positive definite matrix; nil if it is not.
    static func cholesky(_ a: [Double], _ k: Int) -> [Double]? {
        var l = [Double](repeating: 0, count: k * k)
        for j in 0..<k {
            var d = a[j * k + j]
            for m in 0..<j { d -= l[j * k + m] * l[j * k + m] }
            guard d > 0, d.isFinite else { return nil }
            let s = d.squareRoot()
            l[j * k + j] = s
            for i in (j + 1)..<max(j + 1, k) {
                var v = a[i * k + j]
                for m in 0..<j { v -= l[i * k + m] * l[j * k + m] }
                l[i * k + j] = v / s
            }
        }
        return l
    }
}
