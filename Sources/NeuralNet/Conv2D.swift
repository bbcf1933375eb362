// 2-D convolution: forward as im2col + SGEMM, backward for weights, bias and input.
import Tensors

/// 2-D convolution (PyTorch `nn.Conv2d`, cross-correlation), computed as one SGEMM per batch
/// over an im2col matrix.
///
/// Shapes: input (N, C, H, W), weight (O, C, KH, KW), bias (O), output (N, O, OH, OW),
/// cols (C·KH·KW, N·OH·OW), out2d (O, N·OH·OW).
public final class Conv2D: Layer {
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    public let weight: Parameter
    public let bias: Parameter?
    private var geometry: ConvGeometry?
    private var cols: [Float] = []
    private var out2d: [Float] = []
    /// The input gradient's columns are made and scattered a few images at a time, about this
    /// many values (1 MB) per part, so they stay in cache (tests set it small to cover the parts).
    public var backwardChunkValues = 1 << 18

    public var torchName: String { "Conv2d" }
    public var state: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    /// PyTorch's default initialisation: U(±1/√fan_in) for weight and bias, fan_in = C·KH·KW.
    public init(
        inChannels: Int, outChannels: Int, kernel: Int, stride: Int = 1, padding: Int = 0,
        bias: Bool = true, rng: inout SeededRandom
    ) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        let fanIn = inChannels * kernel * kernel
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Parameter(
            "weight", role: .weight,
            value: Tensor(
                shape: [outChannels, inChannels, kernel, kernel],
                data: (0..<(outChannels * fanIn)).map { _ in rng.uniform(-bound, bound) }))
        self.bias =
            bias
            ? Parameter(
                "bias", role: .bias,
                value: Tensor(
                    shape: [outChannels], data: (0..<outChannels).map { _ in rng.uniform(-bound, bound) }))
            : nil
    }

    private func geometry(batch: Int, _ s: [Int]) -> ConvGeometry {
        ConvGeometry(
            batch: batch, channels: s[0], height: s[1], width: s[2],
            kernelH: kernel, kernelW: kernel, stride: stride, padding: padding)
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 3 else {
            throw ModelError("conv2d expects a (C, H, W) input, got shape \(input)")
        }
        guard input[0] == inChannels else {
            throw ModelError(
                "conv2d expects \(inChannels) input channels, the previous layer gives \(input[0])")
        }
        let g = geometry(batch: 1, input)
        guard g.outH > 0, g.outW > 0, input[1] + 2 * padding >= kernel, input[2] + 2 * padding >= kernel
        else {
            throw ModelError(
                "conv2d kernel \(kernel) with padding \(padding) does not fit a \(input[1])x\(input[2]) input"
            )
        }
        return [outChannels, g.outH, g.outW]
    }

    public func forwardMACs(input: [Int]) -> Int {
        let g = geometry(batch: 1, input)
        return outChannels * g.patchSize * g.outH * g.outW
    }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        let g = geometry(batch: x.shape[0], Array(x.shape.dropFirst()))
        geometry = g
        let plane = g.outH * g.outW
        if cols.count != g.patchSize * g.columns {
            cols = [Float](repeating: 0, count: g.patchSize * g.columns)
        }
        if out2d.count != outChannels * g.columns {
            out2d = [Float](repeating: 0, count: outChannels * g.columns)
        }
        x.withUnsafeBufferPointer { xp in
            cols.withUnsafeMutableBufferPointer { cp in
                im2col(g, input: xp.baseAddress!, cols: cp.baseAddress!)
            }
        }
        // out2d (O, N·L) = W (O, CKK) · cols (CKK, N·L)
        weight.value.withUnsafeBufferPointer { wp in
            cols.withUnsafeBufferPointer { cp in
                out2d.withUnsafeMutableBufferPointer { op in
                    gemm(
                        m: outChannels, n: g.columns, k: g.patchSize,
                        a: wp.baseAddress!, lda: g.patchSize, b: cp.baseAddress!, ldb: g.columns,
                        c: op.baseAddress!, ldc: g.columns)
                }
            }
        }
        // y[n, o, l] = out2d[o, n·L + l] + b[o]
        let biasValues = bias?.value.data
        return out2d.withUnsafeBufferPointer { op in
            Tensor(shape: [g.batch, outChannels, g.outH, g.outW]) { yp in
                for n in 0..<g.batch {
                    for o in 0..<outChannels {
                        let src = op.baseAddress! + o * g.columns + n * plane
                        let dst = yp.baseAddress! + (n * outChannels + o) * plane
                        let b = biasValues?[o] ?? 0
                        for l in 0..<plane { dst[l] = src[l] + b }
                    }
                }
            }
        }
    }

    /// dW += dOut2d · colsᵀ,  db += Σ dY,  dX = col2im(Wᵀ · dOut2d)
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let g = geometry else { preconditionFailure("conv2d backward before forward") }
        let plane = g.outH * g.outW
        // Reuse out2d as dOut2d (O, N·L).
        dOut.withUnsafeBufferPointer { dp in
            out2d.withUnsafeMutableBufferPointer { op in
                for n in 0..<g.batch {
                    for o in 0..<outChannels {
                        (op.baseAddress! + o * g.columns + n * plane)
                            .update(from: dp.baseAddress! + (n * outChannels + o) * plane, count: plane)
                    }
                }
            }
        }
        out2d.withUnsafeBufferPointer { op in
            bias?.grad.withUnsafeMutableBufferPointer { gb in
                addBiasGradient(op.baseAddress!, columns: g.columns, into: gb)
            }
            cols.withUnsafeBufferPointer { cp in
                weight.grad.withUnsafeMutableBufferPointer { gw in
                    gemm(
                        transB: true, m: outChannels, n: g.patchSize, k: g.columns,
                        a: op.baseAddress!, lda: g.columns, b: cp.baseAddress!, ldb: g.columns,
                        beta: 1, c: gw.baseAddress!, ldc: g.patchSize)
                }
            }
        }
        return needInputGradient ? inputGradient(g) : nil
    }

    /// db += Σ over N·L of each channel's row of dOut2d, eight channels side by side (one per
    /// lane): each sum keeps its own left-to-right order, so the result is that of the plain loop,
    /// without waiting on one addition at a time.
    private func addBiasGradient(
        _ rows: UnsafePointer<Float>, columns n: Int, into gb: UnsafeMutableBufferPointer<Float>
    ) {
        var o = 0
        while o + 8 <= outChannels {
            let r = rows + o * n
            var acc = SIMD8<Float>()
            for j in 0..<n {
                acc += SIMD8(
                    r[j], r[n + j], r[2 * n + j], r[3 * n + j], r[4 * n + j], r[5 * n + j], r[6 * n + j],
                    r[7 * n + j])
            }
            for l in 0..<8 { gb[o + l] += acc[l] }
            o += 8
        }
        for o in o..<outChannels {
            var s: Float = 0
            let row = rows + o * n
            for j in 0..<n { s += row[j] }
            gb[o] += s
        }
    }

    /// dX: dCols (CKK, n·L) = Wᵀ · dOut2d for a few images at a time, written over the start of
    /// cols (no longer needed) and scattered by col2im while it is still in cache: the whole
    /// batch's dCols would be written to memory and read back.
    private func inputGradient(_ g: ConvGeometry) -> Tensor {
        let plane = g.outH * g.outW
        let chunk = max(1, min(g.batch, backwardChunkValues / max(1, g.patchSize * plane)))
        var dx = Tensor(shape: [g.batch, g.channels, g.height, g.width])
        let image = g.channels * g.height * g.width
        weight.value.withUnsafeBufferPointer { wp in
            out2d.withUnsafeBufferPointer { op in
                cols.withUnsafeMutableBufferPointer { cp in
                    dx.withUnsafeMutableBufferPointer { xp in
                        for n0 in Swift.stride(from: 0, to: g.batch, by: chunk) {
                            var part = g
                            part.batch = min(chunk, g.batch - n0)
                            gemm(
                                transA: true, m: g.patchSize, n: part.columns, k: outChannels,
                                a: wp.baseAddress!, lda: g.patchSize, b: op.baseAddress! + n0 * plane,
                                ldb: g.columns,
                                c: cp.baseAddress!, ldc: part.columns)
                            col2im(part, cols: cp.baseAddress!, dInput: xp.baseAddress! + n0 * image)
                        }
                    }
                }
            }
        }
        return dx
    }
}
