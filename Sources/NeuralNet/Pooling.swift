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

    private func geometry(_ n: Int, _ s: [Int]) -> ConvGeometry {
        ConvGeometry(batch: n, channels: s[0], height: s[1], width: s[2],
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
                    for plane in 0..<(g.batch * g.channels) {
                        let base = plane * g.height * g.width
                        for oy in 0..<oh { for ox in 0..<ow {
                            var best = -Float.infinity, bestIndex = -1
                            for ky in 0..<kernel {
                                let iy = oy * stride - padding + ky
                                guard iy >= 0 && iy < g.height else { continue }
                                for kx in 0..<kernel {
                                    let ix = ox * stride - padding + kx
                                    guard ix >= 0 && ix < g.width else { continue }
                                    let v = xp[base + iy * g.width + ix]
                                    if v > best || bestIndex < 0 { best = v; bestIndex = base + iy * g.width + ix }
                                }
                            }
                            let o = (plane * oh + oy) * ow + ox
                            yp[o] = best
                            ap[o] = Int32(bestIndex)
                        } }
                    }
                }
            }
        }
        return y
    }

    /// dX[argmax(o)] += dY[o]
    public func backward(_ dOut: Tensor, needInputGradient: Bool) -> Tensor? {
        guard needInputGradient else { return nil }
        var dx = Tensor(shape: inputShape)
        dx.withUnsafeMutableBufferPointer { xp in
            dOut.withUnsafeBufferPointer { dp in
                argmax.withUnsafeBufferPointer { ap in
                    for o in 0..<dp.count { xp[Int(ap[o])] += dp[o] }
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
        ConvGeometry(batch: n, channels: s[0], height: s[1], width: s[2],
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
                    for oy in 0..<oh { for ox in 0..<ow {
                        var s: Float = 0
                        for ky in 0..<kernel { for kx in 0..<kernel {
                            s += xp[base + (oy * stride + ky) * g.width + ox * stride + kx]
                        } }
                        yp[(plane * oh + oy) * ow + ox] = s * scale
                    } }
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
                    for oy in 0..<oh { for ox in 0..<ow {
                        let d = dp[(plane * oh + oy) * ow + ox] * scale
                        for ky in 0..<kernel { for kx in 0..<kernel {
                            xp[base + (oy * stride + ky) * g.width + ox * stride + kx] += d
                        } }
                    } }
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
        guard input.count == 3 else { throw ModelError("globalavgpool2d expects a (C, H, W) input, got shape \(input)") }
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
    guard g.outH > 0, g.outW > 0 else {
        throw ModelError("\(name) kernel \(g.kernelH) does not fit a \(input[1])x\(input[2]) input")
    }
    return [input[0], g.outH, g.outW]
}
