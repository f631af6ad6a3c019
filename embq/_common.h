/* Helpers shared by every embq kernel module: run-time CPU checks and OpenMP queries.
 *
 * Kernels are compiled without -march flags; SIMD variants carry
 * __attribute__((target("..."))) and are chosen through these checks, so one build is
 * correct on any CPU of its architecture. */
#ifndef EMBQ_COMMON_H
#define EMBQ_COMMON_H

#ifdef _OPENMP
#include <omp.h>
static inline int embq_openmp_enabled(void) { return 1; }
static inline int embq_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int embq_openmp_enabled(void) { return 0; }
static inline int embq_omp_max_threads(void) { return 1; }
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define EMBQ_X86 1
#else
#define EMBQ_X86 0
#endif

#if defined(__aarch64__) || defined(_M_ARM64)
#define EMBQ_ARM64 1
#else
#define EMBQ_ARM64 0
#endif

/* GCC and clang both provide __builtin_cpu_supports on x86; the feature names below are the
 * ones both accept.  Other compilers get the portable paths. */
#if EMBQ_X86 && (defined(__GNUC__) || defined(__clang__))
#define EMBQ_HAVE_X86_DISPATCH 1
static inline int embq_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static inline int embq_cpu_has_avx512bw(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl");
}
static inline int embq_cpu_has_avx512vnni(void) {
    __builtin_cpu_init();
    return embq_cpu_has_avx512bw() && __builtin_cpu_supports("avx512vnni");
}
#else
#define EMBQ_HAVE_X86_DISPATCH 0
static inline int embq_cpu_has_avx2(void) { return 0; }
static inline int embq_cpu_has_avx512bw(void) { return 0; }
static inline int embq_cpu_has_avx512vnni(void) { return 0; }
#endif

/* NEON is part of the AArch64 baseline, so no run-time check is needed there.  The dot-product
 * instructions (SDOT, Armv8.2) are optional: Linux reports them in the hardware capability bits;
 * elsewhere the SDOT kernels are not built. */
#if EMBQ_ARM64 && defined(__ARM_NEON) && defined(__GNUC__)
#define EMBQ_HAVE_NEON 1
#include <arm_neon.h>
#else
#define EMBQ_HAVE_NEON 0
#endif

#if EMBQ_HAVE_NEON && defined(__linux__)
#define EMBQ_HAVE_NEONDOT 1
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
static inline int embq_cpu_has_neondot(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
#else
#define EMBQ_HAVE_NEONDOT 0
static inline int embq_cpu_has_neondot(void) { return 0; }
#endif

static inline int embq_cpu_has_neon(void) { return EMBQ_HAVE_NEON; }

static inline int embq_cpu_has_avxvnni(void) {
#if EMBQ_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    return embq_cpu_has_avx2() && __builtin_cpu_supports("avxvnni");
#else
    return 0;
#endif
}

/* Kernel variants: one name per instruction set, shared by every kernel family (quantize,
 * search_dot, search_select, ...), and the one place that says whether this CPU can run each.
 * A family implements some of them (its dispatch table returns NULL for the others); the id
 * order is the order of preference, so a family runs the highest id it implements and the CPU
 * supports.  The names are the ones EMBQ_KERNELS and embq.show_config() use. */
#define EMBQ_V_PORTABLE 0
#define EMBQ_V_AVX2 1
#define EMBQ_V_AVXVNNI 2
#define EMBQ_V_AVX512 3
#define EMBQ_V_AVX512VNNI 4
#define EMBQ_V_NEON 5
#define EMBQ_V_NEONDOT 6
#define EMBQ_V_COUNT 7

static const char *const embq_variant_names[EMBQ_V_COUNT] = {
    "portable", "avx2", "avxvnni", "avx512", "avx512vnni", "neon", "neondot",
};

static inline int embq_variant_runs(int v) {
    switch (v) {
    case EMBQ_V_PORTABLE: return 1;
    case EMBQ_V_AVX2: return embq_cpu_has_avx2();
    case EMBQ_V_AVXVNNI: return embq_cpu_has_avxvnni();
    case EMBQ_V_AVX512: return embq_cpu_has_avx512bw();
    case EMBQ_V_AVX512VNNI: return embq_cpu_has_avx512vnni();
    case EMBQ_V_NEON: return embq_cpu_has_neon();
    case EMBQ_V_NEONDOT: return embq_cpu_has_neondot();
    default: return 0;
    }
}

#endif /* EMBQ_COMMON_H */
