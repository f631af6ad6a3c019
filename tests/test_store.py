"""Tests for the embq HDF5 store: writing, reading, lookups, validation, failure safety."""

from __future__ import annotations

import mmap
import os
import pickle

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embq
from embq import _kernels_store
from embq._errors import DuplicateKeyError, FormatError, StoreError
from embq._quantize import dequantize, quantize, row_norms
from embq._store import HASH_FUNCTION, StoreWriter


def _data(n=50, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), [f"w{i}" for i in range(n)]


def _oracle(x):
    q = quantize(x)
    return dequantize(q.codes, q.scales, q.zero_points), q


def _tmp_leftovers(directory):
    return [p for p in os.listdir(directory) if ".embq-tmp-" in p]


@pytest.fixture
def store(tmp_path):
    x, keys = _data(60, 12)
    x[7] = 0.0  # an all-zero row
    keys[10] = "café"
    keys[11] = "日本"
    keys[12] = "123"  # looks like a number
    keys[13] = "-1"
    keys[14] = "1.5e3"
    p = tmp_path / "s.h5"
    embq.save(p, x, keys)
    with embq.open(p) as s:
        yield s, x, keys


# ------------------------------------------------------------------------------------------
# round trips
# ------------------------------------------------------------------------------------------


def test_round_trip_with_keys(store):
    s, x, keys = store
    ref, q = _oracle(x)
    assert s.shape == x.shape == (len(s), s.dim)
    assert s.dtype == np.float32
    assert s.has_keys
    assert list(s.index_to_key) == keys
    assert s.index_to_key == keys
    np.testing.assert_array_equal(s.codes, q.codes)
    np.testing.assert_array_equal(s.scales, q.scales)
    np.testing.assert_array_equal(s.zero_points, q.zero_points)
    np.testing.assert_array_equal(s.norms, row_norms(q.codes, q.scales, q.zero_points))
    np.testing.assert_array_equal(s[:], ref)
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(s[k], ref[i])
        assert s.get_index(k) == i
        assert s.key_to_index[k] == i


def test_attrs_and_metadata(tmp_path):
    x, keys = _data(5, 3)
    p = tmp_path / "s.h5"
    embq.save(p, x, keys, attrs={"source_path": "in.txt", "error_mean": 0.25, "count": 7})
    with embq.open(p) as s:
        a = s.attrs
        assert a["format"] == "embq" and a["format_version"] == 1
        assert a["scheme"] == "uint8-per-row-symmetric"
        assert a["dim"] == 3 and a["n_rows"] == 5 and a["has_keys"] is True
        assert a["embq_version"] == embq.__version__
        assert a["source_path"] == "in.txt" and a["error_mean"] == 0.25 and a["count"] == 7


def test_reserved_attrs_refused(tmp_path):
    x, keys = _data(5, 3)
    with pytest.raises(ValueError, match="'dim' is set by embq"):
        embq.save(tmp_path / "s.h5", x, keys, attrs={"dim": 4})
    assert not os.path.exists(tmp_path / "s.h5")
    assert _tmp_leftovers(tmp_path) == []


def test_round_trip_without_keys(tmp_path):
    x, _ = _data(20, 5)
    p = tmp_path / "m.h5"
    embq.save(p, x)
    ref, _ = _oracle(x)
    with embq.open(p) as s:
        assert not s.has_keys and s.attrs["has_keys"] is False
        assert s.index_to_key is None and s.key_to_index is None
        np.testing.assert_array_equal(s[3], ref[3])
        np.testing.assert_array_equal(s[[4, 2]], ref[[4, 2]])
        assert "w1" not in s
        with pytest.raises(KeyError, match="has no keys"):
            s["w1"]
        with pytest.raises(KeyError, match="has no keys"):
            s[["w1"]]
        with pytest.raises(KeyError, match="has no keys"):
            s.get_vector("w1")
        with h5py.File(p, "r") as f:
            assert "keys" not in f


@pytest.mark.parametrize("has_keys", [True, False])
def test_empty_store(tmp_path, has_keys):
    p = tmp_path / "e.h5"
    embq.save(p, np.zeros((0, 4), np.float32), [] if has_keys else None)
    with embq.open(p) as s:
        assert s.shape == (0, 4) and len(s) == 0
        assert s.codes.shape == (0, 4) and s.codes.dtype == np.uint8
        assert s.scales.shape == (0,) and s.norms.shape == (0,)
        assert s[:].shape == (0, 4)
        assert s[[]].shape == (0, 4)
        assert "a" not in s
        with pytest.raises(IndexError):
            s[0]
        with pytest.raises(KeyError):
            s["a"]
        if has_keys:
            assert list(s.index_to_key) == [] and len(s.key_to_index) == 0


def test_single_row(tmp_path):
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    p = tmp_path / "one.h5"
    embq.save(p, x, ["only"])
    ref, _ = _oracle(x)
    with embq.open(p) as s:
        np.testing.assert_array_equal(s["only"], ref[0])
        np.testing.assert_array_equal(s[0], ref[0])
        np.testing.assert_array_equal(s[-1], ref[0])
        assert s.index_to_key[0] == "only"


def test_codes_are_contiguous_uncompressed(store):
    s, _, _ = store
    with h5py.File(s.path, "r") as f:
        for name in ("codes", "scales", "zero_points", "norms", "keys/utf8", "keys/offsets",
                     "keys/hash"):
            ds = f[name]
            assert ds.chunks is None and ds.compression is None, name
            assert ds.id.get_offset() is not None


