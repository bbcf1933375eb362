// What the processor can do (CPUID) and what the operating system saves for it (XGETBV), for
// choosing OpenBLAS's kernels: the library's own detection falls back to SSE3 kernels on
// processors newer than it knows (Docs/Performance.md).
#ifndef QSHAPE_PROCESSOR_H
#define QSHAPE_PROCESSOR_H
#include <stdint.h>
#include <string.h>

enum {
    QS_CPU_AVX = 1u << 0, QS_CPU_AVX2 = 1u << 1, QS_CPU_FMA = 1u << 2,
    QS_CPU_AVX512F = 1u << 3, QS_CPU_AVX512BW = 1u << 4, QS_CPU_AVX512VL = 1u << 5,
    QS_CPU_AVX512DQ = 1u << 6, QS_CPU_AVX512CD = 1u << 7, QS_CPU_AVX512BF16 = 1u << 8,
    QS_CPU_AMX = 1u << 9,
    /// The OS saves the YMM (AVX) and ZMM/opmask (AVX-512) registers on a context switch.
    QS_CPU_OS_YMM = 1u << 10, QS_CPU_OS_ZMM = 1u << 11,
    /// vpdpwssd and friends (the integer engine's multiply-add).
    QS_CPU_AVX512VNNI = 1u << 12
};

/// The processor's hint that the caller is spinning on a memory location (`pause` on x86, `yield`
/// on Arm): it lets the other hardware thread of the core run, and leaves the loop without the
/// memory-order mis-speculation a plain spinning load costs when the location changes.
static inline void qs_spin_pause(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#if defined(__x86_64__)
#include <cpuid.h>

static inline uint32_t qs_cpu_features(void) {
    unsigned a, b, c, d;
    uint32_t f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1;
    if ((c >> 28) & 1) f |= QS_CPU_AVX;
    if ((c >> 12) & 1) f |= QS_CPU_FMA;
    if (osxsave) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        if ((lo & 0x6) == 0x6) f |= QS_CPU_OS_YMM;
        if ((lo & 0xE6) == 0xE6) f |= QS_CPU_OS_ZMM;
    }
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if ((b >> 5) & 1) f |= QS_CPU_AVX2;
        if ((b >> 16) & 1) f |= QS_CPU_AVX512F;
        if ((b >> 17) & 1) f |= QS_CPU_AVX512DQ;
        if ((b >> 28) & 1) f |= QS_CPU_AVX512CD;
        if ((b >> 30) & 1) f |= QS_CPU_AVX512BW;
        if ((b >> 31) & 1) f |= QS_CPU_AVX512VL;
        if ((c >> 11) & 1) f |= QS_CPU_AVX512VNNI;
        if ((d >> 24) & 1) f |= QS_CPU_AMX;
        unsigned a1, b1, c1, d1;
        if (a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && ((a1 >> 5) & 1)) f |= QS_CPU_AVX512BF16;
    }
    return f;
}

/// "GenuineIntel", "AuthenticAMD", …: 13 bytes with the terminating zero.
static inline void qs_cpu_vendor(char out[13]) {
    unsigned a, b, c, d;
    memset(out, 0, 13);
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    memcpy(out, &b, 4); memcpy(out + 4, &d, 4); memcpy(out + 8, &c, 4);
}

/// Family and model as Intel and AMD define them (extended fields folded in).
static inline void qs_cpu_family_model(int *family, int *model) {
    unsigned a, b, c, d;
    *family = 0; *model = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int fam = (a >> 8) & 0xF, mod = (a >> 4) & 0xF;
    if (fam == 0xF) fam += (a >> 20) & 0xFF;
    if (fam == 0x6 || fam >= 0xF) mod += ((a >> 16) & 0xF) << 4;
    *family = fam; *model = mod;
}

/// The brand string ("Intel(R) Xeon(R) …"): 49 bytes with the terminating zero.
static inline void qs_cpu_brand(char out[49]) {
    unsigned r[12];
    memset(out, 0, 49);
    for (unsigned i = 0; i < 3; i++) {
        if (!__get_cpuid(0x80000002 + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3])) return;
    }
    memcpy(out, r, 48);
}
#else
static inline uint32_t qs_cpu_features(void) { return 0; }
static inline void qs_cpu_vendor(char out[13]) { memset(out, 0, 13); }
static inline void qs_cpu_family_model(int *family, int *model) { *family = 0; *model = 0; }
static inline void qs_cpu_brand(char out[49]) { memset(out, 0, 49); }
#endif
#endif
