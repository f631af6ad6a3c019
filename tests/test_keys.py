"""Keys for matrix formats: keys files and Hugging Face tokenizer.json; and .npz arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from formats_util import assert_same_store, cli_error, compressed, npy_store, rows, store_arrays
from safetensors.numpy import save_file

import embq
from embq import FormatError, load_embeddings, open_embeddings
from embq._keys import open_keys, tokenizer_vocabulary


def wordpiece(vocab: list[str], added=()) -> dict:
    return {"version": "1.0", "added_tokens": [
        {"id": i, "content": t, "single_word": False, "special": True} for i, t in added],
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "vocab": {t: i for i, t in enumerate(vocab)}}}


def write_json(path, doc):
    path.write_text(json.dumps(doc), encoding="utf8")
    return path


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "the", "##s", "cat", "\u00e9t\u00e9", "a b"]


def test_wordpiece_with_repeated_added_tokens(tmp_path):
    # BERT lists its special tokens in the vocabulary and again among the added tokens.
    tok = write_json(tmp_path / "tokenizer.json",
                     wordpiece(VOCAB, added=[(0, "[PAD]"), (1, "[UNK]"), (2, "[CLS]")]))
    x = rows(len(VOCAB), 6)
    st = tmp_path / "model.safetensors"
    save_file({"embeddings.word_embeddings.weight": x}, str(st))
    got = compressed(tmp_path, st, keys=tok, block_rows=3)
    assert_same_store(got, npy_store(tmp_path, x, VOCAB))
    assert store_arrays(got)["attrs"]["source_keys_path"] == str(tok)


def test_bpe_with_added_tokens_past_the_vocab_and_npy(tmp_path):
    vocab = {"<s>": 0, "</s>": 1, "\u0120the": 3, "a": 2}
    doc = {"model": {"type": "BPE", "vocab": vocab, "merges": []},
           "added_tokens": [{"id": 4, "content": "<mask>"}, {"id": 5, "content": "<pad>"}]}
    tok = write_json(tmp_path / "tokenizer.json", doc)
    assert tokenizer_vocabulary(str(tok)) == {0: "<s>", 1: "</s>", 2: "a", 3: "\u0120the",
                                              4: "<mask>", 5: "<pad>"}
    x = rows(6, 4)
    npy = tmp_path / "m.npy"
    np.save(npy, x)
    keys, v = load_embeddings(npy, keys_path=tok, block_rows=4)
    assert keys == ["<s>", "</s>", "a", "\u0120the", "<mask>", "<pad>"]
    assert v.tobytes() == x.tobytes()
    with open_embeddings(npy, keys_path=tok) as r:
        assert r.has_keys and r.format == "npy" and r.describe_row(3).startswith("row 3 (line 4")


def test_unigram(tmp_path):
    doc = {"model": {"type": "Unigram", "unk_id": 0,
                     "vocab": [["<unk>", 0.0], ["\u2581the", -1.5], ["s", -3.0]]},
           "added_tokens": [{"id": 0, "content": "<unk>"}]}
    tok = write_json(tmp_path / "spm.json", doc)
    x = rows(3, 5)
    st = tmp_path / "m.safetensors"
    save_file({"shared.weight": x}, str(st))
    keys, _ = load_embeddings(st, keys_path=tok)
    assert keys == ["<unk>", "\u2581the", "s"]


def test_tokenizer_errors(tmp_path, capsys):
    x = rows(len(VOCAB), 3)
    st = tmp_path / "m.safetensors"
    save_file({"w": x}, str(st))
    out = tmp_path / "o.embq"

    def err(doc, name="tokenizer.json"):
        p = write_json(tmp_path / name, doc) if not isinstance(doc, str) else tmp_path / name
        if isinstance(doc, str):
            p.write_text(doc)
        line = cli_error(capsys, "compress", st, out, "--keys", p)
        assert str(p) in line
        return line

    gap = wordpiece(VOCAB[:-1])  # 7 ids for 8 rows
    line = err(gap)
    assert "gives 7 token ids but tensor 'w'" in line and "8 rows" in line
    assert "first gap: no token has id 7" in line
    hole = wordpiece(VOCAB)
    hole["model"]["vocab"]["a b"] = 9
    line = err(hole)
    assert "first gap: no token has id 7" in line and "id 9 ('a b') is past the last row" in line
    repeat = wordpiece(VOCAB)
    repeat["model"]["vocab"]["cat"] = 3
    assert "id 3 is given twice in model.vocab, to 'the' and to 'cat'" in err(repeat)
    clash = wordpiece(VOCAB, added=[(2, "[MASK]")])
    assert "id 2 is given twice, to '[CLS]' and to '[MASK]' (added_tokens)" in err(clash)
    assert "the tokenizer has no 'model'" in err({"added_tokens": [{"id": 0, "content": "x"}]})
    novocab = {"model": {"type": "BPE", "merges": []}}
    assert "a model of type 'BPE' without 'vocab'" in err(novocab)
    assert "not valid JSON" in err("{\"model\": ", name="broken.json")
    bad_id = wordpiece(VOCAB)
    bad_id["model"]["vocab"]["cat"] = "5"
    assert "gives token 'cat' the id '5'; expected an integer" in err(bad_id)
    assert not out.exists()


def test_keys_file_starting_with_a_brace_is_a_keys_file(tmp_path):
    kp = tmp_path / "keys.txt"
    kp.write_text("{\nb\nc\n")
    keys = open_keys(str(kp), 3, "m")
    assert keys.take(0, 3) == ["{", "b", "c"]
    keys.close()


def test_keys_only_for_matrix_formats(tmp_path):
    w2v = tmp_path / "v.txt"
    w2v.write_text("2 2\na 1 2\nb 3 4\n")
    tok = write_json(tmp_path / "tokenizer.json", wordpiece(["a", "b"]))
    with pytest.raises(FormatError, match=r"v\.txt: a keys file \(--keys\) is only used with "
                       r"\.npy, \.npz, safetensors input; this file is word2vec"):
        open_embeddings(w2v, keys_path=tok)


# ------------------------------------------------------------------------------------ .npz


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_same_store_as_npy(tmp_path, save):
    x = rows(97, 7).astype(np.float16)
    keys = [f"k{i}" for i in range(97)]
    p = tmp_path / "m.npz"
    save(p, emb=x, ids=np.arange(97))
    assert embq.detect_format(p) == "npz"
    kp = tmp_path / "k.txt"
    kp.write_text("".join(k + "\n" for k in keys))
    got = compressed(tmp_path, p, array="emb", keys=kp, block_rows=10)
    assert_same_store(got, npy_store(tmp_path, x, keys))
    assert store_arrays(got)["attrs"]["source_array"] == "emb"


def test_npz_errors(tmp_path, capsys):
    out = tmp_path / "o.embq"
    p = tmp_path / "two.npz"
    np.savez(p, a=np.ones((3, 2)), b=np.ones((4, 2)))
    assert "holds 2 arrays (a, b); pick one with --array NAME" in cli_error(
        capsys, "compress", p, out)
    assert "no array named 'c'" in cli_error(capsys, "compress", p, out, "--array", "c")
    one_d = tmp_path / "one_d.npz"
    np.savez(one_d, v=np.ones(3))
    assert "array 'v' has shape (3,); expected 2-D" in cli_error(capsys, "compress", one_d, out)
    inf = tmp_path / "inf.npz"
    y = np.ones((5, 2))
    y[3, 0] = np.inf
    np.savez_compressed(inf, v=y)
    assert "row 3 of array 'v' holds inf" in cli_error(capsys, "compress", inf, out)
    fortran = tmp_path / "f.npz"
    np.savez(fortran, v=np.asfortranarray(np.ones((3, 2))))
    assert "Fortran (column) order" in cli_error(capsys, "compress", fortran, out)
    cut = tmp_path / "cut.npz"
    np.savez(cut, v=np.ones((50, 4)))
    cut.write_bytes(cut.read_bytes()[:-200])
    assert "not a .npz file" in cli_error(capsys, "compress", cut, out)
    strings = tmp_path / "s.npz"
    np.savez(strings, v=np.array([["a", "b"]]))
    assert "dtype <U1; expected floats or integers" in cli_error(capsys, "compress", strings,
                                                                 out)
    assert not out.exists()


def test_npz_damaged_member_data(tmp_path):
    p = tmp_path / "d.npz"
    np.savez_compressed(p, v=rows(200, 8))
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the deflate stream
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="array 'v'"):
        load_embeddings(p)