def test_memmaps_read_only(store):
    s, _, _ = store
    for arr in (s.codes, s.scales, s.zero_points, s.norms):
        # Views of one read-only map of the file (no copy).
        assert isinstance(arr.base, mmap.mmap)
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1


# ------------------------------------------------------------------------------------------
# __getitem__ and friends
# ------------------------------------------------------------------------------------------


def test_getitem_forms(store):
    s, x, _ = store
    ref, _ = _oracle(x)
    n = len(x)
    cases = [
        (5, ref[5]),
        (-1, ref[-1]),
        (np.int32(3), ref[3]),
        (np.uint64(4), ref[4]),
        (slice(2, 9), ref[2:9]),
        (slice(None, None, -3), ref[::-3]),
        (slice(50, 500), ref[50:]),
        ([3, 1, 3, -2], ref[[3, 1, 3, -2]]),
        ((0, 2), ref[[0, 2]]),
        (np.array([9, 0, 5]), ref[[9, 0, 5]]),
        (np.array([9, 0, 5], np.uint16), ref[[9, 0, 5]]),
        (np.arange(n) % 2 == 0, ref[::2]),
        (np.array(4), ref[4]),
        ("café", ref[10]),
        ("123", ref[12]),
        (["日本", "w0", "café", "w0"], ref[[11, 0, 10, 0]]),
        (np.array(["w3", "-1"]), ref[[3, 13]]),
        (["w2", 5], ref[[2, 5]]),
        ([], np.empty((0, x.shape[1]), np.float32)),
    ]
    for key, want in cases:
        got = s[key]
        assert got.dtype == np.float32, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=repr(key))


def test_getitem_results_are_fresh_writable_arrays(store):
    s, _, _ = store
    v = s["w1"]
    v[:] = 0  # must not touch the store
    assert np.abs(s["w1"]).sum() > 0


def test_getitem_errors(store):
    s, _, _ = store
    n = len(s)
    with pytest.raises(IndexError, match=rf"row {n} out of range: this store has {n} rows "
                                         rf"\(valid rows: -{n} to {n - 1}\)"):
        s[n]
    with pytest.raises(IndexError, match="out of range"):
        s[-n - 1]
    with pytest.raises(IndexError, match="item 1"):
        s[[0, n, 1]]
    with pytest.raises(IndexError):
        s[np.array([-n - 1])]
    with pytest.raises(IndexError, match="boolean index"):
        s[np.array([True, False])]
    with pytest.raises(IndexError, match="1-D"):
        s[np.zeros((2, 2), np.int64)]
    with pytest.raises(KeyError, match="Key 'nope' not present"):
        s["nope"]
    with pytest.raises(KeyError, match="Key 'nope' not present"):
        s[["w1", "nope"]]
    with pytest.raises(TypeError, match="item 1"):
        s[["w1", 2.5]]
    with pytest.raises(TypeError, match="item 1"):
        s[["w1", b"w2"]]
    for bad in (1.5, None, b"w1", {"a": 1}, True):
        with pytest.raises(TypeError):
            s[bad]
    with pytest.raises(TypeError, match="dtype"):
        s[np.array([1.0, 2.0])]


