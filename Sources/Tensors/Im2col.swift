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
    if g.keepsSize { return samePlanes(g, input, cols) }
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
                            for x in 0..<ow { dst[x] = 0 }
                            continue
                        }
                        // Plain loops: rows are 14–28 values, too short for memcpy's and memset's calls.
                        let srcRow = src + iy * g.width - g.padding + kw
                        for x in 0..<owLo { dst[x] = 0 }
                        if g.stride == 1 {
                            for x in owLo..<owHi { dst[x] = srcRow[x] }
                        } else {
                            for x in owLo..<owHi { dst[x] = srcRow[x * g.stride] }
                        }
                        for x in owHi..<ow { dst[x] = 0 }
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: scatters (adds) every column entry back to the input pixel it was
/// read from. `dInput` must be zeroed (or hold gradients to accumulate onto) by the caller. The
/// entries of `cols` that stand for padding may be overwritten with zeros.
public func col2im(_ g: ConvGeometry, cols: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>)
{
    if g.keepsSize { return samePlanesAdjoint(g, cols, dInput) }
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
                        if g.stride == 1 {
                            for x in owLo..<owHi { dstRow[x] += src[x] }
                        } else {
                            for x in owLo..<owHi { dstRow[x * g.stride] += src[x] }
                        }
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

extension ConvGeometry {
    /// Stride 1 and "same" padding: each row of cols is the input plane shifted by
    /// (kh − p)·W + (kw − p), apart from the taps that fall on the padding.
    var keepsSize: Bool { stride == 1 && outH == height && outW == width }

    /// For tap (kh, kw): the output rows [yLo, yHi) and columns [xLo, xHi) that read inside the
    /// image, and the shift from an output position to the input position it reads.
    func sameTap(_ kh: Int, _ kw: Int) -> SameTap {
        let yLo = min(height, max(0, padding - kh)), yHi = min(height, height + padding - kh)
        let xLo = min(width, max(0, padding - kw)), xHi = min(width, width + padding - kw)
        return SameTap(
            yLo: yLo, yHi: max(yLo, yHi), xLo: xLo, xHi: max(xLo, xHi),
            shift: (kh - padding) * width + (kw - padding))
    }
}

/// One tap of a `keepsSize` geometry: see `ConvGeometry.sameTap`.
struct SameTap {
    var yLo, yHi, xLo, xHi, shift: Int

    /// The output positions [first, end) from the first that reads inside the image to the last;
    /// empty when the tap reads only padding (a kernel wider than the image).
    func run(_ w: Int) -> (first: Int, end: Int) {
        yHi > yLo && xHi > xLo ? (yLo * w + xLo, (yHi - 1) * w + xHi) : (0, 0)
    }
}

/// Calls `body` for every tap and image of a `keepsSize` geometry with the tap, its run, the
/// plane's offset in cols and the (shifted) plane's offset in the input.
@inline(__always)
func forEachSamePlane(_ g: ConvGeometry, _ body: (SameTap, (first: Int, end: Int), Int, Int) -> Void) {
    let plane = g.height * g.width, rowLength = g.batch * plane
    for c in 0..<g.channels {
        for kh in 0..<g.kernelH {
            for kw in 0..<g.kernelW {
                let t = g.sameTap(kh, kw), row = ((c * g.kernelH + kh) * g.kernelW + kw) * rowLength
                for n in 0..<g.batch {
                    body(t, t.run(g.width), row + n * plane, (n * g.channels + c) * plane + t.shift)
                }
            }
        }
    }
}

/// Sets the taps of one plane of cols that fall on the padding (left and right of the image)
/// to zero.
@inline(__always)
func zeroPaddingTaps(_ t: SameTap, _ p: UnsafeMutablePointer<Float>, width w: Int) {
    for y in t.yLo..<t.yHi {
        for x in 0..<t.xLo { p[y * w + x] = 0 }
        for x in t.xHi..<w { p[y * w + x] = 0 }
    }
}

/// `im2col` for `keepsSize` geometries: one contiguous shifted copy per row and image, from the
/// first tap inside the image to the last, then the padding's taps set to zero (the copy wrapped
/// them onto the neighbouring row's pixels). Rows of 14–28 values copied one by one spent most
/// of their time starting and ending the copies.
func samePlanes(_ g: ConvGeometry, _ input: UnsafePointer<Float>, _ cols: UnsafeMutablePointer<Float>) {
    let plane = g.height * g.width
    forEachSamePlane(g) { t, run, colsOffset, inputOffset in
        let dst = cols + colsOffset, src = input + inputOffset
        for i in 0..<run.first { dst[i] = 0 }
        for i in run.first..<run.end { dst[i] = src[i] }
        for i in run.end..<plane { dst[i] = 0 }
        zeroPaddingTaps(t, dst, width: g.width)
    }
}

/// `col2im` for `keepsSize` geometries: the padding's taps in `cols` are set to zero, then each
/// row is added to the input plane in one contiguous shifted run (the zeros land on the pixels
/// the run wraps onto).
func samePlanesAdjoint(
    _ g: ConvGeometry, _ cols: UnsafeMutablePointer<Float>, _ dInput: UnsafeMutablePointer<Float>
) {
    forEachSamePlane(g) { t, run, colsOffset, inputOffset in
        let src = cols + colsOffset, dst = dInput + inputOffset
        zeroPaddingTaps(t, src, width: g.width)
        for i in run.first..<run.end { dst[i] += src[i] }
    }
}
