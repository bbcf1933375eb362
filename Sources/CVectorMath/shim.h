// Lane-wise vector operations that Swift's SIMD types do lane by lane: SIMD16<Float>.squareRoot()
// becomes sixteen scalar square roots with the lanes moved in and out, which made it the slowest
// part of the Adam step. A clang vector type imports into Swift as SIMD16<Float>, and the builtin
// lowers to the vector instruction of the target (sqrtps, vsqrtps): IEEE-exact, like the scalar one.
#ifndef QSHAPE_VECTOR_MATH_H
#define QSHAPE_VECTOR_MATH_H

typedef float qs_float16 __attribute__((ext_vector_type(16)));

static inline qs_float16 qs_sqrt16(qs_float16 x) { return __builtin_elementwise_sqrt(x); }

#endif
