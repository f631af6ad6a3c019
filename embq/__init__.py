"""embq: per-row uint8 quantization of embedding matrices, stored in HDF5, searched fast.

Most public names are imported lazily, so ``import embq`` stays cheap.  ``quantize``,
``search``, ``compress`` and ``export`` are imported at once because they share their names with
submodules: importing a submodule later binds the package
attribute to the module, so the functions must be bound after the submodules are loaded.  Reach
the modules themselves with ``from embq.search import ...`` or ``importlib.import_module``.
"""

from __future__ import annotations

import importlib
from typing import Any

from embq._version import __version__ as __version__
from embq.errors import DuplicateKeyError as DuplicateKeyError
from embq.errors import FormatError as FormatError
from embq.errors import StoreError as StoreError
from embq.compress import compress as compress
from embq.export import export as export
from embq.quantize import QuantizedRows as QuantizedRows
from embq.quantize import dequantize as dequantize
from embq.quantize import quantize as quantize
from embq.search import search as search

_LAZY = {
    "save": "embq.store",
    "open": "embq.store",
    "Store": "embq.store",
    "StoreWriter": "embq.store",
    "show_config": "embq._config",
    "open_embeddings": "embq.readers",
    "load_embeddings": "embq.readers",
    "detect_format": "embq.readers",
    "to_keyed_vectors": "embq.interop",
    "from_keyed_vectors": "embq.interop",
    "compare_with_original": "embq.evaluate",
}

__all__ = sorted([
    *_LAZY, "__version__", "FormatError", "StoreError", "DuplicateKeyError", "QuantizedRows",
    "dequantize", "quantize", "search", "compress", "export",
])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
