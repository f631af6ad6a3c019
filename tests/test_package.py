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
    import embq._quantize  # noqa: F401
    import embq._search  # noqa: F401

    x = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], np.float32)
    q = embq.quantize(x)
    scores, idx = embq.search(q.codes, q.scales, x[0], k=1, metric="dot")
    assert idx.tolist() == [0]


def test_import_embq_loads_no_implementation_module(run_python):
    code = ("import sys, embq; "
            "print(sorted(m for m in sys.modules if m.startswith('embq.') and m != 'embq._version'))")
    proc = run_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        embq.nope  # noqa: B018


def test_version_is_a_string():
    assert isinstance(embq.__version__, str) and embq.__version__.count(".") == 2
