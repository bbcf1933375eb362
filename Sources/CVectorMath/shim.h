// Lane-wise vector operations that Swift's SIMD types do lane by lane: SIMD16<Float>.squareRoot()
// becomes sixteen scalar square roots with the lanes moved in and out, which made it the slowest
// part of the Adam step. A clang vector type imports into Swift as SIMD16<Float>, and the builtin
// lowers to the vector instruction of the target (sqrtps, vsqrtps): IEEE-exact, like the scalar one.
#ifndef QSHAPE_VECTOR_MATH_H
#define QSHAPE_VECTOR_MATH_H

typedef float qs_float16 __attribute__((ext_vector_type(16)));

static inline qs_float16 qs_sqrt16(qs_float16 x) { return __builtin_elementwise_sqrt(x); }

// Rounding to the nearest integer, ties to even: one instruction from SSE4.1 on (roundps,
// vrndscaleps). The x86-64 baseline has none, and the builtin would call roundevenf per lane; there
// 1.5·2²³ is added and subtracted, which rounds the same way for |x| < 2²² (every caller's range),
// so the result does not depend on the build target.
static inline qs_float16 qs_round_even16(qs_float16 x) {
#if defined(__SSE4_1__) || defined(__aarch64__)
    return __builtin_elementwise_roundeven(x);
#else
    const float magic = 12582912.0f;
    return (x + magic) - magic;   // not folded: without fast-math, clang keeps IEEE semantics
#endif
}

// Whether any lane of x is ≥ (or ==) the same lane of t: one vector comparison and an OR across
// the lanes (vptest, kortest). Swift's any() of a 16-lane mask became a call of the generic
// SIMD16<Int32>.min() per vector in AVX2 builds: the most expensive part of the quantisation-error
// pass there. IEEE comparisons, as Swift's .>= and .==.
static inline int qs_any_ge16(qs_float16 x, qs_float16 t) { return __builtin_reduce_or(x >= t) != 0; }
static inline int qs_any_eq16(qs_float16 x, qs_float16 t) { return __builtin_reduce_or(x == t) != 0; }

#endif
