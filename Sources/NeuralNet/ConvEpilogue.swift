// The ReLU and 2×2 max pooling after a convolution, computed by the convolution itself while each
// part of its output is still in cache: forward from the SGEMM's output rows, backward into them.
import CVectorMath
import Tensors

/// What a convolution computes on the way out when `Sequential` runs it together with the layers
/// after it: a ReLU (or ReLU6), then optionally a 2×2, stride-2 max pooling. The values, and the
/// gradients, are those of the separate layers to the bit; the full-size activation is never
/// written to memory, nor read back by the ReLU, the pooling and their backward passes.
public struct ConvEpilogue: Equatable, Sendable {
    /// The ReLU's upper clamp (∞ for ReLU, 6 for ReLU6); nil for no ReLU (and no pooling).
    public var cap: Float?
    /// A 2×2, stride-2 max pooling without padding after the ReLU.
    public var pool: Bool

    public static let none = ConvEpilogue(cap: nil, pool: false)

    public init(cap: Float?, pool: Bool) {
        precondition(cap != nil || !pool, "a fused pooling needs the ReLU before it")
        self.cap = cap; self.pool = pool
    }

    /// The output plane's height and width for a convolution output plane of h × w.
    func plane(_ h: Int, _ w: Int) -> (h: Int, w: Int) { pool ? (h / 2, w / 2) : (h, w) }

    /// One output plane from one plane of the SGEMM's output (`h × w`, bias not yet added):
    /// y = min(max(x + b, 0), cap), then the first maximum of each window and, in `codes`, where its
    /// gradient goes: the window position (0–3, row by row), or 4 where the maximum is 0 or the cap.
    func forward(
        _ x: UnsafePointer<Float>, bias b: Float, h: Int, w: Int, into y: UnsafeMutablePointer<Float>,
        codes: UnsafeMutablePointer<UInt8>?
    ) {
        guard let cap else {
            for l in 0..<(h * w) { y[l] = x[l] + b }
            return
        }
        guard pool else {
            for l in 0..<(h * w) { y[l] = min(max(x[l] + b, 0), cap) }  // the ReLU layer's expression
            return
        }
        let pw = w / 2
        for py in 0..<(h / 2) {
            let r0 = x + 2 * py * w
            qs_relu_pool2x2_row(r0, r0 + w, pw, b, cap, y + py * pw, codes! + py * pw)
        }
    }

    /// The gradient of one SGEMM output plane (`h × w`) from its output plane's gradient `dy`:
    /// through the ReLU where 0 < y < cap (`y` is the kept output), or to each window's maximum.
    func backward(
        _ dy: UnsafePointer<Float>, output y: UnsafePointer<Float>?, codes: UnsafePointer<UInt8>?, h: Int,
        w: Int, into dx: UnsafeMutablePointer<Float>
    ) {
        guard let cap else {
            for l in 0..<(h * w) { dx[l] = dy[l] }
            return
        }
        guard pool else {
            let y = y!
            for l in 0..<(h * w) { dx[l] = y[l] > 0 && y[l] < cap ? dy[l] : 0 }
            return
        }
        let pw = w / 2
        for py in 0..<(h / 2) {
            let r0 = dx + 2 * py * w
            qs_pool2x2_gradient_row(dy + py * pw, codes! + py * pw, pw, r0, r0 + w)
            if w % 2 == 1 { r0[w - 1] = 0; r0[2 * w - 1] = 0 }
        }
        if h % 2 == 1 { (dx + (h - 1) * w).update(repeating: 0, count: w) }
    }
}
