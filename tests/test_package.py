"""The package namespace: every public name resolves, and no public name is a module."""

import types

import numpy as np
import pytest

import embq


@pytest.mark.parametrize("name", embq.__all__)
def test_every_public_name_resolves(name):
    assert getattr(embq, name) is not None


@pytest.mark.parametrize("name", embq.__all__)
def test_no_public_name_is_a_module(name):
    assert not isinstance(getattr(embq, name), types.ModuleType)


@pytest.mark.parametrize("name", ["quantize", "search", "compress", "export", "open", "save"])
def test_public_functions_have_no_module_of_their_name(name):
    import importlib.util

    assert importlib.util.find_spec(f"embq.{name}") is None


def test_package_level_quantize_and_search_work_after_the_private_modules_load():
    import embq._quantize
    import embq._search

    x = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], np.float32)
    q = embq.quantize(x)
    _scores, idx = embq.search(q.codes, q.scales, x[0], k=1, metric="dot")
    assert idx.tolist() == [0]


def test_import_embq_loads_no_implementation_module(run_python):
    code = ("import sys, embq; "
            "print(sorted(m for m in sys.modules "
            "if m.startswith('embq.') and m != 'embq._version'))")
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        embq.nope  # noqa: B018


def test_version_is_a_string():
    assert isinstance(embq.__version__, str) and embq.__version__.count(".") == 2


# ------------------------------------------------------------------------------------------
# kernel families and variants (embq._config): one naming, one way to force them

def _fresh_selection(run_python, spec):
    """The kernels a fresh interpreter selects with EMBQ_KERNELS=spec, and its stderr."""
    import json
    import os

    code = "import json; from embq import _config; print(json.dumps(_config.selected_kernels()))"
    env = dict(os.environ, EMBQ_KERNELS=spec, PYTHONWARNINGS="default")
    proc = run_python("-c", code, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_every_family_has_one_module_and_a_portable_variant():
    import importlib

    from embq import _config, _kernels_common

    available = _config.available_kernels()
    assert list(available) == list(_config.FAMILIES)
    for family, module in _config.FAMILIES.items():
        variants = importlib.import_module(module).kernel_variants()[family]
        assert next(iter(variants)) == "portable" and variants["portable"]
        assert set(variants) <= set(_kernels_common.VARIANTS)
        # Preference order is the order of the one table of variant names.
        order = [_kernels_common.VARIANTS.index(v) for v in variants]
        assert order == sorted(order)
        assert available[family] == [v for v, runs in variants.items() if runs]
        assert all(_kernels_common.variant_runs(v) for v in available[family])


def test_set_kernels_forces_restores_and_refuses_atomically():
    from embq import _config

    best = {family: names[-1] for family, names in _config.available_kernels().items()}
    before = _config.set_kernels("auto")
    try:
        assert _config.selected_kernels() == best
        prev = _config.set_kernels("portable")
        assert prev == best
        assert set(_config.selected_kernels().values()) == {"portable"}
        _config.set_kernels({"search": "auto"})  # a group: both search families
        sel = _config.selected_kernels()
        for family in ("search_dot", "search_select"):
            assert sel[family] == best[family]
        assert sel["quantize"] == "portable"
        _config.set_kernels("quantize=auto, search_dot=portable")
        assert _config.selected_kernels()["quantize"] == best["quantize"]
        assert _config.selected_kernels()["search_dot"] == "portable"
        snapshot = _config.selected_kernels()
        for bad, message in [
            ("sse9", r"unknown kernel variant 'sse9'; the variants are auto, portable, avx2"),
            ("serach=portable", r"unknown kernel family 'serach'; the families are quantize"),
            ("parse=avx2", r"parse has no kernel variant 'avx2' .*\(available: portable\)"),
            ("quantize=portable,quantize=", r"'quantize=' names no variant"),
        ]:
            with pytest.raises(ValueError, match=message):
                _config.set_kernels(bad)
            assert _config.selected_kernels() == snapshot  # nothing half-applied
        with pytest.raises(TypeError, match="str or a mapping"):
            _config.set_kernels(3)
    finally:
        _config.set_kernels(before)
    assert _config.selected_kernels() == before


def test_env_forces_every_family_or_some(run_python):
    from embq import _config

    available = _config.available_kernels()
    sel, err = _fresh_selection(run_python, "portable")
    assert sel == {family: "portable" for family in available}
    assert "Warning" not in err
    sel, err = _fresh_selection(run_python, " Search = portable ")
    assert sel["search_dot"] == sel["search_select"] == "portable"
    assert sel["quantize"] == available["quantize"][-1]
    assert "Warning" not in err


def test_env_unusable_names_warn_and_keep_the_best(run_python):
    from embq import _config

    available = _config.available_kernels()
    sel, err = _fresh_selection(run_python, "quantize=sse9,search_dot=portable,nofamily=avx2")
    assert sel["quantize"] == available["quantize"][-1]
    assert sel["search_dot"] == "portable"  # the usable part still applies
    assert "RuntimeWarning: EMBQ_KERNELS='quantize=sse9,search_dot=portable,nofamily=avx2': " \
           "unknown kernel variant 'sse9'; the variants are auto, portable" in err
    assert "unknown kernel family 'nofamily'; the families are quantize, search_dot" in err
    missing = next(v for v in ("avx2", "neon") if v not in available["quantize"])
    sel, err = _fresh_selection(run_python, f"quantize={missing}")
    assert sel["quantize"] == available["quantize"][-1]
    assert (f"quantize has no kernel variant '{missing}' that this CPU and build can run "
            f"(available: {', '.join(available['quantize'])}); using the best variant") in err


def test_show_config_names_family_and_variant():
    import io

    from embq import _config

    buf = io.StringIO()
    _config.show_config(buf)
    text = buf.getvalue()
    for family, variant in _config.selected_kernels().items():
        assert f"    {family}: {variant}  (available: " in text
    cfg = _config.config()
    assert cfg["kernels"] == _config.selected_kernels()
    assert cfg["kernels_available"] == _config.available_kernels()