def test_gensim_like_api(store):
    s, x, _ = store
    ref, _ = _oracle(x)
    assert "w3" in s and "missing" not in s and 3 in s and len(s) not in s
    assert 2.5 not in s and None not in s
    assert s.has_index_for("w3")
    assert s.get_index("w4") == 4
    assert s.get_index(6) == 6  # gensim accepts a row number
    assert s.get_index("nope", -1) == -1
    assert s.get_index("nope", default=3) == 3
    with pytest.raises(KeyError, match=r"^\"Key 'nope' not present\"$"):
        s.get_index("nope")
    np.testing.assert_array_equal(s.get_vector("w5"), ref[5])
    np.testing.assert_array_equal(s.get_vector(5), ref[5])
    nv = s.get_vector("w5", norm=True)
    np.testing.assert_allclose(np.linalg.norm(nv), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(nv, ref[5] / s.norms[5])
    z = s.get_vector(7, norm=True)  # the zero row stays zero
    assert np.all(z == 0) and not np.isnan(z).any()
    np.testing.assert_array_equal(s.vectors_for_all(["w1", "w2"]), ref[[1, 2]])


def test_index_to_key_and_key_to_index(store):
    s, _, keys = store
    itk = s.index_to_key
    assert len(itk) == len(keys)
    assert itk[0] == keys[0] and itk[-1] == keys[-1] and itk[2:5] == keys[2:5]
    assert itk[::-7] == keys[::-7]
    assert "café" in itk and "zzz" not in itk and 3 not in itk
    assert itk.index("日本") == 11
    with pytest.raises(IndexError):
        itk[len(keys)]
    with pytest.raises(TypeError):
        itk["a"]
    kti = s.key_to_index
    assert len(kti) == len(keys)
    assert list(kti) == keys
    assert dict(kti.items()) == {k: i for i, k in enumerate(keys)}
    assert kti.get("nope") is None and kti.get("nope", -1) == -1 and kti.get(3) is None
    assert "w1" in kti and 1 not in kti
    with pytest.raises(KeyError):
        kti["nope"]
    assert "w0" in repr(itk)


def test_str_subclass_keys_are_keys(store):
    # numpy.str_ (what iterating an array of words yields) is a str: gensim accepts it.
    s, _, _ = store
    k = np.str_("café")
    want = s["café"]
    np.testing.assert_array_equal(s[k], want)
    np.testing.assert_array_equal(s.get_vector(k), want)
    assert s.get_index(k) == 10 and k in s and k in s.index_to_key
    assert s.key_to_index[k] == 10 and s.key_to_index.get(k) == 10
    np.testing.assert_array_equal(s[[k, np.str_("w1")]], s[["café", "w1"]])


def test_keys_without_utf8_form_are_absent(store):
    # A lone surrogate cannot be encoded, so no store holds it: absent, not an encoding error.
    s, _, _ = store
    bad = "w1\udcff"
    assert bad not in s and bad not in s.index_to_key and bad not in s.key_to_index
    assert s.get_index(bad, -1) == -1 and s.key_to_index.get(bad) is None
    with pytest.raises(KeyError, match="not present"):
        s[bad]
    with pytest.raises(KeyError, match="not present"):
        s.get_index(bad)
    with pytest.raises(KeyError, match="not present"):
        s[["w1", bad]]


def test_index_to_key_iterates_across_blocks(store, monkeypatch):
    s, _, keys = store
    monkeypatch.setattr(type(s.index_to_key), "_ITER_BLOCK", 7)
    assert list(s.index_to_key) == keys
    assert list(s.key_to_index) == keys


def test_closed_store(tmp_path):
    x, keys = _data(5, 3)
    p = tmp_path / "s.h5"
    embq.save(p, x, keys)
    s = embq.open(p)
    codes = s.codes
    itk = s.index_to_key
    s.close()
    s.close()  # twice is fine
    assert s.closed
    assert "closed" in repr(s) and str(p) in repr(s) and "(5, 3)" in repr(s)
    assert s.shape == (5, 3) and len(s) == 5  # metadata survives
    for fn in (
        lambda: s["w1"],
        lambda: s[0],
        lambda: s[["w1"]],
        lambda: s.codes,
        lambda: s.norms,
        lambda: s.index_to_key,
        lambda: s.key_to_index,
        lambda: "w1" in s,
        lambda: s.get_index("w1"),
        lambda: s.get_vector("w1"),
        lambda: itk[0],
    ):
        with pytest.raises(ValueError, match="store is closed"):
            fn()
    assert codes.shape == (5, 3) and int(codes[0, 0]) >= 1  # earlier arrays stay valid


def test_context_manager_and_repr(tmp_path):
    x, keys = _data(4, 2)
    p = tmp_path / "s.h5"
    embq.save(p, x, keys)
    with embq.open(p) as s:
        assert "open" in repr(s) and "(4, 2)" in repr(s)
    assert s.closed


def test_pickling_refused(store):
    s, _, _ = store
    with pytest.raises(TypeError, match=r"cannot be pickled.*embq\.open"):
        pickle.dumps(s)


# ------------------------------------------------------------------------------------------
# streaming writer
# ------------------------------------------------------------------------------------------


def test_streaming_writer_equals_save(tmp_path):
    x, keys = _data(1000, 7, seed=3)
    embq.save(tmp_path / "a.h5", x, keys)
    bounds = [0, 1, 1, 50, 333, 334, 999, 1000]
    with StoreWriter(tmp_path / "b.h5", 7, attrs={"note": "x"}) as w:
        for a, b in zip(bounds[:-1], bounds[1:]):
            assert w.append(x[a:b], keys[a:b]).all()
        assert w.n_rows == 1000
    with embq.open(tmp_path / "a.h5") as sa, embq.open(tmp_path / "b.h5") as sb:
        for name in ("codes", "scales", "zero_points", "norms"):
            np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))
        assert list(sa.index_to_key) == list(sb.index_to_key)
        assert sb.attrs["note"] == "x"
        for k in keys[::37]:
            np.testing.assert_array_equal(sa[k], sb[k])


def test_append_quantized(tmp_path):
    x, keys = _data(30, 6)
    q = quantize(x)
    p = tmp_path / "q.h5"
    with StoreWriter(p, 6) as w:
        w.append_quantized(q.codes[:10], q.scales[:10], q.zero_points[:10], keys[:10])
        w.append_quantized(q.codes[10:], q.scales[10:], None, keys[10:])
    with embq.open(p) as s:
        np.testing.assert_array_equal(s.codes, q.codes)
        np.testing.assert_array_equal(s[:], dequantize(*q))


def test_append_quantized_validation(tmp_path):
    q = quantize(np.ones((3, 4), np.float32))
    with StoreWriter(tmp_path / "v.h5", 4, has_keys=False) as w:
        with pytest.raises(TypeError, match="codes must be uint8"):
            w.append_quantized(q.codes.astype(np.int16), q.scales, q.zero_points)
        with pytest.raises(ValueError, match=r"shape \(rows, 4\)"):
            w.append_quantized(q.codes[:, :3], q.scales, q.zero_points)
        with pytest.raises(ValueError, match=r"scales must have shape \(3,\)"):
            w.append_quantized(q.codes, q.scales[:2], q.zero_points)
        with pytest.raises(ValueError, match="finite"):
            w.append_quantized(q.codes, np.array([1, np.nan, 1], np.float32), q.zero_points)
        with pytest.raises(TypeError, match="zero_points must be uint8"):
            w.append_quantized(q.codes, q.scales, q.zero_points.astype(np.int64))
        w.append_quantized(q.codes, q.scales, q.zero_points)
    with embq.open(tmp_path / "v.h5") as s:
        assert len(s) == 3


