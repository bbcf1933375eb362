// Direct convolution loops for a stride-1 convolution with a small patch (the first layer of an
// image network: one input channel, a 3×3 kernel), where an im2col SGEMM with K = 9 runs far below
// the machine's peak. Forward and the weight gradient; the input gradient stays an SGEMM.

/// Convolution as loops over eight output positions at a time, reading a zero-padded copy of each
/// image. Same layouts as the im2col SGEMM (`im2col`): weights (O, C·KH·KW), output and its
/// gradient (O, N·OH·OW). The sums run in patch order (c, kh, kw) per position, as the naive
/// product does; SGEMM's order differs, so the two agree to rounding, not to the bit.
public enum DirectConvolution {
    /// Vector width: eight positions of an output row.
    typealias Vector = SIMD8<Float>

    /// Stride 1, at most 32 patch values and output rows of eight positions or more: where the
    /// loops are measured to beat SGEMM (Docs/Performance.md).
    public static func suits(_ g: ConvGeometry) -> Bool {
        g.stride == 1 && g.patchSize <= 32 && g.outW >= Vector.scalarCount && g.outH >= 1
    }

    /// Values of the padded copy of g's images: N·C·(H + 2p)·(W + 2p).
    public static func paddedCount(_ g: ConvGeometry) -> Int { g.batch * g.channels * g.paddedPlane }

    /// The images of g with `padding` zeros on every side: (N, C, H + 2p, W + 2p).
    public static func pad(
        _ g: ConvGeometry, input: UnsafePointer<Float>, into p: UnsafeMutablePointer<Float>
    ) {
        let wp = g.paddedWidth
        for plane in 0..<(g.batch * g.channels) {
            let dst = p + plane * g.paddedPlane, src = input + plane * g.height * g.width
            dst.update(repeating: 0, count: g.padding * wp)
            for y in 0..<g.height {
                let row = dst + (g.padding + y) * wp
                row.update(repeating: 0, count: g.padding)
                row.advanced(by: g.padding).update(from: src + y * g.width, count: g.width)
                (row + g.padding + g.width).update(repeating: 0, count: g.padding)
            }
            (dst + (g.padding + g.height) * wp).update(repeating: 0, count: g.padding * wp)
        }
    }

    /// The offset in a padded image of each patch value (c, kh, kw) from an output position's.
    static func tapOffsets(_ g: ConvGeometry) -> [Int] {
        var offsets: [Int] = []
        for c in 0..<g.channels {
            for kh in 0..<g.kernelH {
                for kw in 0..<g.kernelW { offsets.append(c * g.paddedPlane + kh * g.paddedWidth + kw) }
            }
        }
        return offsets
    }

    /// Calls `body(input, output, skip)` for every block of eight positions of every output row,
    /// with the block's offsets in the padded images and in an output row (O, N·OH·OW): the last
    /// block of a row starts at OW − 8 and overlaps the one before by `skip` positions.
    @inline(__always)
    static func forEachBlock(_ g: ConvGeometry, _ body: (Int, Int, Int) -> Void) {
        let ow = g.outW, width = Vector.scalarCount, wp = g.paddedWidth, image = g.channels * g.paddedPlane
        for n in 0..<g.batch {
            for y in 0..<g.outH {
                var x = 0
                while x < ow {
                    let x0 = min(x, ow - width)
                    body(n * image + y * wp + x0, (n * g.outH + y) * ow + x0, x - x0)
                    x += width
                }
            }
        }
    }

