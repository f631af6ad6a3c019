"""Names for the types embq's public signatures take, in one place.

Only annotations use them (every module has ``from __future__ import annotations``), so the
store classes are imported for type checkers alone and nothing here costs an import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gensim.models import KeyedVectors

    from embq._sharded import ShardedStore
    from embq._store import Store

#: A file system path, as ``open()`` takes it.
PathLike = Union[str, "os.PathLike[str]"]
#: A row's key, or its row number.
KeyOrRow = Union[str, int, np.integer]
#: Either kind of opened store: both have the whole read API.
AnyStore = Union["Store", "ShardedStore"]
#: What the evaluations score: a store, a gensim ``KeyedVectors`` or ``(keys, vectors)``.
Vectors = Union["Store", "ShardedStore", "KeyedVectors",
                "tuple[Sequence[str] | None, ArrayLike]"]
#: A store, or the path of one to open.
StoreOrPath = Union["Store", "ShardedStore", str, "os.PathLike[str]"]
__all__ = ["AnyStore", "ArrayLike", "KeyOrRow", "NDArray", "PathLike", "StoreOrPath",
           "Vectors"]
