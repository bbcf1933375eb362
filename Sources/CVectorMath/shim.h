// Lane-wise vector operations that Swift's SIMD types do lane by lane: SIMD16<Float>.squareRoot()
// becomes sixteen scalar square roots with the lanes moved in and out, which made it the slowest
// part of the Adam step. A clang vector type imports into Swift as SIMD16<Float>, and the builtin
// lowers to the vector instruction of the target (sqrtps, vsqrtps): IEEE-exact, like the scalar one.
#ifndef QSHAPE_VECTOR_MATH_H
#define QSHAPE_VECTOR_MATH_H

typedef float qs_float16 __attribute__((ext_vector_type(16)));
typedef unsigned qs_uint16 __attribute__((ext_vector_type(16)));

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

// y (≥ +0) with x's sign bit.
static inline qs_float16 qs_with_sign16(qs_float16 y, qs_float16 x) {
    return (qs_float16)((qs_uint16)y | ((qs_uint16)x & 0x80000000u));
}

// Rounding to the nearest integer, ties away from zero (the deployed rounding), with no branch,
// for |x| < 2²² as above: x + copysign(0.49999997, x) truncated. The addend is the Float just
// below ½, so every x that is not a tie stays below the next half-integer once the sum is
// rounded, and a tie reaches the integer away from zero. Where truncation is not one instruction
// (the x86-64 baseline), the nearest-even rounding above with its ties moved away from zero: the
// same integers, signs of zero included, either way (checked against roundf on 16 million values,
// ±0 among them, in both builds).
static inline qs_float16 qs_round_away16(qs_float16 x) {
#if defined(__SSE4_1__) || defined(__aarch64__)
    qs_float16 below_half = 0x1.fffffep-2f;
    return __builtin_elementwise_trunc(x + qs_with_sign16(below_half, x));
#else
    typedef int qs_int16 __attribute__((ext_vector_type(16)));
    qs_float16 r = qs_round_even16(x), d = x - r;
    qs_int16 up = (d == 0.5f) & (x > 0), down = (d == -0.5f) & (x < 0);  // -1 where true
    r = r - __builtin_convertvector(up, qs_float16) + __builtin_convertvector(down, qs_float16);
    return qs_with_sign16(r, x);  // as truncation does: the additions leave +0 for -0.3 or -0
#endif
}