def test_writer_argument_errors(tmp_path):
    x, keys = _data(4, 3)
    with StoreWriter(tmp_path / "a.h5", 3) as w:
        with pytest.raises(ValueError, match="has keys"):
            w.append(x)
        with pytest.raises(ValueError, match="got 3 keys for 4 rows"):
            w.append(x, keys[:3])
        with pytest.raises(TypeError, match="single str"):
            w.append(x[:1], "w0")
        with pytest.raises(ValueError, match=r"shape \(rows, 3\)"):
            w.append(x[:, :2], keys)
        with pytest.raises(ValueError, match="on_duplicate"):
            w.append(x, keys, on_duplicate="ignore")
        with pytest.raises(TypeError, match="item 1 of the batch is int"):
            w.append(x[:2], ["a", 3])
        with pytest.raises(ValueError, match="empty"):
            w.append(x[:2], ["a", ""])
        with pytest.raises(ValueError, match="UTF-8"):
            w.append(x[:1], ["bad\udc80"])
        bad = x.copy()
        bad[2, 1] = np.nan
        with pytest.raises(ValueError, match="row 2"):
            w.append(bad, keys)
        # None of the failures above recorded anything: the keys are still free.
        assert w.append(x, keys).all()
    with embq.open(tmp_path / "a.h5") as s:
        assert list(s.index_to_key) == keys
    with StoreWriter(tmp_path / "b.h5", 3, has_keys=False) as w:
        with pytest.raises(ValueError, match="has no keys"):
            w.append(x, keys)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        StoreWriter(tmp_path / "c.h5", 0)
    with pytest.raises(ValueError, match="2-D"):
        embq.save(tmp_path / "c.h5", np.zeros(3))
    with pytest.raises(ValueError, match="2 keys for 4 rows"):
        embq.save(tmp_path / "c.h5", x, keys[:2])
    assert _tmp_leftovers(tmp_path) == []


def test_duplicates_error_mode(tmp_path):
    x, keys = _data(6, 3)
    with StoreWriter(tmp_path / "d.h5", 3) as w:
        w.append(x[:3], keys[:3])
        with pytest.raises(DuplicateKeyError) as ei:
            w.append(x[3:6], ["new", "w1", "other"])
        e = ei.value
        # Both rows count in the whole store: "w1" would have been row 3 + 1.
        assert (e.key, e.first_index, e.index) == ("w1", 1, 4)
        assert str(e) == "duplicate key 'w1' at row 4: first seen at row 1; keys must be unique"
        # In-batch duplicate: first_index is the row its first occurrence would have taken.
        with pytest.raises(DuplicateKeyError) as ei:
            w.append(x[3:6], ["a", "b", "a"])
        assert (ei.value.key, ei.value.first_index, ei.value.index) == ("a", 3, 5)
        # The failed batches left nothing behind.
        assert w.n_rows == 3
        assert w.append(x[3:6], ["new", "a", "b"]).all()
    with embq.open(tmp_path / "d.h5") as s:
        assert list(s.index_to_key) == ["w0", "w1", "w2", "new", "a", "b"]
    with pytest.raises(DuplicateKeyError):
        embq.save(tmp_path / "e.h5", x, ["a", "b", "c", "b", "d", "e"])
    assert not os.path.exists(tmp_path / "e.h5")
    assert _tmp_leftovers(tmp_path) == []


def test_duplicates_skip_mode(tmp_path):
    x, _ = _data(7, 3)
    ref, _ = _oracle(x)
    with StoreWriter(tmp_path / "k.h5", 3) as w:
        m1 = w.append(x[:4], ["a", "b", "a", "c"], on_duplicate="skip")
        m2 = w.append(x[4:], ["c", "d", "d"], on_duplicate="skip")
    assert m1.dtype == np.bool_ and m1.tolist() == [True, True, False, True]
    assert m2.tolist() == [False, True, False]
    with embq.open(tmp_path / "k.h5") as s:
        assert list(s.index_to_key) == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(s[:], ref[[0, 1, 3, 5]])
        np.testing.assert_array_equal(s["c"], ref[3])


def test_many_keys_and_collisions(tmp_path):
    # A nearly full table (load 0.97) forces long probe chains and wrap-around.
    n = 3000
    keys = [f"k{i}" for i in range(n)]
    x = np.random.default_rng(5).standard_normal((n, 2)).astype(np.float32)
    p = tmp_path / "c.h5"
    with StoreWriter(p, 2, _max_load=0.97) as w:
        for a in range(0, n, 700):
            w.append(x[a : a + 700], keys[a : a + 700])
        with pytest.raises(DuplicateKeyError):
            w.append(x[:1], ["k2999"])
    with embq.open(p) as s:
        table = np.asarray(s._table)
        assert table.shape[0] <= 4096 and (table >= 0).sum() == n
        rows = s._index.find_many(keys)
        np.testing.assert_array_equal(rows, np.arange(n))
        assert all(s.get_index(f"missing{i}", -1) == -1 for i in range(500))
        assert (s._index.find_many([f"missing{i}" for i in range(500)]) == -1).all()
        with pytest.raises(KeyError, match="Key 'missing7' not present"):
            s[keys[:100] + ["missing7"] + keys[100:]]
        ref, _ = _oracle(x)
        np.testing.assert_array_equal(s[keys[::-1]], ref[::-1])


