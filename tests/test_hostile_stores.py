"""Crafted hostile stores: every kind of damage, through every entry point.

A store may come from a stranger.  Each damaged file below must give a clear error that names
the file (and the dataset or row where it can): ``StoreError`` from the library, exit code 2
and one line on stderr from the command line, never a traceback, a hang, a huge allocation,
a read of another file, or a wrong answer.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies

import embq
from embq._errors import StoreError
from embq._store import HASH_FUNCTION, PROBING, SCHEME
from embq.cli import main as cli_main

N, D = 40, 6


def _keys(n=N):
    return [f"w{i}" for i in range(n)]


def _good(path, n=N, d=D):
    x = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    embq.save(path, x, _keys(n))
    return path


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


def _object_header_address(path, name):
    with h5py.File(path, "r") as f:
        return h5py.h5o.get_info(f[name].id).addr


def _smash(path, offset, nbytes=24):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes((0xA5 + 37 * i) & 0xFF for i in range(nbytes)))
    return path


# ------------------------------------------------------------------------------------------
# The crafted files.  Each returns (path, what the message must contain).
# ------------------------------------------------------------------------------------------


def damaged_header_codes(tmp_path):
    p = _good(tmp_path / "hdr.h5")
    return _smash(p, _object_header_address(p, "codes")), "codes"


def damaged_header_keys_group(tmp_path):
    p = _good(tmp_path / "hdrk.h5")
    return _smash(p, _object_header_address(p, "keys")), "keys"


def damaged_header_root(tmp_path):
    p = _good(tmp_path / "hdrr.h5")
    return _smash(p, _object_header_address(p, "/"), 64), "HDF5"


def soft_link_loop(tmp_path):
    def fn(f):
        del f["codes"]
        f["codes"] = h5py.SoftLink("/codes")
    return _edit(_good(tmp_path / "loop.h5"), fn), "'codes' is a soft link to '/codes'"


def soft_link_elsewhere(tmp_path):
    def fn(f):
        del f["norms"]
        f["norms"] = h5py.SoftLink("/scales")
    return _edit(_good(tmp_path / "soft.h5"), fn), "'norms' is a soft link"


def external_link(tmp_path):
    other = _good(tmp_path / "other.h5")

    def fn(f):
        del f["scales"]
        f["scales"] = h5py.ExternalLink(os.fspath(other), "/scales")
    return _edit(_good(tmp_path / "ext.h5"), fn), "'scales' is an external link"


def external_raw_storage(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(N, dtype="<f4").tobytes())

    def fn(f):
        del f["scales"]
        f.create_dataset("scales", shape=(N,), dtype="<f4",
                         external=[(os.fspath(secret), 0, 4 * N)])
    return _edit(_good(tmp_path / "raw.h5"), fn), "'scales' keeps its data in external files"


def virtual_dataset(tmp_path):
    other = _good(tmp_path / "src.h5")

    def fn(f):
        del f["norms"]
        layout = h5py.VirtualLayout(shape=(N,), dtype="<f4")
        layout[:] = h5py.VirtualSource(os.fspath(other), "norms", shape=(N,))
        f.create_virtual_dataset("norms", layout)
    return _edit(_good(tmp_path / "vds.h5"), fn), "'norms' is virtual"


def group_for_dataset(tmp_path):
    def fn(f):
        del f["keys/offsets"]
        f.create_group("keys/offsets")
    return _edit(_good(tmp_path / "grp.h5"), fn), "'keys/offsets' is a Group, expected a dataset"


def dataset_for_group(tmp_path):
    def fn(f):
        del f["keys"]
        f["keys"] = np.zeros(3, np.uint8)
    return _edit(_good(tmp_path / "dsg.h5"), fn), "'keys' is a Dataset, expected a group"


def _huge(tmp_path, n, name):
    p = tmp_path / name
    with h5py.File(p, "w") as f:
        a = f.attrs
        a["format"], a["format_version"], a["scheme"] = "embq", np.int64(1), SCHEME
        a["dim"], a["n_rows"], a["embq_version"] = np.int64(D), np.int64(n), "0"
        a["has_keys"] = np.bool_(True)
        # Chunked and never written: the file stays a few KB whatever the shapes claim.
        for nm, dt, shape in (("codes", np.uint8, (n, D)), ("scales", "<f4", (n,)),
                              ("zero_points", np.uint8, (n,)), ("norms", "<f4", (n,)),
                              ("keys/utf8", np.uint8, (n,)), ("keys/offsets", "<i8", (n + 1,)),
                              ("keys/hash", "<i8", (2 * n,))):
            ds = f.create_dataset(nm, shape=shape, dtype=dt, chunks=True)
            if nm == "keys/hash":
                ds.attrs["hash_function"] = HASH_FUNCTION
                ds.attrs["probing"] = PROBING
    assert os.path.getsize(p) < 100_000
    return p, "is chunked"


def huge_chunked_2_24(tmp_path):
    return _huge(tmp_path, 1 << 24, "h24.h5")


def huge_chunked_2_31(tmp_path):
    return _huge(tmp_path, 1 << 31, "h31.h5")


def huge_contiguous_unwritten(tmp_path):
    def fn(f):
        del f["codes"]
        f.create_dataset("codes", shape=(N, D), dtype=np.uint8)  # contiguous, never written
    return _edit(_good(tmp_path / "unw.h5"), fn), "'codes' claims"


def huge_attribute(tmp_path):
    src = _good(tmp_path / "plain.h5")
    p = tmp_path / "attr.h5"
    # A file in the latest format stores attributes densely: no 64 KB limit.
    with h5py.File(src, "r") as f, h5py.File(p, "w", libver="latest") as g:
        for name in f:
            f.copy(name, g)
        g.attrs["big"] = np.zeros(1 << 18)  # 2 MB of metadata
        for name, value in f.attrs.items():
            g.attrs[name] = value
    return p, "attribute 'big'"


def overlapping_datasets(tmp_path):
    # Point 'norms' at the bytes of 'scales' by rewriting its address in the file.
    p = _good(tmp_path / "ovl.h5")
    with h5py.File(p, "r") as f:
        a, b = f["scales"].id.get_offset(), f["norms"].id.get_offset()
    raw = bytearray(p.read_bytes())
    at = raw.find(b.to_bytes(8, "little"))
    assert at > 0 and raw.find(b.to_bytes(8, "little"), at + 1) < 0
    raw[at:at + 8] = a.to_bytes(8, "little")
    p.write_bytes(bytes(raw))
    return p, "share bytes"


def hash_table_rotated(tmp_path):
    def fn(f):
        f["keys/hash"][...] = np.roll(f["keys/hash"][...], 1)
    return _edit(_good(tmp_path / "rot.h5"), fn), "'keys/hash' does not match the keys"


def hash_table_shuffled(tmp_path):
    def fn(f):
        t = f["keys/hash"][...]
        f["keys/hash"][...] = np.random.default_rng(1).permutation(t)
    return _edit(_good(tmp_path / "shuf.h5"), fn), "'keys/hash' does not match the keys"


def fifo(tmp_path):
    p = tmp_path / "pipe.h5"
    os.mkfifo(p)
    return p, "FIFO"


def device(tmp_path):
    return "/dev/zero", "character device"


HOSTILE = [
    damaged_header_codes, damaged_header_keys_group, damaged_header_root, soft_link_loop,
    soft_link_elsewhere, external_link, external_raw_storage, virtual_dataset,
    group_for_dataset, dataset_for_group, huge_chunked_2_24, huge_chunked_2_31,
    huge_contiguous_unwritten, huge_attribute, overlapping_datasets, hash_table_rotated,
    hash_table_shuffled, fifo, device,
]


@pytest.fixture(params=HOSTILE, ids=lambda fn: fn.__name__)
def hostile(request, tmp_path):
    return request.param(tmp_path)


@contextlib.contextmanager
def _address_space(extra):
    # A hostile header must not make embq allocate what it claims: cap the address space at
    # ``extra`` bytes more than now (far below what the headers claim, far above what opening
    # needs, memory maps of the file included).
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as fh:
        cap = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def limited_memory():
    with _address_space(1 << 30):
        yield


@pytest.fixture(autouse=True)
def _no_hang():
    # A FIFO or a device must fail at once; should one ever block, fail instead of hanging.
    def expire(signum, frame):
        raise TimeoutError("no answer within 60 s: embq blocked on a hostile path")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _check_error(exc, path, what):
    msg = str(exc)
    assert os.fspath(path) in msg, msg
    assert what in msg, msg
    assert "\n" not in msg


def test_open_refuses(hostile, limited_memory):
    path, what = hostile
    with pytest.raises(StoreError) as info:
        embq.open(path)
    _check_error(info.value, path, what)
    assert info.value.path == os.fspath(path)


def test_export_refuses(hostile, tmp_path):
    path, what = hostile
    out = tmp_path / "out.txt"
    with pytest.raises(StoreError) as info:
        embq.export(path, out, format="word2vec")
    _check_error(info.value, path, what)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if "embq-tmp" in p]


@pytest.mark.parametrize("command", ["info", "query", "export", "evaluate"])
def test_cli_one_line_exit_2(hostile, command, tmp_path, capsys):
    path, what = hostile
    path = os.fspath(path)
    argv = {
        "info": ["info", path],
        "query": ["query", path, "w1"],
        "export": ["export", path, os.fspath(tmp_path / "o.txt"), "--format", "word2vec"],
        "evaluate": ["evaluate", path, "--analogies", os.fspath(tmp_path / "a.txt")],
    }[command]
    (tmp_path / "a.txt").write_text(": s\nw1 w2 w3 w4\n")
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"embq {command}: error: ") and path in lines[0], lines[0]
    assert what in lines[0], lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------
# Damage that opening cannot see cheaply: found by the first use that depends on it.
# ------------------------------------------------------------------------------------------


def _home_slots(path):
    from embq._kernels_store import hash_key

    with h5py.File(path, "r") as f:
        t = f["keys/hash"][...]
    mask = len(t) - 1
    return t, {r: hash_key(f"w{r}") & mask for r in range(N)}


def swapped_slots(tmp_path):
    """Two rows past the ones open() samples, each at its own home slot, swapped."""
    p = _good(tmp_path / "swap.h5")
    t, home = _home_slots(p)
    at_home = [r for r in range(8, N) if t[home[r]] == r]
    a, b = at_home[0], at_home[-1]
    t[home[a]], t[home[b]] = b, a

    def fn(f):
        f["keys/hash"][...] = t
    return _edit(p, fn), [f"w{a}", f"w{b}"], "'keys/hash' does not match the keys"


def damaged_key_offsets(tmp_path):
    def fn(f):
        f["keys/offsets"][20] = 10**9
    return _edit(_good(tmp_path / "off.h5"), fn), ["w19", "w20"], "key of row 19 is damaged"


def non_utf8_key(tmp_path):
    def fn(f):
        u = f["keys/utf8"][...]
        u[int(f["keys/offsets"][25])] = 0xFF
        f["keys/utf8"][...] = u
    return _edit(_good(tmp_path / "utf.h5"), fn), ["w24"], "key of row 25 is damaged"


LATER = [damaged_key_offsets, non_utf8_key]


@pytest.fixture(params=LATER, ids=lambda fn: fn.__name__)
def damaged(request, tmp_path):
    return request.param(tmp_path)


def _key_lookups(st, key):
    yield lambda: st[key]
    yield lambda: st[[key, "w1"]]
    yield lambda: st.get_index(key)
    yield lambda: st.get_vector(key)
    yield lambda: key in st
    yield lambda: st.key_to_index.get(key)
    yield lambda: st.index_to_key.index(key)
    yield lambda: st.most_similar(positive=[key], topn=3)


def test_damaged_hash_table_never_says_absent(tmp_path, capsys):
    path, keys, what = swapped_slots(tmp_path)
    with embq.open(path) as st:
        for key in keys:
            assert key in st.index_to_key[:]  # listed...
            for lookup in _key_lookups(st, key):  # ...so never reported absent
                with pytest.raises(StoreError, match=what) as info:
                    lookup()
                _check_error(info.value, path, what)
        # Keys the damage does not touch still answer, and rows still read.
        assert st.get_index("w1") == 1 and st[2].shape == (D,)
    # Export reads keys in row order, not through the table: still exact.
    out = tmp_path / "o.txt"
    embq.export(path, out, format="glove")
    assert [line.split()[0] for line in out.read_text().splitlines()] == _keys()
    code = cli_main(["query", os.fspath(path), keys[0]])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.splitlines()) == 1 and what in err, err


def test_damaged_keys_at_use(damaged, tmp_path):
    path, _, what = damaged
    with embq.open(path) as st:
        uses = [lambda: st.index_to_key[:], lambda: list(st.index_to_key),
                lambda: st.index_to_key[: N - 1], lambda: dict(st.key_to_index)]
        if "row" in what:
            row = int(what.split("row ")[1].split()[0])
            uses.append(lambda: st.index_to_key[row])
        for use in uses:
            with pytest.raises(StoreError) as info:
                use()
            _check_error(info.value, path, "damaged" if "row" in what else what)
        assert st.index_to_key[:3] == ["w0", "w1", "w2"]
        assert np.ravel(st.search(st[0], 1)[1]).tolist() == [0]


def test_damaged_keys_export_and_evaluate(damaged, tmp_path, capsys):
    from embq._evaluate import evaluate_store

    path, _, _ = damaged
    out = tmp_path / "out.txt"
    with pytest.raises(StoreError):
        embq.export(path, out, format="word2vec")
    assert not out.exists()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"w{i}\tw{i + 1}\t{i}\n" for i in range(N - 1)))
    with embq.open(path) as st:
        with pytest.raises(StoreError):
            evaluate_store(st, pairs=[pairs])
    for argv in (["export", os.fspath(path), os.fspath(out), "--format", "glove"],
                 ["evaluate", os.fspath(path), "--pairs", os.fspath(pairs)]):
        code = cli_main(argv)
        _, err = capsys.readouterr()
        assert code == 2 and len(err.splitlines()) == 1 and os.fspath(path) in err, err


# ------------------------------------------------------------------------------------------
# Odd but valid: answered correctly, or refused with the expected built-in error.
# ------------------------------------------------------------------------------------------


def test_index_far_out_of_range(tmp_path):
    with embq.open(_good(tmp_path / "s.h5")) as st:
        for index in (2**70, -(2**70), [2**70], [1, 2**70], np.array([2**63 + 3], np.uint64),
                      np.array([2**70], object), N, [-N - 1]):
            with pytest.raises(IndexError, match=rf"out of range: this store has {N} rows "
                                                 rf"\(valid rows: -{N} to {N - 1}\)"):
                st[index]
        with pytest.raises(IndexError, match=f"valid: -{N} to {N - 1}"):
            st.index_to_key[2**70]


def _dim0(tmp_path):
    p = _good(tmp_path / "d0.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["dim"] = np.int64(0)
        del f["codes"]
        f.create_dataset("codes", shape=(N, 0), dtype=np.uint8)
    return p


@pytest.mark.parametrize("fmt", ["word2vec", "word2vec-binary", "glove", "npy"])
def test_dimension_zero_exports(tmp_path, fmt):
    p = _dim0(tmp_path)
    with embq.open(p) as st:
        assert st.shape == (N, 0) and st[3].shape == (0,) and st["w3"].shape == (0,)
    out = tmp_path / f"o.{fmt}"
    s = embq.export(p, out, format=fmt)
    assert s["rows"] == N and s["dim"] == 0
    if fmt == "npy":
        assert np.load(out).shape == (N, 0)
        assert (tmp_path / "o.keys.txt").read_text().split() == _keys()
    elif fmt == "glove":
        assert out.read_text().split("\n")[:2] == ["w0", "w1"]
    elif fmt == "word2vec":
        assert out.read_text().split("\n")[:2] == [f"{N} 0", "w0"]


def test_info_shows_odd_attributes(tmp_path, capsys):
    p = _good(tmp_path / "s.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["source_path"] = "in.vec"
        f.attrs["source_size"] = "lots"
        f.attrs["error_mean_abs_over_scale"] = "n/a"
        f.attrs["error_max_abs_over_scale"] = 0.5
        f.attrs["note"] = "two\nlines"
        f.attrs["vector"] = np.arange(3)
    assert cli_main(["info", os.fspath(p)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "source       in.vec (?, size 'lots')" in out
    assert "error " not in out  # no figure to show
    assert "source_size                lots" in out and "two\\nlines" in out and "[0 1 2]" in out
    assert cli_main(["info", "--json", os.fspath(p)]) == 0
    assert '"source_size": "lots"' in capsys.readouterr().out


def test_gigantic_sparse_key_is_not_copied_at_open(tmp_path):
    # A sparse file can hold a 2 GB "key" that takes no disk space: opening, lookups and the
    # table checks must not copy it (only asking for that key itself would).
    from embq._kernels_store import hash_key

    big = 1 << 31
    p = tmp_path / "sparse.h5"
    with h5py.File(p, "w") as f:
        a = f.attrs
        a["format"], a["format_version"], a["scheme"] = "embq", np.int64(1), SCHEME
        a["dim"], a["n_rows"], a["embq_version"] = np.int64(2), np.int64(3), "0"
        a["has_keys"] = np.bool_(True)
        for name, dt, data in (("codes", np.uint8, np.full((3, 2), 128, np.uint8)),
                               ("scales", "<f4", np.ones(3, np.float32)),
                               ("zero_points", np.uint8, np.full(3, 128, np.uint8)),
                               ("norms", "<f4", np.zeros(3, np.float32))):
            f.create_dataset(name, data=np.asarray(data, dt))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # allocated...
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # ...but never written: a hole
        g = f.create_group("keys")
        space = h5py.h5s.create_simple((big + 4,))
        h5py.h5d.create(g.id, b"utf8", h5py.h5t.STD_U8LE, space, dcpl=dcpl)
        g["utf8"][big:] = np.frombuffer(b"abcd", np.uint8)
        g["offsets"] = np.array([0, big, big + 2, big + 4], "<i8")
        table = np.full(8, -1, "<i8")
        for row, key in ((1, "ab"), (2, "cd")):
            slot = hash_key(key) & 7
            while table[slot] != -1:
                slot = (slot + 1) & 7
            table[slot] = row
        table[np.flatnonzero(table == -1)[0]] = 0
        g["hash"] = table
        g["hash"].attrs["hash_function"] = HASH_FUNCTION
        g["hash"].attrs["probing"] = PROBING
    assert os.stat(p).st_blocks * 512 < 10 << 20  # the hole takes no disk space
    # Room to map the 2 GB file, not to copy the key as well.
    with _address_space(3 << 30), embq.open(p) as st:
        assert st.get_index("ab") == 1 and st.index_to_key[2] == "cd"
        for probe in ("x", "y", "zz", "abc", "q1", "q2", "q3", "q4"):
            assert probe not in st


@pytest.mark.parametrize("command", ["info", "query", "export", "evaluate"])
def test_directory_as_store(tmp_path, command, capsys):
    with pytest.raises(IsADirectoryError, match="is a directory, not a store"):
        embq.open(tmp_path)
    argv = {"info": ["info"], "query": ["query"], "evaluate": ["evaluate"],
            "export": ["export"]}[command] + [os.fspath(tmp_path)]
    argv += {"query": ["w1"], "export": [os.fspath(tmp_path / "o.npy"), "--format", "npy"],
             "evaluate": ["--pairs", os.fspath(tmp_path / "p.tsv")]}.get(command, [])
    (tmp_path / "p.tsv").write_text("a\tb\t1\n")
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "is a directory" in err and os.fspath(tmp_path) in err


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=strategies.lists(strategies.text(min_size=1, max_size=6), min_size=1,
                            max_size=300, unique=True),
       probes=strategies.lists(strategies.text(min_size=1, max_size=7), max_size=60))
def test_the_miss_check_never_fires_on_a_sound_table(tmp_path_factory, keys, probes):
    # The table check must not mistake a sound table for a damaged one: every key is found at
    # its row and every other string is simply absent, through each lookup, twice (the second
    # time over slots already found consistent).
    keys = [k for k in keys if not any("\ud800" <= c <= "\udfff" for c in k)]  # UTF-8 only
    if not keys:
        return
    p = tmp_path_factory.mktemp("prop") / "s.h5"
    embq.save(p, np.ones((len(keys), 2), np.float32), keys)
    index = {k: i for i, k in enumerate(keys)}
    with embq.open(p) as store:
        for _ in range(2):
            for k in probes + keys[:50]:
                want = index.get(k)
                assert (k in store) == (want is not None)
                assert store.get_index(k, -1) == (-1 if want is None else want)
                assert store.key_to_index.get(k) == want


# ------------------------------------------------------------------------------------------
# Damaged global heap collections (where HDF5 keeps variable-length strings: the values of
# str attributes).  libhdf5 loops forever on a free-space object of size 0, reads out of its
# buffer on an object reaching past the collection, and allocates and clears whatever length
# a string's reference claims; a coverage-guided fuzzer found all three.  Each file is opened
# in a child process with a timeout, so a regression fails the test instead of hanging (or
# crashing) the suite.
# ------------------------------------------------------------------------------------------

_GCOL = b"GCOL"


def _heap_store(tmp_path, name="heap.embq", n=6, d=8):
    path = tmp_path / name
    x = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
    embq.save(path, x, _keys(n))
    data = bytearray(path.read_bytes())
    assert data.count(_GCOL) == 1, "expected one global heap collection in a fresh store"
    return path, data


def _heap_objects(data, gcol):
    """(offset, index, size) of each object of the collection at ``gcol`` (8-byte lengths)."""
    size = int.from_bytes(data[gcol + 8:gcol + 16], "little")
    p, out = gcol + 16, []
    while p + 16 <= gcol + size:
        index = int.from_bytes(data[p:p + 2], "little")
        osize = int.from_bytes(data[p + 8:p + 16], "little")
        out.append((p, index, osize))
        if index == 0:
            break
        p += 16 + ((osize + 7) & ~7)
    return out


def _set_object(data, offset, index, size):
    data[offset:offset + 2] = index.to_bytes(2, "little")
    data[offset + 8:offset + 16] = size.to_bytes(8, "little")


def _reference(data, gcol, index):
    """Offset of the vlen reference (length, collection, index) to object ``index``."""
    objects = {i: s for _, i, s in _heap_objects(data, gcol)}
    ref = objects[index].to_bytes(4, "little") + gcol.to_bytes(8, "little") \
        + index.to_bytes(4, "little")
    assert data.count(ref) == 1
    return data.index(ref)


def heap_first_object_free_size_0(tmp_path):
    # As in most of the 27 fuzzer files: the walk meets index 0, size 0, and never advances.
    path, data = _heap_store(tmp_path)
    gcol = data.index(_GCOL)
    first = _heap_objects(data, gcol)[0][0]
    _set_object(data, first, 0, 0)
    path.write_bytes(data)
    return path, f"free-space object of 0 bytes at byte {first:,}"


def heap_later_object_free_size_0(tmp_path):
    path, data = _heap_store(tmp_path)
    gcol = data.index(_GCOL)
    third = _heap_objects(data, gcol)[2][0]
    _set_object(data, third, 0, 0)
    path.write_bytes(data)
    return path, "would loop forever"


def heap_free_space_smaller_than_header(tmp_path):
    path, data = _heap_store(tmp_path)
    gcol = data.index(_GCOL)
    offset, index, _ = _heap_objects(data, gcol)[-1]
    assert index == 0
    _set_object(data, offset, 0, 8)
    path.write_bytes(data)
    return path, "smaller than its own 16-byte header"


def heap_object_past_collection(tmp_path):
    path, data = _heap_store(tmp_path)
    gcol = data.index(_GCOL)
    offset, index, _ = _heap_objects(data, gcol)[1]
    _set_object(data, offset, index, 1 << 20)
    path.write_bytes(data)
    return path, "reaching past the collection's end"


def heap_collection_past_end_of_file(tmp_path):
    path, data = _heap_store(tmp_path)
    gcol = data.index(_GCOL)
    data[gcol + 8:gcol + 16] = (len(data) - gcol + 4096).to_bytes(8, "little")
    path.write_bytes(data)
    return path, f"of a {len(data):,}-byte file"


def heap_planted_in_codes(tmp_path):
    # A hostile file can point a string anywhere, even into a dataset's bytes: a hanging
    # collection planted in 'codes' must be caught too (no scan of the metadata would see it).
    path, data = _heap_store(tmp_path, n=600, d=16)
    with h5py.File(path, "r") as f:
        codes = f["codes"].id.get_offset()
    gcol = data.index(_GCOL)
    ref = _reference(data, gcol, 1)  # the first string written: 'format'
    planted = bytearray(_GCOL + b"\x01\x00\x00\x00" + (4096).to_bytes(8, "little"))
    planted += (1).to_bytes(2, "little") + bytes(6) + (4).to_bytes(8, "little") + b"embq" + bytes(4)
    planted += bytes(16)  # index 0, size 0
    data[codes:codes + len(planted)] = planted
    data[ref + 4:ref + 12] = codes.to_bytes(8, "little")
    path.write_bytes(data)
    return path, f"the global heap collection at byte {codes:,} has a free-space object of 0 bytes"


def vlen_length_4_gb(tmp_path):
    # libhdf5 allocates and clears what a string's reference claims before reading the heap.
    path, data = _heap_store(tmp_path)
    gcol = data.index(_GCOL)
    ref = _reference(data, gcol, 1)
    data[ref:ref + 4] = (0xF7000004).to_bytes(4, "little")
    path.write_bytes(data)
    return path, "claims 4,143,972,356 bytes of variable-length data"


def vlen_kind_9(tmp_path):
    # A variable-length type that is neither a sequence nor a string crashes libhdf5.
    path, data = _heap_store(tmp_path)
    data[_format_datatype(data) + 1] = 0x09
    path.write_bytes(data)
    return path, "variable-length datatype of kind 9"


def _format_datatype(data):
    gcol = data.index(_GCOL)
    ref = _reference(data, gcol, 1)
    return data.rindex(b"\x19\x01\x01\x00\x10\x00\x00\x00", 0, ref)


def vlen_element_size_1(tmp_path):
    # libhdf5 keeps 1 byte of data but converts a 16-byte reference, taking what follows the
    # data as the length to allocate (gigabytes, found by the fuzzer).
    path, data = _heap_store(tmp_path)
    dtype = _format_datatype(data)
    data[dtype + 4:dtype + 8] = (1).to_bytes(4, "little")
    path.write_bytes(data)
    return path, "variable-length datatype of 1 bytes, expected 16"


HEAP_DAMAGE = [
    heap_first_object_free_size_0, heap_later_object_free_size_0,
    heap_free_space_smaller_than_header, heap_object_past_collection,
    heap_collection_past_end_of_file, heap_planted_in_codes, vlen_length_4_gb, vlen_kind_9,
    vlen_element_size_1,
]


def _run(args, timeout=60):
    import subprocess
    import sys

    # 2 GB of address space: far below what a 4 GB claim needs, far above what opening needs.
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            + args[0])
    return subprocess.run([sys.executable, "-c", code, *args[1:]], capture_output=True,
                          text=True, timeout=timeout, cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))))


@pytest.mark.parametrize("make", HEAP_DAMAGE, ids=lambda fn: fn.__name__)
def test_damaged_heap_refused_at_open_without_hang(make, tmp_path):
    path, what = make(tmp_path)
    with h5py.File(path, "r"):
        pass  # the damage is in the heap and the references only: HDF5 itself opens the file
    r = _run(["import embq, sys\n"
              "try:\n    embq.open(sys.argv[1])\n"
              "except embq.StoreError as exc:\n    print(exc); sys.exit(3)\n",
              os.fspath(path)])
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    _check_error(r.stdout.strip(), path, what)
    assert "of the root group" in r.stdout, r.stdout  # names the attribute being read


@pytest.mark.parametrize("make", HEAP_DAMAGE, ids=lambda fn: fn.__name__)
def test_damaged_heap_cli_info_exit_2(make, tmp_path):
    path, what = make(tmp_path)
    r = _run(["import sys; from embq.cli import main; sys.exit(main(sys.argv[1:]))",
              "info", os.fspath(path)])
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("embq info: error: "), r.stderr
    assert os.fspath(path) in lines[0] and what in lines[0], lines[0]


def test_heap_checks_keep_sound_stores(tmp_path):
    # Strings everywhere a store may hold them: embq's own, user strings and arrays of them,
    # enough attributes for the object header to continue in a second chunk, and a copy with
    # version 2 object headers ("OHDR", libver='latest').
    path = tmp_path / "s.embq"
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    attrs = {f"note{i}": "é" * (i * 50) for i in range(40)}
    attrs["tags"] = np.array(["x", "yy", ""], dtype=object)
    embq.save(path, x, _keys(5), attrs=attrs)
    st = embq.open(path)
    assert st.attrs["note39"] == "é" * 1950 and list(st.attrs["tags"]) == ["x", "yy", ""]
    st.close()
    v2 = tmp_path / "v2.embq"
    with h5py.File(path, "r") as src, h5py.File(v2, "w", libver="latest") as dst:
        for k in ("format", "format_version", "scheme", "dim", "n_rows", "has_keys", "tags"):
            dst.attrs[k] = src.attrs[k]
        for name in ("codes", "scales", "zero_points", "norms", "keys"):
            src.copy(name, dst)
    assert b"OHDR" in v2.read_bytes()
    with embq.open(v2) as st:
        assert list(st.attrs["tags"]) == ["x", "yy", ""]
        np.testing.assert_array_equal(st.get_vector("w3"), embq.open(path).get_vector("w3"))


def test_dense_attribute_storage_is_refused_with_a_reason(tmp_path):
    path = tmp_path / "s.embq"
    embq.save(path, np.ones((2, 3), np.float32))
    dense = tmp_path / "dense.embq"
    with h5py.File(path, "r") as src, h5py.File(dense, "w", libver="latest") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for i in range(9):
            dst.attrs[f"x{i}"] = i
        for name in ("codes", "scales", "zero_points", "norms"):
            src.copy(name, dst)
    with pytest.raises(StoreError, match="dense attribute storage") as info:
        embq.open(dense)
    _check_error(info.value, dense, "attribute 'embq_version' of the root group")


def test_guarded_file_refuses_impossible_addresses(tmp_path):
    from embq._hdf5_check import GuardedFile

    path = _good(tmp_path / "g.embq")
    with GuardedFile(os.open(path, os.O_RDONLY), os.path.getsize(path)) as fh:
        with pytest.raises(OSError, match="past any file"):
            fh.seek(1 << 63)
        assert fh.refusal is not None


def _libhdf5_walk(data, size, max_steps=1000):
    """libhdf5's own walk over a collection (H5HG__cache_heap_deserialize), capped (a
    512-byte collection has at most 31 objects):
    'loops' if it does not finish, 'out' if an object reaches past the collection."""
    p, steps = 16, 0
    while p < size:
        steps += 1
        if steps > max_steps:
            return "loops"
        if p + 16 > size:
            p = size
            continue
        index = int.from_bytes(data[p:p + 2], "little")
        osize = int.from_bytes(data[p + 8:p + 16], "little")
        need = osize if index == 0 else 16 + ((osize + 7) & ~7)
        if p + need > size or (index and p + 16 + osize > size):
            return "out"
        p = (p + need) % (1 << 64)  # size_t arithmetic, as in C
    return "ends"


@settings(max_examples=300, deadline=None)
@given(objects=strategies.lists(
    strategies.tuples(strategies.integers(0, 4), strategies.sampled_from(
        [0, 1, 4, 8, 15, 16, 23, 24, 40, 100, 4000, 1 << 40, (1 << 64) - 8])),
    min_size=1, max_size=12))
def test_check_global_heap_passes_only_walks_that_end_inside(objects):
    from embq._hdf5_check import check_global_heap

    size = 512
    data = bytearray(_GCOL + b"\x01\x00\x00\x00" + size.to_bytes(8, "little"))
    for index, osize in objects:
        data += index.to_bytes(2, "little") + bytes(6) + osize.to_bytes(8, "little")
        data += bytes((min(osize, 64) + 7) & ~7)
    data = bytes(data[:size].ljust(size, b"\x00"))
    verdict = check_global_heap(data, 4096, 4096 + size, 8)
    if verdict is None:
        assert _libhdf5_walk(data, size) == "ends"
    walk = _libhdf5_walk(data, size)
    if walk != "ends":
        assert verdict is not None, walk


def test_vlen_nbytes_counts_base_type_units(tmp_path):
    # A length counts base-type units: with 8-byte characters, 'embq' claims 32 bytes.
    from embq._hdf5_check import AttributeMessages

    path, data = _heap_store(tmp_path)
    dtype = _format_datatype(data)
    data[dtype + 12:dtype + 16] = (8).to_bytes(4, "little")  # base size
    data[dtype + 18:dtype + 20] = (64).to_bytes(2, "little")  # base precision, in bits
    path.write_bytes(data)
    with h5py.File(path, "r") as f:
        addr = h5py.h5o.get_info(f.id).addr
    fd = os.open(path, os.O_RDONLY)
    try:
        messages = AttributeMessages(fd, len(data), addr, 8, 8)
        assert messages.vlen_nbytes("format", 1) == [32]
        assert messages.vlen_nbytes("scheme", 1) == [23]
    finally:
        os.close(fd)
