"""Build and CPU facts shared by all kernels: OpenMP availability, thread counts, CPU features."""

from embq._kernels_common cimport (
    embq_openmp_enabled, embq_omp_max_threads, embq_cpu_has_avx2, embq_cpu_has_avx512bw,
    embq_cpu_has_avx512vnni, embq_cpu_has_neon,
)


def openmp_enabled():
    """Return True when the kernels were compiled with OpenMP."""
    return bool(embq_openmp_enabled())


def max_threads():
    """Return the number of threads OpenMP would use by default (1 without OpenMP)."""
    return int(embq_omp_max_threads())


def cpu_features():
    """Return a dict of the SIMD features the run-time dispatch can use on this CPU."""
    return {
        "avx2": bool(embq_cpu_has_avx2()),
        "avx512bw": bool(embq_cpu_has_avx512bw()),
        "avx512vnni": bool(embq_cpu_has_avx512vnni()),
        "neon": bool(embq_cpu_has_neon()),
    }
