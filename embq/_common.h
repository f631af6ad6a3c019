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

/* NEON is part of the AArch64 baseline, so no run-time check is needed there. */
static inline int embq_cpu_has_neon(void) { return EMBQ_ARM64; }

#endif /* EMBQ_COMMON_H */
