// The integer engine: integers only. This module imports only two C headers, its kernels (integer
// vector types) and CPUID, so nothing in it can compute in floating point; every operation is one
// that C99's fixed-width integer arithmetic expresses the same way (two's complement, arithmetic
// right shift of signed values, explicit widening).

/// Applies a real multiplier M = multiplier · 2^(−shift) to an accumulator, with one rounding:
///
///     out = (acc · multiplier + 2^(shift−1)) >> shift        (64-bit product, arithmetic shift)
///
/// i.e. round half up (toward +∞) of acc·M. The converter chooses `multiplier` with at most
/// `63 − accumulatorBits` bits, so the product and the rounding term always fit in 64 bits; `acc`
/// is clamped to that accumulator range first, so even a hand-made model cannot overflow.
@inline(__always)
public func requantize(_ acc: Int64, multiplier: Int64, shift: Int64, accumulatorLimit: Int64) -> Int64 {
    requantize(acc, narrowMultiplier: multiplier, shift: shift, accumulatorLimit: accumulatorLimit)
}

/// `requantize` with the clamped accumulator and the multiplier held in `M`: with `Int64` it is
/// `requantize`; with `Int32` it is the same value wherever both fit in 32 bits (an accumulator of
/// at most 32 bits, multipliers below 2³¹: `Requantization.narrowMultipliers`), the product then
/// written as 32 × 32 → 64 bits, which AVX2 computes in one instruction (it has none for a general
/// 64-bit product).
@inline(__always)
func requantize<M: FixedWidthInteger & SignedInteger>(
    _ acc: Int64, narrowMultiplier multiplier: M, shift: Int64, accumulatorLimit: Int64
) -> Int64 {
    let a = M(truncatingIfNeeded: min(max(acc, -accumulatorLimit), accumulatorLimit))
    let product = Int64(truncatingIfNeeded: a) &* Int64(truncatingIfNeeded: multiplier)
    // Selects rather than a branch, so that loops over many outputs vectorise; the same values.
    let rounded = (product &+ (shift > 0 ? 1 &<< (shift &- 1) : 0)) &>> shift
    return shift > 0 ? rounded : product
}

/// Clamps to [lo, hi]: saturation to the output type, and ReLU / ReLU6 fused as tighter bounds.
@inline(__always)
public func saturate(_ x: Int64, _ lo: Int64, _ hi: Int64) -> Int64 { min(max(x, lo), hi) }

/// Round-half-away-from-zero division of a sum by a positive count (integer average pooling).
@inline(__always)
public func roundedDivide(_ sum: Int64, by count: Int64) -> Int64 {
    sum >= 0 ? (sum &+ count / 2) / count : -((-sum &+ count / 2) / count)
}

/// Bits of a two's-complement integer needed to hold every value in [−m, m]: 1 + ⌈log₂(m + 1)⌉.
public func bitsNeeded(_ m: Int64) -> Int {
    var bits = 1, v = m
    while v > 0 { bits += 1; v >>= 1 }
    return bits
}
