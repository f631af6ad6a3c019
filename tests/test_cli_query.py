"""``embq query``: tables, JSON, vectors from .npy, and clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import embq
from embq.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    from embq._readers import load_embeddings

    keys, x = load_embeddings(os.path.join(ROOT, "data", "sample.w2v.txt"))
    path = tmp_path_factory.mktemp("query") / "sample.embq"
    embq.save(path, x, keys)
    return str(path)


def test_table_output(store_path, capsys):
    assert main(["query", store_path, "cat", "日本", "-k", "3"]) == 0
    out = capsys.readouterr().out
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2
    assert blocks[0].startswith("cat  (cosine, top 3)")
    lines = blocks[0].splitlines()
    assert len(lines) == 2 + 3
    assert "東京" in blocks[1].splitlines()[2]   # the capital is the nearest neighbour
    assert " cat " not in blocks[0].split("\n", 1)[1]


def test_json_matches_most_similar(store_path, capsys):
    assert main(["query", store_path, "king", "--json", "-k", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metric"] == "cosine" and doc["k"] == 5
    (q,) = doc["queries"]
    assert q["query"] == "king"
    with embq.open(store_path) as store:
        expected = store.most_similar("king", topn=5)
        assert [r["key"] for r in q["results"]] == [k for k, _ in expected]
        np.testing.assert_allclose([r["score"] for r in q["results"]],
                                   [s for _, s in expected], rtol=1e-6)
        assert all(store.index_to_key[r["index"]] == r["key"] for r in q["results"])


def test_dot_metric_and_vectors_file(store_path, tmp_path, capsys):
    with embq.open(store_path) as store:
        v = np.stack([store["cat"], store["dog"]])
    np.save(tmp_path / "q.npy", v)
    assert main(["query", store_path, "--vectors", str(tmp_path / "q.npy"), "--metric", "dot",
                 "--json", "-k", "2", "--rescore", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [q["query"] for q in doc["queries"]] == [f"{tmp_path / 'q.npy'}[0]",
                                                    f"{tmp_path / 'q.npy'}[1]"]
    # a vector query keeps its own row: nothing to leave out
    assert len(doc["queries"][0]["results"]) == 2


def test_unknown_word_is_named_with_exit_2(store_path, capsys):
    assert main(["query", store_path, "cat", "nonexistentword"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embq query: error:")
    assert "'nonexistentword'" in err and "Traceback" not in err


def test_bad_arguments(store_path, tmp_path, capsys):
    assert main(["query", store_path]) == 2
    assert "WORD" in capsys.readouterr().err
    assert main(["query", store_path, "cat", "-k", "0"]) == 2
    assert "-k must be >= 1" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.ones((2, 5), np.float32))
    assert main(["query", store_path, "--vectors", str(tmp_path / "bad.npy")]) == 2
    assert "shape" in capsys.readouterr().err
    assert main(["query", str(tmp_path / "missing.embq"), "cat"]) == 2


def test_subprocess(store_path, run_python):
    proc = run_python("-m", "embq", "query", store_path, "cat", "-k", "2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("cat  (cosine, top 2)")
    proc = run_python("-m", "embq", "query", store_path, "qqqq")
    assert proc.returncode == 2
    assert "qqqq" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00", b"not a numpy file at all\n",
                                     b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order"])
def test_unreadable_npy_is_one_line_naming_the_file(store_path, tmp_path, capsys, content):
    bad = tmp_path / "e.npy"
    bad.write_bytes(content)
    assert main(["query", store_path, "--vectors", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"embq query: error: {bad}: ")
    assert "expected a .npy array" in err


def test_truncated_npy_data_is_one_line(store_path, tmp_path, capsys):
    good = tmp_path / "good.npy"
    np.save(good, np.ones((4, 64), np.float32))
    bad = tmp_path / "cut.npy"
    bad.write_bytes(good.read_bytes()[:-100])
    assert main(["query", store_path, "--vectors", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"embq query: error: {bad}: ")


def test_npz_archive_is_named_as_such(store_path, tmp_path, capsys):
    np.savez(tmp_path / "q.npz", a=np.ones((2, 64), np.float32))
    assert main(["query", store_path, "--vectors", str(tmp_path / "q.npz")]) == 2
    err = capsys.readouterr().err
    assert ".npz archive" in err and "expected a .npy array" in err
    assert "dtype ?" not in err


@pytest.mark.parametrize("bad_value, reason", [(np.nan, "NaN or Inf"), (np.inf, "NaN or Inf"),
                                               (1e300, "overflows float32")])
def test_bad_vector_row_is_named_by_file_and_row(store_path, tmp_path, capsys, bad_value,
                                                 reason):
    v = np.ones((3, 64), np.float64)
    v[1, 5] = bad_value
    np.save(tmp_path / "v.npy", v)
    # words come first in the query list, so a global query number would say "query 3"
    assert main(["query", store_path, "cat", "dog", "--vectors", str(tmp_path / "v.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{tmp_path / 'v.npy'}: row 1 " in err and reason in err
    assert "query 3" not in err
    np.save(tmp_path / "one.npy", v[1])
    assert main(["query", store_path, "--vectors", str(tmp_path / "one.npy")]) == 2
    assert reason in capsys.readouterr().err


def test_threads_and_restrict_are_refused_in_flags(store_path, capsys):
    """The command line speaks in flags, never in the Python API's names."""
    assert main(["query", store_path, "cat", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embq query: error: --threads 0 is not a thread count")
    assert "n_threads" not in err and err.count("\n") == 1
    assert main(["query", store_path, "cat", "-k", "2", "--threads", "-1", "--json"]) == 0
    capsys.readouterr()
    for bad in ("0", "-3"):
        assert main(["query", store_path, "cat", "--restrict", bad]) == 2
        err = capsys.readouterr().err
        assert err == (f"embq query: error: --restrict must be a positive number of rows, got "
                       f"{bad}\n")
    assert main(["query", store_path, "cat", "--restrict", "50", "--json", "-k", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert all(r["index"] < 50 for r in doc["queries"][0]["results"])


def test_a_vector_row_scaled_to_3e38_finds_the_neighbours_of_the_row(store_path, tmp_path,
                                                                      capsys):
    """A finite float32 vector whose norm overflows float32 used to score 0 everywhere and
    answer rows 0, 1, 2; it must answer like the same vector of ordinary size."""
    with embq.open(store_path) as store:
        v = np.asarray(store["cat"], np.float32)
    big = (v * np.float32(3e38 / np.abs(v).max())).astype(np.float32)
    assert np.isfinite(big).all()
    np.save(tmp_path / "big.npy", big)
    np.save(tmp_path / "small.npy", np.ldexp(big, -120).astype(np.float32))
    answers = []
    for name in ("big.npy", "small.npy"):
        assert main(["query", store_path, "--vectors", str(tmp_path / name), "--json",
                     "-k", "5"]) == 0
        answers.append(json.loads(capsys.readouterr().out)["queries"][0]["results"])
    assert answers[0] == answers[1]
    assert answers[0][0]["key"] == "cat" and answers[0][0]["score"] > 0.99


def test_empty_npy_in_a_subprocess_exits_2_without_traceback(store_path, tmp_path, run_python):
    (tmp_path / "e.npy").write_bytes(b"")
    proc = run_python("-m", "embq", "query", store_path, "--vectors", str(tmp_path / "e.npy"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert str(tmp_path / "e.npy") in proc.stderr


# -- l2, --threshold, --allow-keys, --cosmul, --doesnt-match ----------------------------------

def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_metric_l2_lists_smallest_distances_first(store_path, capsys):
    assert main(["query", store_path, "king", "--metric", "l2", "--json", "-k", "4"]) == 0
    res = _json(capsys)["queries"][0]["results"]
    assert len(res) == 4 and all(r["key"] != "king" for r in res)
    d = [r["score"] for r in res]
    assert d == sorted(d) and d[0] >= 0
    with embq.open(store_path) as store:
        _s, i = store.search(store["king"], 5, metric="l2", rescore=4)
        keys = [store.index_to_key[int(r)] for r in i if store.index_to_key[int(r)] != "king"]
    assert [r["key"] for r in res] == keys[:4]


def test_threshold_returns_every_row_past_it_and_k_caps(store_path, capsys):
    assert main(["query", store_path, "cat", "--threshold", "0.3", "--json"]) == 0
    res = _json(capsys)["queries"][0]["results"]
    with embq.open(store_path) as store:
        _s, i = store.search(store["cat"], threshold=0.3)
        expect = [int(r) for r in i if int(r) != store.get_index("cat")]
    assert [r["index"] for r in res] == expect and all(r["score"] >= 0.3 for r in res)
    assert main(["query", store_path, "cat", "--threshold", "0.3", "-k", "2", "--json"]) == 0
    assert [r["index"] for r in _json(capsys)["queries"][0]["results"]] == expect[:2]
    assert main(["query", store_path, "cat", "--threshold", "0.3"]) == 0
    assert "cat  (cosine, score >= 0.3)" in capsys.readouterr().out


def test_allow_keys_file(store_path, tmp_path, capsys):
    with embq.open(store_path) as store:
        keys = list(store.index_to_key)
    allowed = keys[::5][:40]
    f = tmp_path / "allow.txt"
    f.write_text("\n".join(allowed) + "\n\n", encoding="utf-8")
    assert main(["query", store_path, "cat", "--allow-keys", str(f), "--json", "-k", "6"]) == 0
    res = _json(capsys)["queries"][0]["results"]
    assert len(res) == 6 and {r["key"] for r in res} <= set(allowed)
    bad = tmp_path / "bad.txt"
    bad.write_text(allowed[0] + "\nno-such-key-q\n", encoding="utf-8")
    assert main(["query", store_path, "cat", "--allow-keys", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "bad.txt line 2: key 'no-such-key-q' is not in" in err


def test_cosmul_and_doesnt_match(store_path, capsys):
    assert main(["query", store_path, "king", "woman", "--cosmul", "--json", "-k", "3"]) == 0
    out = _json(capsys)
    with embq.open(store_path) as store:
        expect = store.most_similar_cosmul(positive=["king", "woman"], topn=3)
        odd = store.doesnt_match(["cat", "dog", "king"])
    assert [(r["key"], r["score"]) for r in out["queries"][0]["results"]] == \
        [(k, s) for k, s in expect]
    assert main(["query", store_path, "--doesnt-match", "cat", "dog", "king"]) == 0
    assert capsys.readouterr().out.strip() == odd


@pytest.mark.parametrize("argv, message", [
    (["cat", "--threshold", "nan"], "--threshold must be a finite number"),
    (["cat", "--threshold", "x"], "invalid float value"),
    (["cat", "--metric", "euclid"], "invalid choice"),
    (["cat", "--cosmul", "--doesnt-match", "dog"], "give one"),
    (["cat", "--doesnt-match", "dog", "king"], "takes its words after it"),
    (["cat", "--cosmul", "--metric", "l2"], "--cosmul does not take --metric l2"),
    (["--threshold", "0.5", "--doesnt-match", "cat", "dog"],
     "--doesnt-match does not take --threshold"),
    (["--doesnt-match", "cat", "no-such-word-z"], "no-such-word-z"),
    (["cat", "--allow-keys", "/nonexistent/allow.txt"], "allow.txt"),
    (["cat", "--oversample", "5"], "add --prefilter sketch"),
    (["cat", "--prefilter", "sketch", "--oversample", "0"], "--oversample must be >= 1"),
    (["cat", "--prefilter", "sketch", "--metric", "l2"], "does not combine with --metric l2"),
    (["cat", "--prefilter", "sketch", "--threshold", "0.3"], "does not combine with --threshold"),
    (["cat", "--prefilter", "sketch"], "has no sketch; add one with embq sketch"),
    (["cat", "--prefilter", "bits"], "invalid choice"),
])
def test_bad_new_options_exit_2_with_one_line(store_path, capsys, argv, message):
    try:
        code = main(["query", store_path, *argv])
    except SystemExit as exc:   # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
    if "invalid" not in message:   # argparse prints its usage before its one line
        assert len(err.splitlines()) == 1


def test_prefilter_sketch_equals_the_library_search(store_path, tmp_path, capsys):
    sketched = str(tmp_path / "sketched.embq")
    assert main(["sketch", store_path, "--output", sketched, "--quiet"]) == 0
    for over in (None, 3):
        flags = ["--prefilter", "sketch"] + ([] if over is None else ["--oversample", str(over)])
        assert main(["query", sketched, "cat", "king", "--json", "-k", "4", *flags]) == 0
        out = _json(capsys)["queries"]
        with embq.open(sketched) as store:
            rows = [store.get_index(w) for w in ("cat", "king")]
            scores, found = store.search(store[rows], 5, prefilter="sketch", oversample=over,
                                         rescore=4)
        for qi, q in enumerate(out):
            expect = [(int(r), float(s)) for s, r in zip(scores[qi], found[qi])
                      if int(r) != rows[qi]][:4]
            assert [(r["index"], r["score"]) for r in q["results"]] == expect
