// The integer engine's dense kernel: sixteen output rows for four samples at once, in clang's and
// GCC's generic vector types. Integers only (the float-free test compiles this header with
// -mgeneral-regs-only). Swift's SIMD types cannot express a 16×16→32-bit pairwise multiply-add
// (their widening conversions go lane by lane through memory); this form is the pattern the
// compiler lowers to pmaddwd / vpmaddwd / vpdpwssd, or to plain multiplies on other targets.
#ifndef QSHAPE_INTEGER_KERNELS_H
#define QSHAPE_INTEGER_KERNELS_H

#include <stdint.h>
#include <string.h>

typedef int16_t qs_i16x32 __attribute__((vector_size(64)));
typedef int32_t qs_i32x32 __attribute__((vector_size(128)));
typedef uint32_t qs_u32x16 __attribute__((vector_size(64)));

// r[i] = a[2i]·b[2i] + a[2i+1]·b[2i+1], wrapping in 32 bits: the products widened and multiplied
// lane by lane (no product of two int16 overflows int32), then the even and odd lanes added as
// unsigned (the multiply-add instruction's wrapping rule). Written this way, clang emits one
// pmaddwd, vpmaddwd or vpdpwssd; split into even and odd halves first, it did not.
static inline qs_u32x16 qs_madd_pairs(qs_i16x32 a, qs_i16x32 b) {
    qs_i32x32 p = __builtin_convertvector(a, qs_i32x32) * __builtin_convertvector(b, qs_i32x32);
    return (qs_u32x16)__builtin_shufflevector(p, p, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           (qs_u32x16)__builtin_shufflevector(p, p, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// The pair x[0], x[1] in every 32-bit lane (a broadcast operand of the multiply-add).
static inline qs_i16x32 qs_pair_splat(const int16_t *x) {
    uint32_t pair;
    memcpy(&pair, x, sizeof pair);
    return (qs_i16x32)((qs_u32x16){0} + pair);
}

// out[s·16 + r] (wrapping int32) = Σ_k W[r, k]·x_s[k] for the sixteen rows r of one block and
// eight samples s, over `pairs` pairs of k. `w` is the block packed as [pairs][16 rows][2]; sample
// s starts at x + s·stride and holds 2·pairs values. Eight accumulators: enough independent sums
// to keep the multiply-add units busy, and each weight vector is loaded once for eight samples.
static inline void qs_dense16x8(const int16_t *w, const int16_t *x, long stride, long pairs, int32_t *out) {
    qs_u32x16 a[8] = {{0}};
    for (long k = 0; k < pairs; k++) {
        qs_i16x32 wk;
        memcpy(&wk, w + 32 * k, sizeof wk);
        for (int s = 0; s < 8; s++) a[s] += qs_madd_pairs(wk, qs_pair_splat(x + s * stride + 2 * k));
    }
    memcpy(out, a, sizeof a);
}

#endif
