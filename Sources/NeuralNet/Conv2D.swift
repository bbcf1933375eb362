// 2-D convolution: forward as im2col + SGEMM, backward for weights, bias and input.
import Tensors

/// 2-D convolution (PyTorch `nn.Conv2d`, cross-correlation), computed as SGEMMs over im2col
/// matrices of a few images at a time.
///
/// Shapes: input (N, C, H, W), weight (O, C, KH, KW), bias (O), output (N, O, OH, OW),
/// for a part of n images cols (C·KH·KW, n·OH·OW), out2d (O, n·OH·OW).
public final class Conv2D: Layer {
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    public let weight: Parameter
    public let bias: Parameter?
    private var geometry: ConvGeometry?
    private var cols: [Float] = []
    private var out2d: [Float] = []
    /// The input of the last forward pass: backward makes its columns again.
    private var input: Tensor?
    /// Forward and backward go through the batch a few images at a time, about this many
    /// column-matrix values (1 MB) per part, so that the columns stay in cache (tests set it
    /// small to cover the parts).
    public var chunkValues = 1 << 18

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

    /// Images per part: about `chunkValues` column-matrix values, at least one image.
    private func imagesPerChunk(_ g: ConvGeometry) -> Int {
        max(1, min(g.batch, chunkValues / max(1, g.patchSize * g.outH * g.outW)))
    }

    /// The columns of images n0..<n0+part.batch, into `cols`.
    private func columns(_ part: ConvGeometry, of x: Tensor, from n0: Int) {
        let image = part.channels * part.height * part.width
        x.withUnsafeBufferPointer { xp in
            cols.withUnsafeMutableBufferPointer { cp in
                im2col(part, input: xp.baseAddress! + n0 * image, cols: cp.baseAddress!)
            }
        }
    }

    /// y = W · cols + b, a part of the batch at a time: out2d (O, n·L) = W (O, CKK) · cols
    /// (CKK, n·L), then y[n, o, l] = out2d[o, n·L + l] + b[o] while the part is still in cache.
    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        let g = geometry(batch: x.shape[0], Array(x.shape.dropFirst()))
        geometry = g
        input = x
        let plane = g.outH * g.outW, chunk = imagesPerChunk(g)
        if cols.count != g.patchSize * chunk * plane {
            cols = [Float](repeating: 0, count: g.patchSize * chunk * plane)
        }
        if out2d.count != outChannels * chunk * plane {
            out2d = [Float](repeating: 0, count: outChannels * chunk * plane)
        }
        let biasValues = bias?.value.data
        return Tensor(shape: [g.batch, outChannels, g.outH, g.outW]) { yp in
            for n0 in Swift.stride(from: 0, to: g.batch, by: chunk) {
                var part = g
                part.batch = min(chunk, g.batch - n0)
                columns(part, of: x, from: n0)
                weight.value.withUnsafeBufferPointer { wp in
                    cols.withUnsafeBufferPointer { cp in
                        out2d.withUnsafeMutableBufferPointer { op in
                            gemm(
                                m: outChannels, n: part.columns, k: g.patchSize,
                                a: wp.baseAddress!, lda: g.patchSize, b: cp.baseAddress!, ldb: part.columns,
                                c: op.baseAddress!, ldc: part.columns)
                            for n in 0..<part.batch {
                                for o in 0..<outChannels {
                                    let src = op.baseAddress! + o * part.columns + n * plane
                                    let dst = yp.baseAddress! + ((n0 + n) * outChannels + o) * plane
                                    let b = biasValues?[o] ?? 0
                                    for l in 0..<plane { dst[l] = src[l] + b }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Per part of the batch: dOut2d (O, n·L) gathered from dOut, db += Σ dOut2d,
    /// dW += dOut2d · colsᵀ (the part's columns made again from the input: cheaper than keeping
    /// the whole batch's, which did not fit any cache), and dX = col2im(Wᵀ · dOut2d).
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let g = geometry, let x = input else { preconditionFailure("conv2d backward before forward") }
        let plane = g.outH * g.outW, chunk = imagesPerChunk(g), image = g.channels * g.height * g.width
        var dx = needInputGradient ? Tensor(shape: [g.batch, g.channels, g.height, g.width]) : nil
        for n0 in Swift.stride(from: 0, to: g.batch, by: chunk) {
            var part = g
            part.batch = min(chunk, g.batch - n0)
            dOut.withUnsafeBufferPointer { dp in
                out2d.withUnsafeMutableBufferPointer { op in
                    for n in 0..<part.batch {
                        for o in 0..<outChannels {
                            let dst = op.baseAddress! + o * part.columns + n * plane
                            let src = dp.baseAddress! + ((n0 + n) * outChannels + o) * plane
                            for l in 0..<plane { dst[l] = src[l] }
                        }
                    }
                }
            }
            columns(part, of: x, from: n0)
            out2d.withUnsafeBufferPointer { op in
                bias?.grad.withUnsafeMutableBufferPointer { gb in
                    addBiasGradient(op.baseAddress!, columns: part.columns, into: gb)
                }
                cols.withUnsafeBufferPointer { cp in
                    weight.grad.withUnsafeMutableBufferPointer { gw in
                        gemm(
                            transB: true, m: outChannels, n: g.patchSize, k: part.columns,
                            a: op.baseAddress!, lda: part.columns, b: cp.baseAddress!, ldb: part.columns,
                            beta: 1, c: gw.baseAddress!, ldc: g.patchSize)
                    }
                }
            }
            guard dx != nil else { continue }
            // dCols (CKK, n·L) = Wᵀ · dOut2d over the part's columns (no longer needed), scattered.
            weight.value.withUnsafeBufferPointer { wp in
                out2d.withUnsafeBufferPointer { op in
                    cols.withUnsafeMutableBufferPointer { cp in
                        dx!.withUnsafeMutableBufferPointer { xp in
                            gemm(
                                transA: true, m: g.patchSize, n: part.columns, k: outChannels,
                                a: wp.baseAddress!, lda: g.patchSize, b: op.baseAddress!, ldb: part.columns,
                                c: cp.baseAddress!, ldc: part.columns)
                            col2im(part, cols: cp.baseAddress!, dInput: xp.baseAddress! + n0 * image)
                        }
                    }
                }
            }
        }
        return dx
    }

    /// db += Σ over n columns of each channel's row of dOut2d, eight channels side by side (one
    /// per lane): each sum keeps its own left-to-right order, so the result is that of the plain
    /// loop, without waiting on one addition at a time.
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
}
