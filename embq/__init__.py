"""embq: per-row uint8 quantization of embedding matrices, stored in HDF5, searched fast.

The public names are imported lazily, so ``import embq`` stays cheap and a command such as
``embq info`` does not pay for the search kernels.
"""

from __future__ import annotations

import importlib
from typing import Any

from embq._version import __version__
from embq.errors import DuplicateKeyError, FormatError, StoreError

_LAZY = {
    "quantize": "embq.quantize",
    "dequantize": "embq.quantize",
    "QuantizedRows": "embq.quantize",
    "save": "embq.store",
    "open": "embq.store",
    "Store": "embq.store",
    "StoreWriter": "embq.store",
    "search": "embq.search",
    "show_config": "embq._config",
    "from_keyed_vectors": "embq.interop",
    "compare_with_original": "embq.evaluate",
}

__all__ = sorted([*_LAZY, "__version__", "FormatError", "StoreError", "DuplicateKeyError"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