def test_hash_function_reference():
    # The documented hash, re-implemented in plain Python (docs/format.md).
    def ref(b: bytes) -> int:
        m = (1 << 64) - 1
        h = 0xCBF29CE484222325
        for c in b:
            h = ((h ^ c) * 0x100000001B3) & m
        h ^= h >> 33
        h = (h * 0xFF51AFD7ED558CCD) & m
        h ^= h >> 33
        h = (h * 0xC4CEB9FE1A85EC53) & m
        h ^= h >> 33
        return h

    for k in ["a", "café", "日本", "123", "x" * 100, "\x00z"]:
        assert _kernels_store.hash_key(k) == ref(k.encode()) == _kernels_store.hash_key(k.encode())
    assert _kernels_store.HASH_FUNCTION == HASH_FUNCTION


def test_table_matches_documented_probing(store):
    s, _, keys = store
    table = np.asarray(s._table)
    mask = table.shape[0] - 1
    for i, k in enumerate(keys):
        slot = _kernels_store.hash_key(k) & mask
        while table[slot] != i:
            assert table[slot] != -1
            slot = (slot + 1) & mask
    np.testing.assert_array_equal(
        _kernels_store.build_table(s._offsets, s._utf8)[: table.shape[0]], table
    )


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keys=st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8),
                  max_size=40),
    d=st.integers(1, 5),
    batch=st.integers(1, 7),
)
def test_property_writer_skip_matches_dict(tmp_path_factory, keys, d, batch):
    n = len(keys)
    x = np.random.default_rng(n).standard_normal((n, d)).astype(np.float32)
    p = tmp_path_factory.mktemp("h") / "s.h5"
    first: dict[str, int] = {}
    with StoreWriter(p, d) as w:
        for a in range(0, n, batch):
            w.append(x[a : a + batch], keys[a : a + batch], on_duplicate="skip")
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    ref, _ = _oracle(x)
    with embq.open(p) as s:
        assert list(s.index_to_key) == list(first)
        for j, (k, i) in enumerate(first.items()):
            assert s.get_index(k) == j
            np.testing.assert_array_equal(s[k], ref[i])
        for k in ["", "\x00", "never-a-key-\u2603"]:
            if k not in first:
                assert k not in s


# ------------------------------------------------------------------------------------------
# failure safety and overwrite rules
# ------------------------------------------------------------------------------------------


def test_no_file_on_exception(tmp_path):
    x, keys = _data(10, 3)
    p = tmp_path / "s.h5"
    with pytest.raises(RuntimeError):
        with StoreWriter(p, 3) as w:
            w.append(x, keys)
            raise RuntimeError("boom")
    assert not os.path.exists(p)
    assert _tmp_leftovers(tmp_path) == []


def test_no_file_on_keyboard_interrupt(tmp_path, monkeypatch):
    x, keys = _data(10, 3)
    p = tmp_path / "s.h5"
    embq.save(p, x, keys)
    before = p.read_bytes()

    def interrupted(self, raw, ds, dtype, shape):
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "_copy_spool", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embq.save(p, x * 2, keys, overwrite=True)
    assert p.read_bytes() == before  # the existing store is untouched
    q = tmp_path / "new.h5"
    with pytest.raises(KeyboardInterrupt):
        with StoreWriter(q, 3) as w:
            w.append(x, keys)
    assert not os.path.exists(q)
    assert _tmp_leftovers(tmp_path) == []


def test_keyboard_interrupt_between_batches(tmp_path):
    x, keys = _data(10, 3)
    p = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        with StoreWriter(p, 3) as w:
            w.append(x[:5], keys[:5])
            raise KeyboardInterrupt
    assert not os.path.exists(p) and _tmp_leftovers(tmp_path) == []


def test_overwrite_rules(tmp_path):
    x, keys = _data(6, 3)
    p = tmp_path / "s.h5"
    p.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        embq.save(p, x, keys)
    with pytest.raises(FileExistsError) as ei:
        StoreWriter(p, 3)
    assert str(p) in str(ei.value)
    assert p.read_bytes() == b"precious"
    embq.save(p, x, keys, overwrite=True)
    with embq.open(p) as s:
        assert len(s) == 6
    assert _tmp_leftovers(tmp_path) == []


@pytest.mark.parametrize("links", [True, False])
def test_file_appearing_during_write_is_not_replaced(tmp_path, monkeypatch, links):
    # With hard links (link, then unlink) and without them (the rename re-checks first).
    from embq._errors import OutputExistsError

    if not links:
        def no_link(a, b):
            raise OSError(95, "Operation not supported")
        monkeypatch.setattr(os, "link", no_link)
    x, keys = _data(6, 3)
    p = tmp_path / "s.h5"
    w = StoreWriter(p, 3)
    w.append(x, keys)
    p.write_bytes(b"someone else's")
    with pytest.raises(OutputExistsError, match=r"appeared.*overwrite=True") as ei:
        w.close()
    assert ei.value.path == str(p) and "--overwrite" not in str(ei.value)
    assert p.read_bytes() == b"someone else's"
    assert _tmp_leftovers(tmp_path) == []
    if not links:  # and without links a store still gets written where nothing is in the way
        embq.save(tmp_path / "t.h5", x, keys)
        assert embq.open(tmp_path / "t.h5")["w1"].shape == (3,)


