"""embq: per-row uint8 quantization of embedding matrices, stored in HDF5, searched fast.

Where everything is
-------------------
Every public name is defined in a private module and re-exported here; no public function
shares its name with a module, so imports never depend on their order.

* ``_quantize``   -- :func:`quantize`, :func:`dequantize`: float rows <-> uint8 codes and scales
  (the kernels: ``_kernels_quant.pyx`` over ``_quant.h``, the one definition of the arithmetic,
  with the reconstruction-error kernel); ``_recon`` sums those errors block by block.
* ``_config``     -- :func:`show_config`, and the one way to list and force kernel variants
  (``EMBQ_KERNELS``, ``set_kernels``) over the one table in ``_common.h``.
* ``_store``      -- :func:`save`, :class:`StoreWriter`, :class:`Store`: the HDF5 file (layout
  and what is verified at open in ``docs/format.md``), its key hash table and lookups.
* ``_source``     -- the ``source_*`` attributes compress records and compare reads back, and
  the reader options both take.
* ``_sharded``    -- :func:`open` (a store file or a sharded store directory) and
  :class:`ShardedStore`: shards read as one store, searched here or on a Dask cluster
  (``client=``); ``_manifest`` is the directory's ``manifest.json``.
* ``_dist_search`` -- the per-shard search, the merge of top lists, and the Dask tasks
  (workers import them from here and open their shard by path).
* ``_input``      -- opening files: gzip/bz2/xz detection by whole magic, pipes, damaged and
  trailing data; every reader (embeddings, pair and analogy files) goes through it.
* ``_readers``    -- :func:`open_embeddings`, :func:`load_embeddings`, :func:`detect_format`:
  word2vec text and binary, GloVe, fastText ``.vec``, ``.npy``, streamed in blocks, and the
  dispatch (``_formats``) to ``_read_safetensors``, ``_read_npz``, ``_read_arrow`` (Parquet,
  Arrow, Hugging Face datasets) over ``_read_common``; ``_keys`` reads keys files and
  ``tokenizer.json``.
* ``_compress``, ``_export`` -- :func:`compress` (a file to a store) and :func:`export` (back;
  ``_write_formats`` writes Parquet and safetensors and builds ``Store.to_arrow``).
* ``_dist_compress`` -- the sharded :func:`compress` (several inputs, ``shard_rows``, a Dask
  ``client``); ``_reshard`` -- :func:`shard` (a store to a sharded store), :func:`merge` (back).
* ``_search``     -- :func:`search`, :func:`allow_list` (an :class:`AllowList` checked once
  for many searches) and the gensim-style ``most_similar`` family, over the int8 kernels of
  ``_kernels_search.pyx``.
* ``_sketch``     -- :func:`compute_sketch`, :func:`add_sketch`: the sign-bit sketch a store may
  hold and ``search(prefilter="sketch")`` scans first (kernels: ``_kernels_sketch.pyx`` over
  ``_sketch_simd.h``).
* ``_evaluate``   -- gensim's word-pair and analogy evaluations; ``_compare``
  (:func:`compare_with_original`) measures a store against the floats it came from.
* ``_interop``    -- :func:`to_keyed_vectors`, :func:`from_keyed_vectors` (gensim).
* ``_publish``    -- the one atomic "temporary file, fsync, rename" step every writer uses.
* ``_errors``     -- :class:`FormatError`, :class:`StoreError`, :class:`DuplicateKeyError`.
* ``cli`` and ``_cmd_*`` -- the ``embq`` command line, one module per command.

Names are imported on first use, so ``import embq`` stays cheap (h5py and the kernels load
when a store is first opened or a kernel first runs).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from embq._version import __version__ as __version__

if TYPE_CHECKING:  # what the lazy table below binds, for type checkers and IDEs
    from embq._compare import compare_with_original as compare_with_original
    from embq._compress import compress as compress
    from embq._config import show_config as show_config
    from embq._errors import DuplicateKeyError as DuplicateKeyError
    from embq._errors import FormatError as FormatError
    from embq._errors import StoreError as StoreError
    from embq._export import export as export
    from embq._interop import from_keyed_vectors as from_keyed_vectors
    from embq._interop import to_keyed_vectors as to_keyed_vectors
    from embq._kernels_search import AllowList as AllowList
    from embq._quantize import QuantizedRows as QuantizedRows
    from embq._quantize import dequantize as dequantize
    from embq._quantize import quantize as quantize
    from embq._readers import detect_format as detect_format
    from embq._readers import load_embeddings as load_embeddings
    from embq._readers import open_embeddings as open_embeddings
    from embq._reshard import merge as merge
    from embq._reshard import shard as shard
    from embq._search import allow_list as allow_list
    from embq._search import search as search
    from embq._sharded import ShardedStore as ShardedStore
    from embq._sharded import open as open
    from embq._sketch import add_sketch as add_sketch
    from embq._sketch import compute_sketch as compute_sketch
    from embq._store import Store as Store
    from embq._store import StoreWriter as StoreWriter
    from embq._store import save as save

_LAZY = {
    "FormatError": "embq._errors",
    "StoreError": "embq._errors",
    "DuplicateKeyError": "embq._errors",
    "QuantizedRows": "embq._quantize",
    "quantize": "embq._quantize",
    "dequantize": "embq._quantize",
    "search": "embq._search",
    "allow_list": "embq._search",
    "AllowList": "embq._kernels_search",
    "compute_sketch": "embq._sketch",
    "add_sketch": "embq._sketch",
    "compress": "embq._compress",
    "export": "embq._export",
    "save": "embq._store",
    "open": "embq._sharded",
    "Store": "embq._store",
    "ShardedStore": "embq._sharded",
    "StoreWriter": "embq._store",
    "show_config": "embq._config",
    "open_embeddings": "embq._readers",
    "load_embeddings": "embq._readers",
    "detect_format": "embq._readers",
    "to_keyed_vectors": "embq._interop",
    "from_keyed_vectors": "embq._interop",
    "compare_with_original": "embq._compare",
    "shard": "embq._reshard",
    "merge": "embq._reshard",
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'embq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
