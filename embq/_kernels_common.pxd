# Declarations of the C helpers in _common.h, for cimport by every kernel module.
cdef extern from "_common.h" nogil:
    int embq_openmp_enabled()
    int embq_omp_max_threads()
    int embq_cpu_has_avx2()
    int embq_cpu_has_avxvnni()
    int embq_cpu_has_avx512bw()
    int embq_cpu_has_avx512vnni()
    int embq_cpu_has_neon()
    int embq_cpu_has_neondot()
    int EMBQ_X86
    int EMBQ_ARM64
    int EMBQ_V_PORTABLE
    int EMBQ_V_COUNT
    const char *embq_variant_names[]
    int embq_variant_runs(int v)