def test_missing_directory(tmp_path):
    x, keys = _data(3, 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embq.save(tmp_path / "nope" / "s.h5", x, keys)
    with pytest.raises(IsADirectoryError):
        embq.save(tmp_path, x, keys)


def test_writer_lifecycle(tmp_path):
    x, keys = _data(3, 2)
    w = StoreWriter(tmp_path / "s.h5", 2)
    w.append(x, keys)
    w.close()
    w.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        w.append(x, keys)
    w2 = StoreWriter(tmp_path / "t.h5", 2)
    w2.append(x, keys)
    w2.abort()
    w2.abort()
    assert not os.path.exists(tmp_path / "t.h5")
    with pytest.raises(ValueError, match="aborted"):
        w2.append(x, keys)
    with pytest.raises(ValueError, match="aborted"):
        w2.close()
    assert _tmp_leftovers(tmp_path) == []


def test_bad_attr_value_aborts(tmp_path):
    x, keys = _data(3, 2)
    with pytest.raises(TypeError, match="attribute 'bad'"):
        embq.save(tmp_path / "s.h5", x, keys, attrs={"bad": object()})
    assert not os.path.exists(tmp_path / "s.h5") and _tmp_leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------
# invalid files
# ------------------------------------------------------------------------------------------


def _good(tmp_path, name="g.h5", n=5, d=3):
    x, keys = _data(n, d)
    p = tmp_path / name
    embq.save(p, x, keys)
    return p


def _expect_store_error(p, match):
    with pytest.raises(StoreError, match=match) as ei:
        embq.open(p)
    assert isinstance(ei.value, FormatError) and isinstance(ei.value, ValueError)
    assert str(p) in str(ei.value)
    assert ei.value.path == str(p)


def test_invalid_random_bytes(tmp_path):
    p = tmp_path / "r.h5"
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    _expect_store_error(p, "not an HDF5 file")
    q = tmp_path / "empty.h5"
    q.write_bytes(b"")
    _expect_store_error(q, "not an HDF5 file")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such store"):
        embq.open(tmp_path / "absent.h5")
    with pytest.raises(IsADirectoryError):
        embq.open(tmp_path)


def test_invalid_hdf5_not_a_store(tmp_path):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["data"] = np.arange(3)
    _expect_store_error(p, "not an embq store.*'format' is None")


def _edit(p, fn):
    with h5py.File(p, "r+") as f:
        fn(f)


def _replace(name, data):
    def fn(f):
        del f[name]
        f.create_dataset(name, data=data)
    return fn


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: f.attrs.__setitem__("format_version", 2),
         "unsupported store format_version 2"),
        (lambda f: f.attrs.__setitem__("format", "other"), "'format' is 'other'"),
        (lambda f: f.attrs.__setitem__("scheme", "int4"), "unsupported quantization scheme"),
        (lambda f: f.attrs.__setitem__("n_rows", 6),
         r"'codes' has shape \(5, 3\), expected \(6, 3\)"),
        (lambda f: f.attrs.__setitem__("dim", "3"), "'dim' is '3'"),
        (lambda f: f.attrs.__delitem__("has_keys"), "'has_keys' is None"),
        (lambda f: f.__delitem__("norms"), "missing dataset 'norms'"),
        (lambda f: f.__delitem__("keys"), "group 'keys' is missing"),
        (lambda f: f.__delitem__("keys/hash"), "missing dataset 'keys/hash'"),
        (_replace("scales", np.ones(4, np.float32)),
         r"'scales' has shape \(4,\), expected \(5,\)"),
        (_replace("scales", np.ones(5, np.float64)),
         "'scales' has dtype <f8.*expected <f4"),
        (_replace("codes", np.ones((5, 3), np.int8)),
         "'codes' has dtype"),
        (_replace("zero_points", np.ones(5, ">u2")),
         "'zero_points' has dtype"),
        (_replace("scales", np.ones(5, ">f4")),
         "'scales' has dtype >f4"),
        (_replace("keys/offsets", np.zeros(5, np.int64)),
         r"'keys/offsets' has shape \(5,\), expected \(6,\)"),
        (lambda f: (f.__delitem__("norms"), f.create_group("norms")), "'norms' is a Group"),
        (_replace("keys/hash", -np.ones(6, np.int64)),
         "power of two"),
        (lambda f: f["keys/hash"].attrs.__setitem__("hash_function", "md5"), "hash_function='md5'"),
    ],
)
def test_invalid_layouts(tmp_path, edit, match):
    p = _good(tmp_path)
    _edit(p, edit)
    _expect_store_error(p, match)


def test_invalid_offsets_and_truncation(tmp_path):
    p = _good(tmp_path)
    with h5py.File(p, "r+") as f:
        f["keys/offsets"][-1] = 10_000
    _expect_store_error(p, "key offsets run from 0 to 10000")
    q = _good(tmp_path, "t.h5", n=2000, d=50)
    size = os.path.getsize(q)
    with h5py.File(q, "r") as f:
        end = f["codes"].id.get_offset() + f["codes"].size
    assert end <= size
    with open(q, "r+b") as fh:
        fh.truncate(end - 100)
    with pytest.raises(StoreError):
        embq.open(q)


