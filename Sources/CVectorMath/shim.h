// Lane-wise vector operations that Swift's SIMD types do lane by lane: SIMD8<Float>.squareRoot()
// becomes eight scalar square roots with the lanes moved in and out, which made it the slowest
// part of the Adam step. A clang vector type imports into Swift as SIMD8<Float>, and the builtin
// lowers to the vector instruction of the target (sqrtps, vsqrtps): IEEE-exact, like the scalar one.
#ifndef QSHAPE_VECTOR_MATH_H
#define QSHAPE_VECTOR_MATH_H

typedef float qs_float8 __attribute__((ext_vector_type(8)));

static inline qs_float8 qs_sqrt8(qs_float8 x) { return __builtin_elementwise_sqrt(x); }

#endif
