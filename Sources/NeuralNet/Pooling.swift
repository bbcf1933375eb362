// Max, average and global average pooling: forward and backward.
import Tensors

/// Max pooling (PyTorch `nn.MaxPool2d`, padding counts as −∞).
///
/// Shapes: input (N, C, H, W), output (N, C, OH, OW); `argmax` (N, C, OH, OW) holds the flat
/// input index of each window's maximum (the first one on ties), which is where backward sends dY.
public final class MaxPool2D: Layer {
    public let kernel: Int, stride: Int, padding: Int
    private var inputShape: [Int] = []
    private var argmax: [Int32] = []

    public var torchName: String { "MaxPool2d" }

    public init(kernel: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernel = kernel; self.stride = stride ?? kernel; self.padding = padding
    }

    /// 2×2 windows, stride 2, no padding: the pooling a convolution can compute (`ConvEpilogue`).
    public var isPlain2x2: Bool { kernel == 2 && stride == 2 && padding == 0 }

    private func geometry(_ n: Int, _ s: [Int]) -> ConvGeometry {
        ConvGeometry(
            batch: n, channels: s[0], height: s[1], width: s[2],
            kernelH: kernel, kernelW: kernel, stride: stride, padding: padding)
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        try poolOutputShape("maxpool2d", geometry(1, input), input)
    }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        let g = geometry(x.shape[0], Array(x.shape.dropFirst()))
        inputShape = x.shape
        let oh = g.outH, ow = g.outW
        var y = Tensor(shape: [g.batch, g.channels, oh, ow])
        if argmax.count != y.count { argmax = [Int32](repeating: 0, count: y.count) }
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                argmax.withUnsafeMutableBufferPointer { ap in
                    if isPlain2x2 {
                        splitInTwo(g.batch * g.channels, minimum: 1 << 10) { planes in
                            maxPool2x2(g, planes, xp.baseAddress!, yp.baseAddress!, ap.baseAddress!)
                        }
                        return
                    }
                    for plane in 0..<(g.batch * g.channels) {
                        let base = plane * g.height * g.width
                        for oy in 0..<oh {
                            for ox in 0..<ow {
                                let o = (plane * oh + oy) * ow + ox
                                // Window rows/columns clipped to the image (padding taps are −∞).
                                let y0 = max(0, oy * stride - padding),
                                    y1 = min(g.height, oy * stride - padding + kernel)
                                let x0 = max(0, ox * stride - padding),
                                    x1 = min(g.width, ox * stride - padding + kernel)
                                var bestIndex = base + y0 * g.width + x0
                                var best = xp[bestIndex]
                                for iy in y0..<y1 {
                                    let row = base + iy * g.width
                                    for ix in x0..<x1 where xp[row + ix] > best {
                                        best = xp[row + ix]; bestIndex = row + ix
                                    }
                                }
                                yp[o] = best
                                ap[o] = Int32(bestIndex)
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// The common 2×2, stride-2 window without clipping: the same result as the general loop.
    private func maxPool2x2(
        _ g: ConvGeometry, _ planes: Range<Int>, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
        _ arg: UnsafeMutablePointer<Int32>
    ) {
        let oh = g.outH, ow = g.outW, w = g.width
        for plane in planes {
            let base = plane * g.height * w
            for oy in 0..<oh {
                let r0 = base + 2 * oy * w, r1 = r0 + w, o = (plane * oh + oy) * ow
                for ox in 0..<ow {
                    var i = r0 + 2 * ox
                    var best = x[i]
                    if x[i + 1] > best { best = x[i + 1]; i = r0 + 2 * ox + 1 }
                    if x[r1 + 2 * ox] > best { best = x[r1 + 2 * ox]; i = r1 + 2 * ox }
                    if x[r1 + 2 * ox + 1] > best { best = x[r1 + 2 * ox + 1]; i = r1 + 2 * ox + 1 }
                    y[o + ox] = best
                    arg[o + ox] = Int32(i)
                }
            }
        }
    }

    /// dX[argmax(o)] += dY[o]; the outputs split between two workers at a plane's boundary (a
    /// plane's outputs reach only that plane's inputs, each in the same order either way).
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: inputShape)
        let plane = dOut.shape.dropFirst(2).reduce(1, *)
        dx.withUnsafeMutableBufferPointer { xp in
            dOut.withUnsafeBufferPointer { dp in
                argmax.withUnsafeBufferPointer { ap in
                    splitInTwo(dp.count, unit: plane, minimum: 1 << 16) { part in
                        for o in part { xp[Int(ap[o])] += dp[o] }
                    }
                }
            }
        }
        return dx
    }
}

/// Average pooling (PyTorch `nn.AvgPool2d`, no padding): each output is the mean of its window.
public final class AvgPool2D: Layer {
    public let kernel: Int, stride: Int
    private var inputShape: [Int] = []

    public var torchName: String { "AvgPool2d" }

    public init(kernel: Int, stride: Int? = nil) {
        self.kernel = kernel; self.stride = stride ?? kernel
    }

    private func geometry(_ n: Int, _ s: [Int]) -> ConvGeometry {
        ConvGeometry(
            batch: n, channels: s[0], height: s[1], width: s[2],
            kernelH: kernel, kernelW: kernel, stride: stride, padding: 0)
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        try poolOutputShape("avgpool2d", geometry(1, input), input)
    }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        let g = geometry(x.shape[0], Array(x.shape.dropFirst()))
        inputShape = x.shape
        let oh = g.outH, ow = g.outW, scale = 1 / Float(kernel * kernel)
        var y = Tensor(shape: [g.batch, g.channels, oh, ow])
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                for plane in 0..<(g.batch * g.channels) {
                    let base = plane * g.height * g.width
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            var s: Float = 0
                            for ky in 0..<kernel {
                                for kx in 0..<kernel {
                                    s += xp[base + (oy * stride + ky) * g.width + ox * stride + kx]
                                }
                            }
                            yp[(plane * oh + oy) * ow + ox] = s * scale
                        }
                    }
                }
            }
        }
        return y
    }

    /// dX[window(o)] += dY[o] / (K·K)
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        let g = geometry(inputShape[0], Array(inputShape.dropFirst()))
        let oh = g.outH, ow = g.outW, scale = 1 / Float(kernel * kernel)
        var dx = Tensor(shape: inputShape)
        dx.withUnsafeMutableBufferPointer { xp in
            dOut.withUnsafeBufferPointer { dp in
                for plane in 0..<(g.batch * g.channels) {
                    let base = plane * g.height * g.width
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            let d = dp[(plane * oh + oy) * ow + ox] * scale
                            for ky in 0..<kernel {
                                for kx in 0..<kernel {
                                    xp[base + (oy * stride + ky) * g.width + ox * stride + kx] += d
                                }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}

/// Global average pooling (PyTorch `nn.AdaptiveAvgPool2d(1)`): (N, C, H, W) → (N, C, 1, 1).
public final class GlobalAvgPool2D: Layer {
    private var inputShape: [Int] = []
    public var torchName: String { "AdaptiveAvgPool2d" }
    public init() {}

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 3 else {
            throw ModelError("globalavgpool2d expects a (C, H, W) input, got shape \(input)")
        }
        return [input[0], 1, 1]
    }

    public func forward(_ x: Tensor, training: Bool) -> Tensor {
        inputShape = x.shape
        let planes = x.shape[0] * x.shape[1], size = x.shape[2] * x.shape[3]
        var y = Tensor(shape: [x.shape[0], x.shape[1], 1, 1])
        x.withUnsafeBufferPointer { xp in
            for p in 0..<planes {
                var s: Float = 0
                for i in 0..<size { s += xp[p * size + i] }
                y.data[p] = s / Float(size)
            }
        }
        return y
    }

    /// dX[n, c, ·, ·] = dY[n, c] / (H·W)
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        let size = inputShape[2] * inputShape[3]
        var dx = Tensor(shape: inputShape)
        dx.withUnsafeMutableBufferPointer { xp in
            for p in 0..<dOut.count {
                let d = dOut.data[p] / Float(size)
                for i in 0..<size { xp[p * size + i] = d }
            }
        }
        return dx
    }
}

func poolOutputShape(_ name: String, _ g: ConvGeometry, _ input: [Int]) throws -> [Int] {
    guard input.count == 3 else { throw ModelError("\(name) expects a (C, H, W) input, got shape \(input)") }
    // PyTorch's rules: the padding at most half the kernel, the kernel within the padded input.
    guard 2 * g.padding <= g.kernelH else {
        throw ModelError("\(name) padding \(g.padding) is more than half its kernel \(g.kernelH)")
    }
    guard g.outH > 0, g.outW > 0, input[1] + 2 * g.padding >= g.kernelH, input[2] + 2 * g.padding >= g.kernelW
    else {
        throw ModelError("\(name) kernel \(g.kernelH) does not fit a \(input[1])x\(input[2]) input")
    }
    return [input[0], g.outH, g.outW]
}
