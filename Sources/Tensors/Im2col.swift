// Convolution geometry, and im2col/col2im between images and patch matrices.
/// Geometry of a 2-D convolution or pooling window over an NCHW batch.
public struct ConvGeometry: Equatable, Sendable {
    public var batch, channels, height, width: Int
    public var kernelH, kernelW, stride, padding: Int

    public init(
        batch: Int, channels: Int, height: Int, width: Int,
        kernelH: Int, kernelW: Int, stride: Int, padding: Int
    ) {
        self.batch = batch; self.channels = channels; self.height = height; self.width = width
        self.kernelH = kernelH; self.kernelW = kernelW; self.stride = stride; self.padding = padding
    }

    /// `OH = (H + 2·pad − KH) / stride + 1` (floor), as in PyTorch.
    public var outH: Int { (height + 2 * padding - kernelH) / stride + 1 }
    public var outW: Int { (width + 2 * padding - kernelW) / stride + 1 }
    /// Rows of the column matrix: one per (channel, kh, kw).
    public var patchSize: Int { channels * kernelH * kernelW }
    /// Columns of the column matrix: one per (sample, oh, ow).
    public var columns: Int { batch * outH * outW }
}

/// Unfolds an NCHW batch into the column matrix used by convolution-as-GEMM.
///
///     input (N, C, H, W)  →  cols (C·KH·KW, N·OH·OW)
///     cols[(c·KH + kh)·KW + kw, (n·OH + oh)·OW + ow] = input[n, c, oh·s − p + kh, ow·s − p + kw]
///
/// Out-of-image taps are zero (zero padding). With this layout `W (O, C·KH·KW) · cols` gives the
/// output as `(O, N·OH·OW)` in one SGEMM over the whole batch.
public func im2col(_ g: ConvGeometry, input: UnsafePointer<Float>, cols: UnsafeMutablePointer<Float>) {
    let oh = g.outH, ow = g.outW, plane = g.height * g.width
    let rowLength = g.batch * oh * ow
    for c in 0..<g.channels {
        for kh in 0..<g.kernelH {
            for kw in 0..<g.kernelW {
                let row = cols + ((c * g.kernelH + kh) * g.kernelW + kw) * rowLength
                // Output columns whose input column is inside the image: ow in [owLo, owHi).
                let owLo = max(0, (g.padding - kw + g.stride - 1) / g.stride)
                let owHi = min(ow, max(owLo, (g.width + g.padding - kw + g.stride - 1) / g.stride))
                for n in 0..<g.batch {
                    let src = input + (n * g.channels + c) * plane
                    for y in 0..<oh {
                        let dst = row + (n * oh + y) * ow
                        let iy = y * g.stride - g.padding + kh
                        if iy < 0 || iy >= g.height {
                            dst.update(repeating: 0, count: ow)
                            continue
                        }
                        let srcRow = src + iy * g.width - g.padding + kw
                        if owLo > 0 { dst.update(repeating: 0, count: owLo) }
                        if g.stride == 1 {
                            (dst + owLo).update(from: srcRow + owLo, count: owHi - owLo)
                        } else {
                            for x in owLo..<owHi { dst[x] = srcRow[x * g.stride] }
                        }
                        if owHi < ow { (dst + owHi).update(repeating: 0, count: ow - owHi) }
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: scatters (adds) every column entry back to the input pixel it was
/// read from. `dInput` must be zeroed (or hold gradients to accumulate onto) by the caller.
public func col2im(_ g: ConvGeometry, cols: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>) {
    let oh = g.outH, ow = g.outW, plane = g.height * g.width
    let rowLength = g.batch * oh * ow
    for c in 0..<g.channels {
        for kh in 0..<g.kernelH {
            for kw in 0..<g.kernelW {
                let row = cols + ((c * g.kernelH + kh) * g.kernelW + kw) * rowLength
                let owLo = max(0, (g.padding - kw + g.stride - 1) / g.stride)
                let owHi = min(ow, max(owLo, (g.width + g.padding - kw + g.stride - 1) / g.stride))
                for n in 0..<g.batch {
                    let dst = dInput + (n * g.channels + c) * plane
                    for y in 0..<oh {
                        let iy = y * g.stride - g.padding + kh
                        if iy < 0 || iy >= g.height { continue }
                        let src = row + (n * oh + y) * ow
                        let dstRow = dst + iy * g.width - g.padding + kw
                        for x in owLo..<owHi { dstRow[x * g.stride] += src[x] }
                    }
                }
            }
        }
    }
}

/// Naive twin of `im2col`: the defining formula with a bounds test on every tap.
public func im2colNaive(_ g: ConvGeometry, input: UnsafePointer<Float>, cols: UnsafeMutablePointer<Float>) {
    let oh = g.outH, ow = g.outW
    for c in 0..<g.channels {
        for kh in 0..<g.kernelH {
            for kw in 0..<g.kernelW {
                let r = (c * g.kernelH + kh) * g.kernelW + kw
                for n in 0..<g.batch {
                    for y in 0..<oh {
                        for x in 0..<ow {
                            let iy = y * g.stride - g.padding + kh, ix = x * g.stride - g.padding + kw
                            let inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width
                            cols[r * g.columns + (n * oh + y) * ow + x] =
                                inside ? input[((n * g.channels + c) * g.height + iy) * g.width + ix] : 0
                        }
                    }
                }
            }
        }
    }
}
