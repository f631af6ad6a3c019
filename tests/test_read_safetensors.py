"""Reading safetensors: float32/float16/bfloat16/float64 tensors, tensor choice, bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from formats_util import assert_same_store, cli_error, compressed, npy_store, rows, store_arrays
from safetensors.numpy import save_file

import embq
from embq import FormatError, detect_format, load_embeddings, open_embeddings
from embq import _read_safetensors as rs

N, D = 203, 12


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even (as torch does)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def write_raw(path, tensors: dict, metadata=None, pad=True) -> None:
    """A safetensors file written byte by byte: ``tensors`` maps name -> (dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def keys_of(n):
    return [f"tok{i}" for i in range(n)]


def write_keys(tmp_path, keys, name="vocab.txt"):
    p = tmp_path / name
    p.write_text("".join(k + "\n" for k in keys), encoding="utf8")
    return p


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_same_store_as_npy(tmp_path, dtype):
    x = rows(N, D).astype(dtype)
    st = tmp_path / "model.safetensors"
    save_file({"embeddings.word_embeddings.weight": x, "bias": np.zeros(D, dtype)}, str(st))
    assert detect_format(st) == "safetensors"
    keys = keys_of(N)
    kp = write_keys(tmp_path, keys)
    got = compressed(tmp_path, st, keys=kp, block_rows=50)
    # float16 widens exactly to float32; float64 rounds to float32 as the .npy reader does.
    assert_same_store(got, npy_store(tmp_path, x, keys))
    attrs = store_arrays(got)["attrs"]
    assert attrs["source_format"] == "safetensors"
    assert attrs["source_tensor"] == "embeddings.word_embeddings.weight"
    assert attrs["source_rows"] == N


def test_bfloat16_widened_exactly(tmp_path):
    x = rows(N, D)
    bits = to_bf16_bits(x)
    widened = (bits.astype(np.uint32) << 16).view(np.float32)
    assert np.abs(widened - x).max() <= np.abs(x).max() / 128  # it is bfloat16 of x
    st = tmp_path / "bf16.safetensors"
    write_raw(st, {"w": ("BF16", (N, D), bits.tobytes())})
    k, v = load_embeddings(st, block_rows=17)
    assert k is None and v.dtype == np.float32 and v.tobytes() == widened.tobytes()
    got = compressed(tmp_path, st, block_rows=64, normalize=True, limit=150)
    assert_same_store(got, npy_store(tmp_path, widened, normalize=True, limit=150))


def test_reopened_every_few_blocks_same_rows(tmp_path, monkeypatch):
    # The file is reopened to bound memory; the rows read across reopenings are the same.
    monkeypatch.setattr(rs, "_REOPEN_BYTES", 3 * 7 * D * 4)
    x = rows(N, D).astype(np.float16)
    st = tmp_path / "m.safetensors"
    save_file({"w": x}, str(st))
    _, v = load_embeddings(st, block_rows=7)
    assert v.tobytes() == x.astype(np.float32).tobytes()


def test_reader_interface(tmp_path):
    x = rows(N, D)
    st = tmp_path / "m.safetensors"
    save_file({"w": x}, str(st))
    with open_embeddings(st, block_rows=100, limit=150) as r:
        assert (r.format, r.dim, r.count, r.compression, r.limit) == ("safetensors", D, N, None,
                                                                      150)
        assert r.size == st.stat().st_size and not r.has_keys
        blocks = list(r)
        assert [len(b.vectors) for b in blocks] == [100, 50]
        assert [b.first_line for b in blocks] == [1, 101]
        assert r.rows_read == 150 and r.bytes_read <= r.size
        with pytest.raises(ValueError, match="only once"):
            iter(r)
    with pytest.raises(ValueError, match="closed"):
        iter(r)


def test_tensor_choice(tmp_path, capsys):
    x = rows(N, D)
    st = tmp_path / "two.safetensors"
    save_file({"a": x, "b": x[:5, :3].copy(), "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
               "cube": np.zeros((2, 2, 2), np.float32)}, str(st))
    with pytest.raises(FormatError) as e:
        open_embeddings(st)
    msg = str(e.value)
    assert "2 2-D floating tensors" in msg and "a [203, 12] F32" in msg and "b [5, 3] F32" in msg
    assert "--tensor" in msg
    _, v = load_embeddings(st, tensor="b")
    assert v.tobytes() == x[:5, :3].tobytes()
    line = cli_error(capsys, "compress", st, tmp_path / "o.embq", "--tensor", "nope")
    assert "no tensor named 'nope'" in line and "a [203, 12] F32" in line
    line = cli_error(capsys, "compress", st, tmp_path / "o.embq", "--tensor", "cube")
    assert "'cube' has shape [2, 2, 2] (3-D); expected a 2-D tensor" in line
    line = cli_error(capsys, "compress", st, tmp_path / "o.embq", "--tensor", "ids")
    assert "'ids' has dtype I64; expected floats" in line
    one = tmp_path / "one.safetensors"
    save_file({"v": np.zeros(4, np.float32), "i": np.zeros((2, 2), np.int32)}, str(one))
    line = cli_error(capsys, "compress", one, tmp_path / "o.embq")
    assert "no 2-D floating tensor" in line and "i [2, 2] I32" in line
    line = cli_error(capsys, "compress", one, tmp_path / "o.embq", "--tensor", "v")
    assert "'v' has shape [4] (1-D)" in line
    assert not (tmp_path / "o.embq").exists()


def bad_file_message(capsys, tmp_path, path) -> str:
    line = cli_error(capsys, "compress", path, tmp_path / "o.embq", "--format", "safetensors")
    assert line.startswith(f"embq compress: {path}") or str(path) in line
    return line


def test_damaged_files(tmp_path, capsys):
    x = rows(10, 4)
    good = tmp_path / "good.safetensors"
    write_raw(good, {"w": ("F32", (10, 4), x.tobytes())})
    data = good.read_bytes()
    hlen = struct.unpack("<Q", data[:8])[0]

    cut = tmp_path / "cut_header.safetensors"
    cut.write_bytes(data[: 8 + hlen // 2])
    assert "the header length is" in bad_file_message(capsys, tmp_path, cut)
    assert "truncated" in bad_file_message(capsys, tmp_path, cut)

    short = tmp_path / "cut_data.safetensors"
    short.write_bytes(data[:-10])
    line = bad_file_message(capsys, tmp_path, short)
    assert "tensor 'w' ends at byte 160 of the data but the data holds 150" in line

    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\x01\x00")
    assert "8-byte header length" in bad_file_message(capsys, tmp_path, tiny)

    notjson = tmp_path / "notjson.safetensors"
    notjson.write_bytes(struct.pack("<Q", 8) + b"{nope!!}" + b"")
    assert "the header is not JSON" in bad_file_message(capsys, tmp_path, notjson)

    overlap = tmp_path / "overlap.safetensors"
    h = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                    "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}).encode()
    overlap.write_bytes(struct.pack("<Q", len(h)) + h + bytes(24))
    assert "tensor 'b' (bytes 8..24 of the data) overlaps tensor 'a'" in bad_file_message(
        capsys, tmp_path, overlap)

    hole = tmp_path / "hole.safetensors"
    h = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}).encode()
    hole.write_bytes(struct.pack("<Q", len(h)) + h + bytes(24))
    assert "8 bytes of the data before tensor 'a' belong to no tensor" in bad_file_message(
        capsys, tmp_path, hole)

    extra = tmp_path / "extra.safetensors"
    extra.write_bytes(data + b"junk")
    assert "4 bytes follow the last tensor's data" in bad_file_message(capsys, tmp_path, extra)

    wrong = tmp_path / "size.safetensors"
    h = json.dumps({"a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    wrong.write_bytes(struct.pack("<Q", len(h)) + h + bytes(16))
    assert "needs 8 bytes but its data_offsets [0, 16] hold 16" in bad_file_message(
        capsys, tmp_path, wrong)


def test_nonfinite_value_names_the_row(tmp_path, capsys):
    x = rows(30, 4).astype(np.float16)
    x[17, 2] = np.inf
    st = tmp_path / "inf.safetensors"
    save_file({"emb": x}, str(st))
    line = cli_error(capsys, "compress", st, tmp_path / "o.embq", "--block-rows", "8")
    assert "row 17 of tensor 'emb' holds inf" in line and "expected finite values" in line
    big = tmp_path / "big.safetensors"
    y = np.ones((3, 2))
    y[1, 1] = 1e300  # outside float32
    save_file({"emb": y}, str(big))
    assert "row 1 of tensor 'emb' holds 1e+300" in cli_error(capsys, "compress", big,
                                                             tmp_path / "o.embq")


def test_keys_file_line_count(tmp_path, capsys):
    x = rows(20, 4)
    st = tmp_path / "m.safetensors"
    save_file({"emb": x}, str(st))
    few = write_keys(tmp_path, keys_of(19), "few.txt")
    line = cli_error(capsys, "compress", st, tmp_path / "o.embq", "--keys", few)
    assert "line 20" in line and "ends after 19 keys" in line and "20 rows" in line
    many = write_keys(tmp_path, keys_of(21), "many.txt")
    line = cli_error(capsys, "compress", st, tmp_path / "o.embq", "--keys", many)
    assert "line 21" in line and "more keys than the 20 rows of tensor 'emb'" in line
    # With --limit only the keys of the rows read are needed.
    out = tmp_path / "lim.embq"
    embq.compress(str(st), str(out), keys=str(few), limit=19)
    assert store_arrays(out)["keys"] == keys_of(19)


def test_duplicate_keys_as_for_text(tmp_path):
    x = rows(6, 4)
    st = tmp_path / "m.safetensors"
    save_file({"emb": x}, str(st))
    kp = write_keys(tmp_path, ["a", "b", "a", "c", "d", "e"])
    warned = []
    s = embq.compress(str(st), str(tmp_path / "o.embq"), keys=str(kp), warn=warned.append)
    assert s["duplicates"] == 1 and "'a' on row 2 of tensor 'emb'" in warned[0]
    with pytest.raises(FormatError, match="duplicate key 'a' on row 2 of tensor 'emb'"):
        embq.compress(str(st), str(tmp_path / "p.embq"), keys=str(kp), on_duplicate="error")


def test_options_for_other_formats_refused(tmp_path):
    st = tmp_path / "m.safetensors"
    save_file({"emb": rows(4, 3)}, str(st))
    with pytest.raises(ValueError, match=r"vector_column .* is only used with"):
        open_embeddings(st, vector_column="v")
    with pytest.raises(ValueError, match=r"tensor .* is only used with safetensors"):
        open_embeddings(_npy(tmp_path), tensor="w")
    with pytest.raises(ValueError, match="standard input"):
        open_embeddings("-", format="safetensors")


def _npy(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.ones((2, 2), np.float32))
    return p


def test_evaluate_against_the_safetensors_original(tmp_path):
    x = rows(N, D).astype(np.float16)
    st = tmp_path / "m.safetensors"
    save_file({"emb": x}, str(st))
    kp = write_keys(tmp_path, keys_of(N))
    out = compressed(tmp_path, st, keys=kp)
    with embq.open(str(out)) as store:
        report = embq.compare_with_original(store, str(st), sample=50)
    assert report["original_options"]["format"] == "safetensors"
    assert report["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
