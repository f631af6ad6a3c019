"""Thread-count handling shared by every kernel front end."""

import os

import numpy as np
import pytest

from embq import _kernels_common
from embq._utils import effective_n_threads


def test_none_means_all_threads():
    expected = _kernels_common.max_threads() if _kernels_common.openmp_enabled() else 1
    assert effective_n_threads(None) == expected


def test_negative_counts_back_and_never_below_one():
    if not _kernels_common.openmp_enabled():
        pytest.skip("single-threaded build always answers 1")
    top = _kernels_common.max_threads()
    assert effective_n_threads(-1) == top
    assert effective_n_threads(-2) == max(1, top - 1)
    assert effective_n_threads(-1000) == 1


def test_positive_is_kept():
    cap = max(_kernels_common.max_threads(), len(os.sched_getaffinity(0)))
    expected = min(3, cap) if _kernels_common.openmp_enabled() else 1
    assert effective_n_threads(3) == expected
    assert effective_n_threads(np.int64(3)) == expected


def test_count_is_capped_at_the_cpus():
    # 10**6 threads would make the OpenMP runtime abort the process, not raise.
    if not _kernels_common.openmp_enabled():
        pytest.skip("single-threaded build always answers 1")
    cap = max(_kernels_common.max_threads(), len(os.sched_getaffinity(0)))
    assert effective_n_threads(10**6) == cap
    assert effective_n_threads(10**30) == cap


def test_bool_is_not_a_thread_count():
    with pytest.raises(TypeError, match="got bool"):
        effective_n_threads(True)


def test_zero_is_an_error():
    with pytest.raises(ValueError, match="n_threads=0"):
        effective_n_threads(0)


@pytest.mark.parametrize("bad", [1.5, "2", [1]])
def test_non_integer_is_a_type_error(bad):
    with pytest.raises(TypeError, match="n_threads must be an int or None"):
        effective_n_threads(bad)


def test_cpu_features_are_booleans():
    feats = _kernels_common.cpu_features()
    assert set(feats) == {"avx2", "avxvnni", "avx512bw", "avx512vnni", "neon", "neondot"}
    assert all(isinstance(v, bool) for v in feats.values())
    # AVX-512 VNNI implies AVX-512 BW in the dispatch rules.
    assert not feats["avx512vnni"] or feats["avx512bw"]


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"),
                                     (1_950_113, "2.0 MB"), (2.1e9, "2.1 GB"), (5e15, "5000.0 TB")])
def test_human_bytes(n, text):
    from embq._utils import human_bytes

    assert human_bytes(n) == text


def test_size_ratio_says_smaller_or_larger():
    from embq._utils import size_ratio

    assert size_ratio(2_000_000, 365_000) == "5.48x smaller"
    assert size_ratio(1000, 1000, "float32") == "1.00x smaller than float32"
    assert size_ratio(29, 11_900) == "410x larger"
    assert size_ratio(10, 15) == "1.5x larger"
    assert size_ratio(0, 10) == "size not comparable"
