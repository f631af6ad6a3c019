"""The package namespace: every public name resolves, and functions win over same-named modules."""

import importlib
import types

import numpy as np
import pytest

import embq


@pytest.mark.parametrize("name", embq.__all__)
def test_every_public_name_resolves(name):
    assert getattr(embq, name) is not None


@pytest.mark.parametrize("name", ["quantize", "search", "compress", "export"])
def test_functions_named_like_submodules_stay_functions(name):
    importlib.import_module(f"embq.{name}")  # importing the submodule must not rebind the name
    assert not isinstance(getattr(embq, name), types.ModuleType)
    assert callable(getattr(embq, name))


def test_package_level_quantize_and_search_work_after_submodule_imports():
    import embq.quantize  # noqa: F401
    import embq.search  # noqa: F401

    x = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 3.0]], np.float32)
    q = embq.quantize(x)
    scores, idx = embq.search(q.codes, q.scales, x[0], k=1, metric="dot")
    assert idx.tolist() == [0]


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        embq.nope  # noqa: B018


def test_version_is_a_string():
    assert isinstance(embq.__version__, str) and embq.__version__.count(".") == 2