    /// out (O, N·OH·OW) = the convolution of the padded images with `weights` (no bias). Eight
    /// output channels at a time, eight independent sums per block of positions (one alone would
    /// wait on each addition); past the last channel the tile repeats it, storing the same values twice.
    public static func forward(
        _ g: ConvGeometry, weights: UnsafePointer<Float>, outChannels: Int, padded: UnsafePointer<Float>,
        out: UnsafeMutablePointer<Float>
    ) {
        let offsets = tapOffsets(g), patch = g.patchSize, columns = g.columns
        offsets.withUnsafeBufferPointer { taps in
            for o in stride(from: 0, to: outChannels, by: 8) {
                let c = (0..<8).map { min(o + $0, outChannels - 1) }
                let w0 = weights + c[0] * patch, w1 = weights + c[1] * patch, w2 = weights + c[2] * patch,
                    w3 = weights + c[3] * patch, w4 = weights + c[4] * patch, w5 = weights + c[5] * patch,
                    w6 = weights + c[6] * patch, w7 = weights + c[7] * patch
                let o0 = out + c[0] * columns, o1 = out + c[1] * columns, o2 = out + c[2] * columns,
                    o3 = out + c[3] * columns, o4 = out + c[4] * columns, o5 = out + c[5] * columns,
                    o6 = out + c[6] * columns, o7 = out + c[7] * columns
                forEachBlock(g) { input, i, _ in
                    let at = padded + input
                    var a0 = Vector(), a1 = Vector(), a2 = Vector(), a3 = Vector()
                    var a4 = Vector(), a5 = Vector(), a6 = Vector(), a7 = Vector()
                    for t in 0..<patch {
                        let p = load(at + taps[t])
                        a0 += w0[t] * p; a1 += w1[t] * p; a2 += w2[t] * p; a3 += w3[t] * p
                        a4 += w4[t] * p; a5 += w5[t] * p; a6 += w6[t] * p; a7 += w7[t] * p
                    }
                    store(a0, o0 + i); store(a1, o1 + i); store(a2, o2 + i); store(a3, o3 + i)
                    store(a4, o4 + i); store(a5, o5 + i); store(a6, o6 + i); store(a7, o7 + i)
                }
            }
        }
    }

    /// dW (O, C·KH·KW) += dOut (O, N·OH·OW) · colsᵀ: for each tile of four output channels and
    /// three taps, twelve sums in eight lanes over every position, then across the lanes. Past
    /// the last channel or tap the tile repeats it; the repeats are not added.
    public static func weightGradient(
        _ g: ConvGeometry, dOut: UnsafePointer<Float>, outChannels: Int, padded: UnsafePointer<Float>,
        dW: UnsafeMutablePointer<Float>
    ) {
        let offsets = tapOffsets(g), patch = g.patchSize, columns = g.columns
        let lane = Vector(0, 1, 2, 3, 4, 5, 6, 7)
        for o in stride(from: 0, to: outChannels, by: 4) {
            for t in stride(from: 0, to: patch, by: 3) {
                let c = (0..<4).map { min(o + $0, outChannels - 1) },
                    u = (0..<3).map { offsets[min(t + $0, patch - 1)] }
                let d0 = dOut + c[0] * columns, d1 = dOut + c[1] * columns, d2 = dOut + c[2] * columns,
                    d3 = dOut + c[3] * columns
                let u0 = u[0], u1 = u[1], u2 = u[2]
                var a00 = Vector(), a01 = Vector(), a02 = Vector(), a10 = Vector(), a11 = Vector(),
                    a12 = Vector()
                var a20 = Vector(), a21 = Vector(), a22 = Vector(), a30 = Vector(), a31 = Vector(),
                    a32 = Vector()
                forEachBlock(g) { input, i, skip in
                    let at = padded + input
                    var g0 = load(d0 + i), g1 = load(d1 + i), g2 = load(d2 + i), g3 = load(d3 + i)
                    if skip > 0 {  // the overlapping block's first `skip` positions were summed already
                        let m = lane .< Float(skip)
                        g0.replace(with: 0, where: m); g1.replace(with: 0, where: m)
                        g2.replace(with: 0, where: m); g3.replace(with: 0, where: m)
                    }
                    let p0 = load(at + u0), p1 = load(at + u1), p2 = load(at + u2)
                    a00 += g0 * p0; a01 += g0 * p1; a02 += g0 * p2
                    a10 += g1 * p0; a11 += g1 * p1; a12 += g1 * p2
                    a20 += g2 * p0; a21 += g2 * p1; a22 += g2 * p2
                    a30 += g3 * p0; a31 += g3 * p1; a32 += g3 * p2
                }
                let s = [a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32]
                for k in 0..<4 where o + k < outChannels {
                    for j in 0..<3 where t + j < patch {
                        dW[(o + k) * patch + t + j] += laneSum(s[k * 3 + j])
                    }
                }
            }
        }
    }

    /// The lanes' sum by halving, in the same order in every build (`sum()` leaves it open).
    @inline(__always)
    static func laneSum(_ v: Vector) -> Float {
        let h4 = v.lowHalf + v.highHalf, h2 = h4.lowHalf + h4.highHalf
        return h2[0] + h2[1]
    }

    @inline(__always)
    static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(p).loadUnaligned(as: Vector.self)
    }
}

extension ConvGeometry {
    /// The width of an image plane with its padding on both sides, and the values of such a plane.
    var paddedWidth: Int { width + 2 * padding }
    var paddedPlane: Int { (height + 2 * padding) * paddedWidth }
}
