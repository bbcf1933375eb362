// Lane-wise helpers for the penalty passes: rounding residuals, magnitudes and signs by bit
// operations, the range term's cut-off and a Float eˣ, over 16-lane vectors (`Lanes`).
import Tensors
import CVectorMath

/// 1.5·2²³: adding it to a Float of magnitude below 2²² rounds to an integer (to nearest, ties to
/// even) and leaves that integer in the low mantissa bits. Swift's generic SIMD rounding and
/// Float→Int conversions become per-lane library calls; this is two vector additions.
let roundingMagic: Float = 12_582_912

/// u − round(u), lane-wise, for |u| < 2²², with the deployed rounding (half away from zero):
/// `qs_round_away16`, without a branch. (Nearest-even rounding with its rare ties then fixed
/// behind a test cost a comparison and a branch per 16 lanes in the gradient pass and the
/// quantisation sums: the quantisation term alone took 5% longer.)
@inline(__always)
func roundingResidual(_ u: Lanes) -> Lanes { u - qs_round_away16(u) }

/// The same for one value (the block tails): the same rounding, so the same residual.
@inline(__always)
func roundingResidual(_ u: Float) -> Float { u - u.rounded(.toNearestOrAwayFromZero) }

/// Whether any lane of x is at least the same lane of t (one comparison and one test; see
/// `qs_any_ge16`).
@inline(__always)
func anyAtLeast(_ x: Lanes, _ t: Lanes) -> Bool { qs_any_ge16(x, t) != 0 }

/// Whether any lane of x equals the same lane of t.
@inline(__always)
func anyEqual(_ x: Lanes, _ t: Lanes) -> Bool { qs_any_eq16(x, t) != 0 }

/// |x| lane-wise: the sign bit cleared.
@inline(__always)
func magnitude(_ x: Lanes) -> Lanes {
    unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7fff_ffff, to: Lanes.self)
}

/// |y| with the sign of x, lane-wise, for y ≥ 0: y's bits with x's sign bit.
@inline(__always)
func withSign(_ y: Lanes, of x: Lanes) -> Lanes {
    unsafeBitCast(
        unsafeBitCast(y, to: SIMD16<UInt32>.self) ^ (unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x8000_0000),
        to: Lanes.self)
}

/// The range term's terms exp(β(sᵢ − max s)) below e⁻⁴⁰ ≈ 4·10⁻¹⁸ are left out (counted as 0):
/// Z ≥ 1 (the maximum's own term), so even 10⁸ of them move R by under 10⁻⁹ — far below Float
/// resolution. On heavy-tailed weights only those within 40/β standard deviations of the maximum
/// remain, and the exponentials cost almost nothing; on nearly uniform weights all remain.
let rangeExponentCutoff: Float = 40

/// The smallest |w| whose range exponent k·|w| − shift is at least −`rangeExponentCutoff`.
@inline(__always)
func rangeCutoff(k: Float, shift: Float) -> Lanes {
    Lanes(repeating: k > 0 ? max(0, (shift - rangeExponentCutoff) / k) : 0)
}

/// The first index from `start` on where |w| equals `m` (the maximum), 16 lanes at a time.
func firstIndex(_ w: UnsafeBufferPointer<Float>, magnitude m: Float, from start: Int = 0) -> Int {
    let base = w.baseAddress!
    var i = start
    while i + Lanes.scalarCount <= w.count {
        if anyEqual(magnitude(loadLanes(base + i)), Lanes(repeating: m)) { break }
        i += Lanes.scalarCount
    }
    while i < w.count, abs(w[i]) != m { i += 1 }
    return i < w.count ? i : 0
}

extension PenaltyState {
    /// The first index of the group `w` where |w| = `maxAbs`, searched from the moment pass's
    /// first block that holds it.
    func firstMaximum(_ w: UnsafeBufferPointer<Float>) -> Int {
        firstIndex(w, magnitude: maxAbs, from: maxBlockStart)
    }
}

/// eˣ lane-wise in Float for x ≤ 0 (the softmax weights of the range term): x = n·ln2 + r with
/// |r| ≤ ln2/2 (Cody–Waite split of ln2), eʳ by its degree-6 Taylor polynomial (relative error
/// below 2e-7 there), times 2ⁿ built in the exponent bits. Below −87 the result is 0.
@inline(__always)
func expNonPositive(_ x: Lanes) -> Lanes {
    let clamped = x.replacing(with: -87, where: x .< -87)
    let t = clamped * 1.442_695_04 + roundingMagic
    let n = t - roundingMagic  // round(x·log₂e)
    let r = clamped - n * 0.693_145_75 - n * 1.428_606_8e-06
    var p = Lanes(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    let bits =
        unsafeBitCast(t, to: SIMD16<Int32>.self)
        &- unsafeBitCast(Lanes(repeating: roundingMagic), to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((bits &+ 127) &<< 23, to: Lanes.self)
    return (p * scale).replacing(with: 0, where: x .< -87)
}

/// a·b + c, lane-wise: one fused multiply-add where the build target has FMA (`qs_fma16`).
@inline(__always)
func fused(_ a: Lanes, _ b: Lanes, _ c: Lanes) -> Lanes { qs_fma16(a, b, c) }

/// The same for one value, rounded as the lanes are.
@inline(__always)
func fused(_ a: Float, _ b: Float, _ c: Float) -> Float { qs_fma1(a, b, c) }
