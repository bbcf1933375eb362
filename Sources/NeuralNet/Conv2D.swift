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
    /// Each worker's column matrix, output part and gradient sums.
    private let scratch = [ConvScratch(), ConvScratch()]
    /// The input of the last forward pass: backward makes its columns again.
    private var input: Tensor?
    /// The last forward pass's epilogue, its output (the ReLU's mask) and its pooling's positions.
    private var epilogue = ConvEpilogue.none
    private var output: Tensor?
    private var codes: [UInt8] = []
    /// Forward and backward go through the batch a few images at a time, about this many
    /// column-matrix values (1 MB) per part, so that the columns stay in cache (tests set it
    /// small to cover the parts).
    public var chunkValues = 1 << 18
    /// Forward and the weight gradient by direct loops where they suit the geometry (a small
    /// patch, stride 1: `DirectConvolution`), else by im2col and SGEMM (tests compare the two).
    public var directLoops = true

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

    /// The batch's parts (first image, images), the first half of them for worker 0 and the rest
    /// for worker 1, whatever the thread count, so that the sums come out the same.
    private func parts(_ g: ConvGeometry) -> [[(n0: Int, part: ConvGeometry)]] {
        let chunk = imagesPerChunk(g)
        let all = Swift.stride(from: 0, to: g.batch, by: chunk).map { n0 in
            var part = g
            part.batch = min(chunk, g.batch - n0)
            return (n0, part)
        }
        let half = (all.count + 1) / 2
        return [Array(all[..<half]), Array(all[half...])]
    }

    /// y = W · cols + b, a part of the batch at a time: out2d (O, n·L) = W (O, CKK) · cols
    /// (CKK, n·L), then y[n, o, l] = out2d[o, n·L + l] + b[o] while the part is still in cache.
    /// The two halves of the parts run on two threads (`onTwoWorkers`).
    public func forward(_ x: Tensor, training: Bool) -> Tensor { forward(x, epilogue: .none) }

    /// The convolution followed by the ReLU and pooling of `e`, each part's output planes made
    /// from its SGEMM output while that is in cache (`ConvEpilogue`); backward then goes through
    /// them too.
    public func forward(_ x: Tensor, epilogue e: ConvEpilogue) -> Tensor {
        let g = geometry(batch: x.shape[0], Array(x.shape.dropFirst()))
        geometry = g
        input = x
        epilogue = e
        let plane = g.outH * g.outW, work = parts(g), chunk = imagesPerChunk(g)
        let out = e.plane(g.outH, g.outW), outPlane = out.h * out.w
        for s in scratch {
            var first = g
            first.batch = chunk
            s.reserve(
                cols: g.patchSize * chunk * plane, out: outChannels * chunk * plane,
                padded: direct(g) ? DirectConvolution.paddedCount(first) : 0)
        }
        if e.pool && codes.count != g.batch * outChannels * outPlane {
            codes = [UInt8](repeating: 0, count: g.batch * outChannels * outPlane)
        }
        let biasValues = bias?.value.data
        let y = Tensor(shape: [g.batch, outChannels, out.h, out.w]) { yp in
            codes.withUnsafeMutableBufferPointer { cp in
                let y = yp.baseAddress!, codes = cp.baseAddress
                onTwoWorkers { w in
                    let s = scratch[w]
                    for (n0, part) in work[w] {
                        product(part, of: x, from: n0, s)
                        for n in 0..<part.batch {
                            for o in 0..<outChannels {
                                let at = ((n0 + n) * outChannels + o) * outPlane
                                e.forward(
                                    s.out2d + o * part.columns + n * plane, bias: biasValues?[o] ?? 0,
                                    h: g.outH, w: g.outW, into: y + at, codes: codes.map { $0 + at })
                            }
                        }
                    }
                }
            }
        }
        output = e.cap != nil && !e.pool ? y : nil
        return y
    }

    /// Whether this geometry's forward and weight gradient go through the direct loops.
    private func direct(_ g: ConvGeometry) -> Bool { directLoops && DirectConvolution.suits(g) }

    /// out2d (O, n·L) = W · the part's columns: by the direct loops from the padded images, or
    /// by SGEMM from the im2col columns.
    private func product(_ part: ConvGeometry, of x: Tensor, from n0: Int, _ s: ConvScratch) {
        weight.value.withUnsafeBufferPointer { wp in
            if direct(part) {
                s.pad(part, of: x, from: n0)
                DirectConvolution.forward(
                    part, weights: wp.baseAddress!, outChannels: outChannels, padded: s.padded, out: s.out2d)
                return
            }
            s.columns(part, of: x, from: n0)
            gemm(
                m: outChannels, n: part.columns, k: part.patchSize, a: wp.baseAddress!, lda: part.patchSize,
                b: s.cols, ldb: part.columns, c: s.out2d, ldc: part.columns)
        }
    }

    /// Per part of the batch: dOut2d (O, n·L) gathered from dOut, db += Σ dOut2d,
    /// dW += dOut2d · colsᵀ (the part's columns made again from the input: cheaper than keeping
    /// the whole batch's, which did not fit any cache), and dX = col2im(Wᵀ · dOut2d). Each
    /// worker sums its half into its own dW and db; the two are added in a fixed order.
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard let g = geometry, let x = input else { preconditionFailure("conv2d backward before forward") }
        let work = parts(g), image = g.channels * g.height * g.width
        var dx = needInputGradient ? Tensor(shape: [g.batch, g.channels, g.height, g.width]) : nil
        for s in scratch { s.clearGradients(weights: weight.grad.count, biases: outChannels) }
        let kept = output ?? Tensor(shape: [0])
        func run(_ dxp: UnsafeMutablePointer<Float>?) {
            dOut.withUnsafeBufferPointer { dp in
                kept.withUnsafeBufferPointer { yp in
                    codes.withUnsafeBufferPointer { cp in
                        let ends = Ends(
                            dOut: dp.baseAddress!, output: output == nil ? nil : yp.baseAddress,
                            codes: cp.baseAddress)
                        onTwoWorkers { w in
                            for (n0, part) in work[w] {
                                backwardPart(
                                    part, from: n0, ends, x: x, scratch[w], dx: dxp.map { $0 + n0 * image })
                            }
                        }
                    }
                }
            }
        }
        if dx == nil { run(nil) } else { dx!.withUnsafeMutableBufferPointer { run($0.baseAddress!) } }
        weight.grad.withUnsafeMutableBufferPointer { gw in
            for i in gw.indices { gw[i] += scratch[0].dW[i] + scratch[1].dW[i] }
        }
        bias?.grad.withUnsafeMutableBufferPointer { gb in
            for o in gb.indices { gb[o] += scratch[0].db[o] + scratch[1].db[o] }
        }
        return dx
    }

    /// One part's share of `backward`, into the worker's scratch.
    private func backwardPart(
        _ part: ConvGeometry, from n0: Int, _ ends: Ends, x: Tensor, _ s: ConvScratch,
        dx: UnsafeMutablePointer<Float>?
    ) {
        let plane = part.outH * part.outW, out = epilogue.plane(part.outH, part.outW)
        for n in 0..<part.batch {
            for o in 0..<outChannels {
                let at = ((n0 + n) * outChannels + o) * out.h * out.w
                epilogue.backward(
                    ends.dOut + at, output: ends.output.map { $0 + at }, codes: ends.codes.map { $0 + at },
                    h: part.outH, w: part.outW, into: s.out2d + o * part.columns + n * plane)
            }
        }
        if bias != nil { addBiasGradient(s.out2d, columns: part.columns, into: s.db) }
        if direct(part) {
            s.pad(part, of: x, from: n0)
            DirectConvolution.weightGradient(
                part, dOut: s.out2d, outChannels: outChannels, padded: s.padded, dW: s.dW)
        } else {
            s.columns(part, of: x, from: n0)
            gemm(
                transB: true, m: outChannels, n: part.patchSize, k: part.columns, a: s.out2d,
                lda: part.columns,
                b: s.cols, ldb: part.columns, beta: 1, c: s.dW, ldc: part.patchSize)
        }
        guard let dx else { return }
        // dCols (CKK, n·L) = Wᵀ · dOut2d over the part's columns (no longer needed), scattered.
        weight.value.withUnsafeBufferPointer { wp in
            gemm(
                transA: true, m: part.patchSize, n: part.columns, k: outChannels, a: wp.baseAddress!,
                lda: part.patchSize, b: s.out2d, ldb: part.columns, c: s.cols, ldc: part.columns)
        }
        col2im(part, cols: s.cols, dInput: dx)
    }

    /// db += Σ over n columns of each channel's row of dOut2d, eight channels side by side (one
    /// per lane): each sum keeps its own left-to-right order, so the result is that of the plain
    /// loop, without waiting on one addition at a time.
    private func addBiasGradient(
        _ rows: UnsafePointer<Float>, columns n: Int, into gb: UnsafeMutablePointer<Float>
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

/// What backward reads of the last forward's far end: the output's gradient, and the output itself
/// (a ReLU epilogue's mask) or the pooling's positions where the epilogue has them.
private struct Ends {
    var dOut: UnsafePointer<Float>
    var output: UnsafePointer<Float>?
    var codes: UnsafePointer<UInt8>?
}

/// One worker's buffers for `Conv2D`: the columns and output of one part, and its sums of the
/// weight and bias gradients. Grown, never shrunk, so steps after the first allocate nothing.
final class ConvScratch {
    private(set) var cols = UnsafeMutablePointer<Float>.allocate(capacity: 0)
    private(set) var out2d = UnsafeMutablePointer<Float>.allocate(capacity: 0)
    private(set) var dW = UnsafeMutablePointer<Float>.allocate(capacity: 0)
    private(set) var db = UnsafeMutablePointer<Float>.allocate(capacity: 0)
    /// The part's images with their zero padding, for the direct loops.
    private(set) var padded = UnsafeMutablePointer<Float>.allocate(capacity: 0)
    private var capacity = (cols: 0, out: 0, dW: 0, db: 0, padded: 0)

    deinit { for p in [cols, out2d, dW, db, padded] { p.deallocate() } }

    private static func grown(
        _ p: UnsafeMutablePointer<Float>, _ have: inout Int, _ need: Int
    ) -> UnsafeMutablePointer<Float> {
        guard need > have else { return p }
        p.deallocate()
        have = need
        let q = UnsafeMutablePointer<Float>.allocate(capacity: need)
        q.initialize(repeating: 0, count: need)
        return q
    }

    func reserve(cols c: Int, out o: Int, padded p: Int) {
        cols = Self.grown(cols, &capacity.cols, c)
        out2d = Self.grown(out2d, &capacity.out, o)
        padded = Self.grown(padded, &capacity.padded, p)
    }

    func clearGradients(weights: Int, biases: Int) {
        dW = Self.grown(dW, &capacity.dW, weights)
        db = Self.grown(db, &capacity.db, biases)
        dW.update(repeating: 0, count: weights)
        db.update(repeating: 0, count: biases)
    }

    /// Images n0..<n0+part.batch of x with their zero padding.
    func pad(_ part: ConvGeometry, of x: Tensor, from n0: Int) {
        let image = part.channels * part.height * part.width
        x.withUnsafeBufferPointer { xp in
            DirectConvolution.pad(part, input: xp.baseAddress! + n0 * image, into: padded)
        }
    }

    /// The columns of images n0..<n0+part.batch of x.
    func columns(_ part: ConvGeometry, of x: Tensor, from n0: Int) {
        let image = part.channels * part.height * part.width
        x.withUnsafeBufferPointer { xp in im2col(part, input: xp.baseAddress! + n0 * image, cols: cols) }
    }
}