@pytest.mark.parametrize("edit, bad_row", [("past_end", 9), ("decreasing", 10), ("bad_utf8", 9)])
def test_damaged_key_offsets_are_reported_by_index_to_key(tmp_path, edit, bad_row):
    # open() checks only the first and last offset (O(1)); every decode checks its own pair.
    p = _good(tmp_path, n=50)
    with h5py.File(p, "r+") as f:
        if edit == "past_end":
            f["keys/offsets"][10] = 10**9
        elif edit == "decreasing":
            o = f["keys/offsets"][...]
            o[10], o[11] = o[11], o[10]
            f["keys/offsets"][...] = o
        else:
            u = f["keys/utf8"][...]
            u[int(f["keys/offsets"][9])] = 0xFF
            f["keys/utf8"][...] = u
    with embq.open(p) as s:
        with pytest.raises(StoreError, match=f"key of row {bad_row} is damaged"):
            s.index_to_key[bad_row]
        with pytest.raises(StoreError, match=f"key of row {bad_row} is damaged"):
            list(s.index_to_key)
        assert s.index_to_key[0] == "w0"


def test_corrupt_hash_table_does_not_read_out_of_bounds(tmp_path, monkeypatch):
    p = _good(tmp_path)
    with h5py.File(p, "r+") as f:
        t = f["keys/hash"][...]
        t[t >= 0] = 1_000_000  # rows that do not exist
        f["keys/hash"][...] = t
    # open() looks up the first keys, which finds the damage at once...
    _expect_store_error(p, "key hash table is damaged")
    # ...and past that check, every lookup still refuses to follow the table out of bounds.
    monkeypatch.setattr(embq.Store, "_SAMPLE_ROWS", 0)
    with embq.open(p) as s:
        with pytest.raises(StoreError, match="damaged"):
            s["w1"]
        with pytest.raises(StoreError, match="damaged"):
            s[["w1", "w2"]]
    with h5py.File(p, "r+") as f:
        f["keys/hash"][...] = np.arange(f["keys/hash"].shape[0]) % 5  # full table, no empty slot
    with embq.open(p) as s:
        with pytest.raises(StoreError, match="damaged"):
            s["not-there"]


def test_chunked_or_compressed_store_is_refused(tmp_path):
    # A store must be memory-mappable: a dataset another tool rewrote chunked or compressed is
    # refused at open, naming it, rather than read (and allocated) whole.
    p = _good(tmp_path)
    with embq.open(p) as s:
        codes = np.array(s.codes)
    with h5py.File(p, "r+") as f:
        del f["codes"]
        f.create_dataset("codes", data=codes, compression="gzip", chunks=(2, 3))
    _expect_store_error(p, "dataset 'codes' is chunked.*h5repack")


def test_plain_h5py_reading(store):
    # What docs/format.md promises: a store is readable without embq.
    s, x, keys = store
    ref, _ = _oracle(x)
    with h5py.File(s.path, "r") as f:
        codes = f["codes"][...]
        scales = f["scales"][...]
        zp = f["zero_points"][...]
        vec = (codes.astype(np.int16) - zp[:, None]).astype(np.float32) * scales[:, None]
        np.testing.assert_array_equal(vec, ref)
        blob = f["keys/utf8"][...].tobytes()
        off = f["keys/offsets"][...]
        assert [blob[off[i]:off[i + 1]].decode() for i in range(len(off) - 1)] == keys


# ------------------------------------------------------------------------------------------
# delegation
# ------------------------------------------------------------------------------------------


def test_delegating_methods_forward(store, monkeypatch):
    import sys
    import types

    s, _, _ = store
    calls = []
    fake_search = types.ModuleType("embq._search")
    fake_search.search_store = lambda *a, **k: calls.append(("search_store", a, k)) or "S"
    fake_search.most_similar = lambda *a, **k: calls.append(("most_similar", a, k)) or "M"
    fake_search.most_similar_batch = lambda *a, **k: calls.append(("batch", a, k)) or "B"
    fake_search.similar_by_vector = lambda *a, **k: calls.append(("vector", a, k)) or "V"
    fake_search.similar_by_key = lambda *a, **k: calls.append(("key", a, k)) or "Y"
    fake_eval = types.ModuleType("embq._evaluate")
    fake_eval.evaluate_word_pairs = lambda *a, **k: calls.append(("pairs", a, k)) or "P"
    fake_eval.evaluate_word_analogies = lambda *a, **k: calls.append(("analogies", a, k)) or "A"
    fake_interop = types.ModuleType("embq._interop")
    fake_interop.to_keyed_vectors = lambda *a, **k: calls.append(("kv", a, k)) or "K"
    pkg = embq
    for name, mod in (("_search", fake_search), ("_evaluate", fake_eval),
                      ("_interop", fake_interop)):
        monkeypatch.setitem(sys.modules, f"embq.{name}", mod)
        monkeypatch.setattr(pkg, name, mod, raising=False)
    q = np.ones(s.dim, np.float32)
    assert s.search(q, 3, metric="dot", rescore=2, restrict=10, n_threads=1) == "S"
    assert calls[-1] == ("search_store", (s, q, 3),
                         {"metric": "dot", "rescore": 2, "restrict": 10, "n_threads": 1})
    assert s.most_similar(positive=["w1"], negative=["w2"], topn=4, restrict_vocab=9) == "M"
    assert calls[-1] == ("most_similar", (s,), {"positive": ["w1"], "negative": ["w2"],
                                               "topn": 4, "restrict_vocab": 9})
    assert s.similar_by_key("w1", topn=2) == "Y"
    assert calls[-1] == ("key", (s, "w1"), {"topn": 2, "restrict_vocab": None})
    assert s.most_similar_batch(["w1", "w2"], topn=3) == "B"
    assert s.similar_by_vector(q, topn=5) == "V"
    assert s.evaluate_word_pairs("p.tsv", restrict_vocab=10) == "P"
    assert calls[-1][1] == (s, "p.tsv") and calls[-1][2]["restrict_vocab"] == 10
    assert s.evaluate_word_analogies("a.txt", case_insensitive=False) == "A"
    assert calls[-1][2]["case_insensitive"] is False
    assert s.to_keyed_vectors() == "K"