// a·b + c, lane-wise and for one value: rounded once (vfmadd) where the target has FMA, else
// rounded twice. The builtins would call fmaf per lane on the x86-64 baseline, several times slower
// than the two instructions; so a baseline build's shaping gradients may differ from a native
// build's in the last bit, as they may from one processor to another.
#if defined(__FMA__) || defined(__aarch64__)
static inline qs_float16 qs_fma16(qs_float16 a, qs_float16 b, qs_float16 c) { return __builtin_elementwise_fma(a, b, c); }
static inline float qs_fma1(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#else
static inline qs_float16 qs_fma16(qs_float16 a, qs_float16 b, qs_float16 c) { return a * b + c; }
static inline float qs_fma1(float a, float b, float c) { return a * b + c; }
#endif

// Whether any lane of x is ≥ (or ==) the same lane of t: one vector comparison and an OR across
// the lanes (vptest, kortest). Swift's any() of a 16-lane mask became a call of the generic
// SIMD16<Int32>.min() per vector in AVX2 builds: the most expensive part of the quantisation-error
// pass there. IEEE comparisons, as Swift's .>= and .==.
static inline int qs_any_ge16(qs_float16 x, qs_float16 t) { return __builtin_reduce_or(x >= t) != 0; }
static inline int qs_any_eq16(qs_float16 x, qs_float16 t) { return __builtin_reduce_or(x == t) != 0; }

// The ReLU and 2×2 max pooling after a convolution (NeuralNet's ConvEpilogue), a row of windows
// at a time, eight windows per vector: clang's vector selects become blends, where Swift's
// branches on every comparison were mispredicted. The expressions are the Swift layers': the
// clamp is min(max(v, 0), cap) as Swift writes it, (0 >= v ? 0 : v) then (cap < v ? cap : v), so
// NaN stays NaN and −0 becomes +0; the first of equal maxima wins.
typedef float qs_float8 __attribute__((ext_vector_type(8)));
typedef int qs_int8 __attribute__((ext_vector_type(8)));
typedef unsigned char qs_uchar8 __attribute__((ext_vector_type(8)));

// The clamp of v + b (a macro, for the same reason).
#define QS_CLAMP8(v, b, cap) \
    ({ qs_float8 u_ = (v) + (b); u_ = 0.0f >= u_ ? (qs_float8)0.0f : u_; (cap) < u_ ? (qs_float8)(cap) : u_; })

// Eight windows: y[j] = the largest of window j's four clamped values (t0[2j], t0[2j+1], t1[2j],
// t1[2j+1], t0 and t1 its two rows); codes[j] = its position 0–3, or 4 where the maximum is 0 or
// the cap (no gradient passes). Vectors go by pointer: by value an SSE build warns of their ABI.
static inline void qs_relu_pool2x2_8(const qs_float16 *r0, const qs_float16 *r1, float b, float cap,
                                     qs_float8 *y, qs_uchar8 *codes) {
    qs_float16 t0 = *r0, t1 = *r1;
    qs_float8 best = QS_CLAMP8(t0.even, b, cap), v;
    qs_int8 k = 0, m;
    v = QS_CLAMP8(t0.odd, b, cap); m = v > best; best = m ? v : best; k = m ? 1 : k;
    v = QS_CLAMP8(t1.even, b, cap); m = v > best; best = m ? v : best; k = m ? 2 : k;
    v = QS_CLAMP8(t1.odd, b, cap); m = v > best; best = m ? v : best; k = m ? 3 : k;
    k = ((best > 0.0f) & (best < cap)) ? k : 4;
    *y = best;
    *codes = __builtin_convertvector(k, qs_uchar8);
}

// Copies n < 16 floats (or bytes) in pieces of constant size: a variable-length memcpy is a call,
// which in the rows' tails cost more than the windows.
static inline void qs_copy_floats(float *dst, const float *src, long n) {
    if (n & 8) { __builtin_memcpy(dst, src, 32); dst += 8; src += 8; }
    if (n & 4) { __builtin_memcpy(dst, src, 16); dst += 4; src += 4; }
    if (n & 2) { __builtin_memcpy(dst, src, 8); dst += 2; src += 2; }
    if (n & 1) *dst = *src;
}

static inline void qs_copy_bytes(unsigned char *dst, const unsigned char *src, long n) {
    if (n & 8) { __builtin_memcpy(dst, src, 8); dst += 8; src += 8; }
    if (n & 4) { __builtin_memcpy(dst, src, 4); dst += 4; src += 4; }
    if (n & 2) { __builtin_memcpy(dst, src, 2); dst += 2; src += 2; }
    if (n & 1) *dst = *src;
}

// n ≤ 8 floats from p in the low lanes, 0 in the others, reading nothing past p + n. Where the
// target has AVX, a masked load (vmaskmovps: masked-off lanes are not read and cannot fault).
// Elsewhere the copies above into a zeroed vector, whose load then waits: it spans several
// smaller stores, which the processor cannot forward to it (on Zen 3 that stall was a fifth of
// the convolution's fused epilogue, whose rows of 14 and 28 values all end in such a tail).
static inline void qs_load_floats8(const float *p, long n, qs_float8 *out) {
#if defined(__AVX__)
    const qs_int8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    *out = (qs_float8)__builtin_ia32_maskloadps256((const qs_float8 *)p, (qs_int8)(lane < (int)n));
#else
    *out = 0.0f;
    qs_copy_floats((float *)out, p, n);
#endif
}

// The same for n < 16 floats, as two halves.
static inline void qs_load_floats16(const float *p, long n, qs_float16 *out) {
    qs_float8 a, b;
    qs_load_floats8(p, n < 8 ? n : 8, &a);
    qs_load_floats8(p + 8, n > 8 ? n - 8 : 0, &b);
    *out = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// n < 8 bytes from p in the low lanes, `fill` in the others: assembled in a register from loads of
// 4, 2 and 1 bytes (no vector load of a partly written buffer, see above).
static inline void qs_load_bytes8(const unsigned char *p, long n, unsigned char fill, qs_uchar8 *out) {
    unsigned long long v = 0, shift = 0;
    if (n & 4) { unsigned x; __builtin_memcpy(&x, p, 4); v = x; p += 4; shift = 32; }
    if (n & 2) { unsigned short x; __builtin_memcpy(&x, p, 2); v |= (unsigned long long)x << shift; p += 2; shift += 16; }
    if (n & 1) { v |= (unsigned long long)*p << shift; shift += 8; }
    v |= (0x0101010101010101ull * fill) & ~((1ull << shift) - 1);  // shift < 64: n < 8
    __builtin_memcpy(out, &v, sizeof *out);
}

// A row of pw windows from rows r0 and r1 (2·pw values each); the last pw % 8 are loaded and
// stored in parts, so that nothing past the rows is read or written.
static inline void qs_relu_pool2x2_row(const float *r0, const float *r1, long pw, float b, float cap,
                                       float *y, unsigned char *codes) {
    long j = 0;
    qs_float8 best;
    qs_uchar8 c;
    for (; j + 8 <= pw; j += 8) {
        qs_float16 t0, t1;
        __builtin_memcpy(&t0, r0 + 2 * j, sizeof t0);
        __builtin_memcpy(&t1, r1 + 2 * j, sizeof t1);
        qs_relu_pool2x2_8(&t0, &t1, b, cap, &best, &c);
        __builtin_memcpy(y + j, &best, sizeof best);
        __builtin_memcpy(codes + j, &c, sizeof c);
    }
    long rest = pw - j;
    if (rest == 0) return;
    qs_float16 t0, t1;
    qs_load_floats16(r0 + 2 * j, 2 * rest, &t0);
    qs_load_floats16(r1 + 2 * j, 2 * rest, &t1);
    qs_relu_pool2x2_8(&t0, &t1, b, cap, &best, &c);
    qs_copy_floats(y + j, (const float *)&best, rest);
    qs_copy_bytes(codes + j, (const unsigned char *)&c, rest);
}

// The adjoint for eight windows: each window's gradient g[j] to the position codes[j] names, 0 to
// the other three (and to all four where the code is 4); top and bottom are the two rows.
static inline void qs_pool2x2_gradient_8(const qs_float8 *gp, const qs_uchar8 *cp, qs_float16 *top,
                                         qs_float16 *bottom) {
    qs_float8 g = *gp;
    qs_int8 k = __builtin_convertvector(*cp, qs_int8);
    qs_float8 z = 0.0f;
    qs_float8 e0 = k == 0 ? g : z, e1 = k == 1 ? g : z, e2 = k == 2 ? g : z, e3 = k == 3 ? g : z;
    *top = __builtin_shufflevector(e0, e1, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    *bottom = __builtin_shufflevector(e2, e3, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
}

static inline void qs_pool2x2_gradient_row(const float *dy, const unsigned char *codes, long pw,
                                           float *r0, float *r1) {
    long j = 0;
    qs_float16 top, bottom;
    for (; j + 8 <= pw; j += 8) {
        qs_float8 g;
        qs_uchar8 c8;
        __builtin_memcpy(&g, dy + j, sizeof g);
        __builtin_memcpy(&c8, codes + j, sizeof c8);
        qs_pool2x2_gradient_8(&g, &c8, &top, &bottom);
        __builtin_memcpy(r0 + 2 * j, &top, sizeof top);
        __builtin_memcpy(r1 + 2 * j, &bottom, sizeof bottom);
    }
    long rest = pw - j;
    if (rest == 0) return;
    qs_float8 g;
    qs_uchar8 c8;
    qs_load_floats8(dy + j, rest, &g);
    qs_load_bytes8(codes + j, rest, 4, &c8);
    qs_pool2x2_gradient_8(&g, &c8, &top, &bottom);
    qs_copy_floats(r0 + 2 * j, (const float *)&top, 2 * rest);
    qs_copy_floats(r1 + 2 * j, (const float *)&bottom, 2 * rest);
}

// Asks for the n bytes from p to be brought into the cache ahead of use, a line (64 bytes) at a
// time: a hint, which cannot fault. The next random row of a batch while this one is converted.
static inline void qs_prefetch(const void *p, long n) {
    for (long k = 0; k < n; k += 64) __builtin_prefetch((const char *)p + k);
}

#endif
