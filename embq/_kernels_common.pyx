"""Build and CPU facts shared by all kernels: OpenMP availability, thread counts, CPU features,
and the one table of kernel variant names (``_common.h``)."""

from embq._kernels_common cimport (
    EMBQ_V_COUNT, embq_cpu_has_avx2, embq_cpu_has_avx512bw, embq_cpu_has_avx512vnni,
    embq_cpu_has_avxvnni, embq_cpu_has_neon, embq_cpu_has_neondot, embq_omp_max_threads,
    embq_openmp_enabled, embq_variant_names, embq_variant_runs,
)

# Every kernel variant name, in order of preference (a family runs the last one it has that the
# CPU supports); the position of a name is its id in the C dispatch tables.
VARIANTS = tuple(embq_variant_names[i].decode("ascii") for i in range(EMBQ_V_COUNT))


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
        "avxvnni": bool(embq_cpu_has_avxvnni()),
        "avx512bw": bool(embq_cpu_has_avx512bw()),
        "avx512vnni": bool(embq_cpu_has_avx512vnni()),
        "neon": bool(embq_cpu_has_neon()),
        "neondot": bool(embq_cpu_has_neondot()),
    }


def variant_runs(name):
    """Return True when this CPU can run kernel variant ``name`` (one of ``VARIANTS``)."""
    return bool(embq_variant_runs(VARIANTS.index(name)))