def test_public_exports():
    assert embq.save is embq._store.save
    assert embq.open is embq._sharded.open
    assert embq.Store is embq._store.Store
    assert embq.StoreWriter is StoreWriter
    assert _kernels_store.selected_kernels() == {"store": "portable"}


def test_gensim_compat(store):
    gensim_models = pytest.importorskip("gensim.models")
    s, x, keys = store
    ref, _ = _oracle(x)
    kv = gensim_models.KeyedVectors(x.shape[1])
    kv.add_vectors(keys, ref)
    for k in ["w1", "café", "123", 3, np.int64(4)]:
        np.testing.assert_array_equal(s[k], kv[k])
        assert s.get_index(k) == kv.get_index(k)
        np.testing.assert_allclose(s.get_vector(k, norm=True), kv.get_vector(k, norm=True),
                                   rtol=1e-6, atol=1e-7)
        assert (k in s) == (k in kv)
    batch = ["w5", "日本", "w5", "-1"]
    np.testing.assert_array_equal(s[batch], kv[batch])
    assert s[batch].shape == kv[batch].shape
    for probe in ["nope", len(keys), -1, 2.5]:
        assert (probe in s) == (probe in kv), probe
    assert s.get_index("nope", -1) == kv.get_index("nope", -1)
    with pytest.raises(KeyError) as e1:
        s.get_index("nope")
    with pytest.raises(KeyError) as e2:
        kv.get_index("nope")
    assert str(e1.value) == str(e2.value)
    with pytest.raises(KeyError) as e3:
        s["nope"]
    assert str(e3.value) == str(e2.value)
    assert list(s.index_to_key) == kv.index_to_key
    assert dict(s.key_to_index) == kv.key_to_index


def test_dropping_resident_pages_keeps_rows_valid(tmp_path):
    # export and evaluation drop the pages of a full scan; later reads must map them back.
    x = np.random.default_rng(7).normal(size=(3000, 40)).astype(np.float32)
    embq.save(tmp_path / "s.h5", x, [f"k{i}" for i in range(3000)])
    with embq.open(tmp_path / "s.h5") as s:
        before = s[:]
        held = s.codes[100:200]
        s._drop_resident_pages()
        np.testing.assert_array_equal(s[:], before)
        np.testing.assert_array_equal(held, s.codes[100:200])
        np.testing.assert_array_equal(s["k2999"], before[2999])


# ------------------------------------------------------------------------------------------
# index_to_key: the bulk decoder
# ------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                             max_size=5), min_size=0, max_size=120, unique=True),
       block=st.integers(1, 40), bounds=st.tuples(st.integers(-130, 130), st.integers(-130, 130)))
def test_index_to_key_bulk_matches_keys(tmp_path_factory, monkeypatch, keys, block, bounds):
    # Blocks of any size (newlines in keys force the key-by-key path for their block only),
    # every slice form, iteration and list().
    from embq._store import _IndexToKey

    monkeypatch.setattr(_IndexToKey, "_ITER_BLOCK", block)
    p = tmp_path_factory.mktemp("keys") / "s.h5"
    embq.save(p, np.ones((len(keys), 2), np.float32), keys if keys else None)
    with embq.open(p) as s:
        if not keys:
            assert s.index_to_key is None
            return
        itk = s.index_to_key
        a, b = bounds
        assert itk[:] == keys and list(itk) == keys and itk[: len(keys)] == keys
        assert itk[a:b] == keys[a:b] and itk[a:] == keys[a:] and itk[:b] == keys[:b]
        assert itk[a:b:2] == keys[a:b:2] and itk[::-1] == keys[::-1]


def test_index_to_key_bulk_reports_the_damaged_row(tmp_path, monkeypatch):
    from embq._store import _IndexToKey

    p = _good(tmp_path, n=50)
    with h5py.File(p, "r+") as f:
        u = f["keys/utf8"][...]
        u[int(f["keys/offsets"][33]) + 1] = 0xC3  # starts a 2-byte sequence the key cuts off
        f["keys/utf8"][...] = u
    monkeypatch.setattr(_IndexToKey, "_ITER_BLOCK", 16)
    with embq.open(p) as s:
        assert s.index_to_key[:32] == [f"w{i}" for i in range(32)]
        for get in (lambda: s.index_to_key[:], lambda: list(s.index_to_key),
                    lambda: s.index_to_key[30:40]):
            with pytest.raises(StoreError, match="key of row 33 is damaged: its bytes are not "
                                                 "UTF-8"):
                get()
