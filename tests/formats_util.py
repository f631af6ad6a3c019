"""Helpers shared by the tests of the safetensors, Parquet/Arrow, keys and export formats."""

from __future__ import annotations

import os

import numpy as np

import embq
from embq.cli import main


def store_arrays(path) -> dict:
    """Everything a store holds that compression decides: codes, scales, norms, keys, attrs."""
    with embq.open(str(path)) as st:
        return {
            "codes": np.array(st.codes), "scales": np.array(st.scales),
            "zero_points": np.array(st.zero_points), "norms": np.array(st.norms),
            "keys": list(st.index_to_key) if st.has_keys else None,
            "attrs": dict(st.attrs),
        }


def assert_same_store(a, b) -> None:
    """Two stores hold the same rows bit for bit (codes, scales, zero points, norms, keys)."""
    sa, sb = store_arrays(a), store_arrays(b)
    for name in ("codes", "scales", "zero_points", "norms"):
        assert sa[name].dtype == sb[name].dtype, name
        assert sa[name].tobytes() == sb[name].tobytes(), name
    assert sa["keys"] == sb["keys"]


def npy_store(tmp_path, x: np.ndarray, keys=None, name="ref", **options):
    """The store compressed from ``x`` written as .npy (and its keys as a keys file)."""
    npy = tmp_path / f"{name}.npy"
    np.save(npy, np.asarray(x))
    kp = None
    if keys is not None:
        kp = tmp_path / f"{name}.keys.txt"
        kp.write_text("".join(k + "\n" for k in keys), encoding="utf8")
    out = tmp_path / f"{name}.embq"
    embq.compress(str(npy), str(out), keys=kp, overwrite=True, **options)
    return out


def compressed(tmp_path, src, name="got", **options):
    out = tmp_path / f"{name}.embq"
    embq.compress(str(src), str(out), overwrite=True, **options)
    return out


def cli_error(capsys, *argv) -> str:
    """Run ``embq`` expecting bad input: exit 2 and one line on stderr; return that line."""
    code = main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, dim)) * rng.uniform(0.1, 3, (n, 1))).astype(np.float32)
    x[n // 3] = 0  # a zero row
    return x
