// The integer engine's dense kernel: sixteen output rows for eight samples at once, in clang's and
// GCC's generic vector types. Integers only (the float-free test compiles this header with
// -mgeneral-regs-only, and finds no floating-point type in clang's syntax tree of it). Swift's
// SIMD types cannot express a 16×16→32-bit pairwise multiply-add (their widening conversions go
// lane by lane through memory); this form is the pattern the compiler lowers to pmaddwd /
// vpmaddwd / vpdpwssd, or to plain multiplies on other targets.
#ifndef QSHAPE_INTEGER_KERNELS_H
#define QSHAPE_INTEGER_KERNELS_H

#include <stdint.h>
#include <string.h>

typedef int16_t qs_i16x32 __attribute__((vector_size(64)));
typedef int32_t qs_i32x32 __attribute__((vector_size(128)));
typedef uint32_t qs_u32x16 __attribute__((vector_size(64)));

// acc[i] += w[2i]·x[0] + w[2i+1]·x[1], wrapping in 32 bits: the pair x[0], x[1] broadcast to
// every 32-bit lane, the products widened and multiplied lane by lane (no product of two int16
// overflows int32), then the even and odd lanes added as unsigned (the multiply-add instruction's
// wrapping rule). Written this way, clang emits one pmaddwd, vpmaddwd or vpdpwssd; split into
// even and odd halves first, it did not. Vectors go by pointer (no vector in the signature), so
// every instruction set's kernel below can inline it.
static inline __attribute__((always_inline)) void qs_madd_pair(qs_u32x16 *acc, const qs_i16x32 *w,
                                                               const int16_t *x) {
    uint32_t pair;
    memcpy(&pair, x, sizeof pair);
    qs_i16x32 b = (qs_i16x32)((qs_u32x16){0} + pair);
    qs_i32x32 p = __builtin_convertvector(*w, qs_i32x32) * __builtin_convertvector(b, qs_i32x32);
    *acc += (qs_u32x16)__builtin_shufflevector(p, p, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
            (qs_u32x16)__builtin_shufflevector(p, p, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
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

// out[s·out_stride + r] (wrapping int32) = Σ_k W[r, k]·x_s[k] for the sixteen rows r of one block
// and eight samples s, over `pairs` pairs of k. `w` is the block packed as [pairs][16 rows][2]; sample
// s starts at x + s·stride and holds 2·pairs values. The samples go `pass` at a time: as many
// accumulators as the vector registers hold without spilling (a 16-lane vector is one register
// with AVX-512, two with AVX2, four with SSE2, which has sixteen registers in all); the block is
// read again from the first-level cache for the next ones. Every sum is taken in the same order
// whatever `pass` is.
#define QS_KERNEL_SIGNATURE const int16_t *w, const int16_t *x, long stride, long pairs, int32_t *out, long out_stride
#define QS_DEFINE_DENSE16X8(name, target, pass)                                                               \
    target static inline void name(QS_KERNEL_SIGNATURE) {                                                      \
        for (int first = 0; first < 8; first += (pass)) {                                                      \
            qs_u32x16 a[(pass)] = {{0}};                                                                       \
            for (long k = 0; k < pairs; k++) {                                                                 \
                qs_i16x32 wk;                                                                                  \
                memcpy(&wk, w + 32 * k, sizeof wk);                                                            \
                _Pragma("GCC unroll 8") for (int s = 0; s < (pass); s++)                                       \
                    qs_madd_pair(&a[s], &wk, x + (first + s) * stride + 2 * k);                                \
            }                                                                                                  \
            for (int s = 0; s < (pass); s++) memcpy(out + (first + s) * out_stride, &a[s], sizeof a[s]);       \
        }                                                                                                      \
    }

// The kernel once per instruction set, each compiled for its own (a target attribute), so that a
// binary built for any x86-64 still multiplies with the widest instructions the processor has:
// level 0 the build's own target (SSE2 on the x86-64 baseline), 1 AVX2 (vpmaddwd on 256 bits),
// 2 AVX-512BW (vpmaddwd on 512), 3 AVX-512 VNNI (vpdpwssd). The caller picks a level the
// processor has (IntegerEngine.kernelLevel). One body (the macro above) for all.
QS_DEFINE_DENSE16X8(qs_dense16x8_base, , 2)
#if defined(__x86_64__)
QS_DEFINE_DENSE16X8(qs_dense16x8_avx2, __attribute__((target("avx2"))), 4)
QS_DEFINE_DENSE16X8(qs_dense16x8_avx512, __attribute__((target("avx512f,avx512bw,avx512vl"))), 8)
QS_DEFINE_DENSE16X8(qs_dense16x8_vnni, __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))), 8)
#endif

// The kernel at `level` (0…3, see above; anything else, or any level off x86-64, is level 0).
static inline void qs_dense16x8(QS_KERNEL_SIGNATURE, int level) {
#if defined(__x86_64__)
    switch (level) {
    case 3: qs_dense16x8_vnni(w, x, stride, pairs, out, out_stride); return;
    case 2: qs_dense16x8_avx512(w, x, stride, pairs, out, out_stride); return;
    case 1: qs_dense16x8_avx2(w, x, stride, pairs, out, out_stride); return;
    default: break;
    }
#endif
    (void)level;
    qs_dense16x8_base(w, x, stride, pairs, out, out_stride);
}

#endif
