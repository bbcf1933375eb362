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

// dst[2r] = a[r], dst[2r + 1] = b[r] for r < 16: two rows of sixteen values interleaved into
// one block of the packed form (pairs of k side by side).
static inline void qs_interleave16(const int16_t *a, const int16_t *b, int16_t *dst) {
    typedef int16_t qs_i16x16 __attribute__((vector_size(32)));
    qs_i16x16 va, vb;
    memcpy(&va, a, sizeof va);
    memcpy(&vb, b, sizeof vb);
    qs_i16x32 z = __builtin_shufflevector(va, vb, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23, 8, 24,
                                          9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    memcpy(dst, &z, sizeof z);
}

// How many samples one pass over the weights serves: as many accumulators as the vector
// registers hold without spilling (a 16-lane vector is one register with AVX-512, two with AVX2,
// four with SSE2, which has sixteen registers in all).
#if defined(__AVX512BW__)
#define QS_PASS 8
#elif defined(__AVX2__)
#define QS_PASS 4
#else
#define QS_PASS 2
#endif

// out[s·out_stride + r] (wrapping int32) = Σ_k W[r, k]·x_s[k] for the sixteen rows r of one block
// and eight samples s, over `pairs` pairs of k. `w` is the block packed as [pairs][16 rows][2]; sample
// s starts at x + s·stride and holds 2·pairs values. The samples go QS_PASS at a time (the block
// is read again from the first-level cache for the next ones); every sum is taken in the same
// order whatever QS_PASS is.
static inline void qs_dense16x8(const int16_t *w, const int16_t *x, long stride, long pairs, int32_t *out,
                                long out_stride) {
    for (int first = 0; first < 8; first += QS_PASS) {
        qs_u32x16 a[QS_PASS] = {{0}};
        for (long k = 0; k < pairs; k++) {
            qs_i16x32 wk;
            memcpy(&wk, w + 32 * k, sizeof wk);
            for (int s = 0; s < QS_PASS; s++) a[s] += qs_madd_pairs(wk, qs_pair_splat(x + (first + s) * stride + 2 * k));
        }
        for (int s = 0; s < QS_PASS; s++) memcpy(out + (first + s) * out_stride, &a[s], sizeof a[s]);
    }
}

#endif
