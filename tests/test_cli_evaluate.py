"""``embq evaluate``: the table and JSON reports, with and without --against, and one-line
errors that speak in flags. Runs without gensim (the sample files in ``data/``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluation_files import (
    SAMPLE,
    SAMPLE_ANALOGIES,
    SAMPLE_PAIRS,
    compress_quietly,
    save_sample_store,
    write_file,
)

import embq
from embq import _evaluate as ev


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    store = embq.open(save_sample_store(tmp_path_factory.mktemp("cli-ev")))
    yield store
    store.close()



def test_cli_table_and_json(sample_store, capsys):
    from embq.cli import main

    argv = ["evaluate", sample_store.path, "--against", SAMPLE, "--pairs", SAMPLE_PAIRS,
            "--analogies", SAMPLE_ANALOGIES, "--sample", "100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for fragment in ("reconstruction error", "recall@10", "rescore=4", "sample.pairs.tsv spearman",
                     "capital-world", "Total accuracy", "378/378"):
        assert fragment in out, fragment
    assert main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["analogies"]["store"]["accuracy"] == 1.0
    assert data["recall"]["queries"] == 100
    assert data["pairs"][0]["store"]["used"] == data["pairs"][0]["store"]["pairs"] - \
        data["pairs"][0]["store"]["oov"]


def test_cli_store_only(sample_store, capsys):
    from embq.cli import main

    assert main(["evaluate", sample_store.path, "--pairs", SAMPLE_PAIRS]) == 0
    out = capsys.readouterr().out
    assert "sample.pairs.tsv spearman" in out and "original" not in out


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("cat\tdog\n", "line 1: expected 3 fields"),
        ("cat\tdog\tvery\n", "line 1: score 'very' is not a finite number"),
        ("", "no word pairs found"),
    ],
)
def test_cli_bad_pair_file(sample_store, tmp_path, capsys, content, fragment):
    from embq.cli import main

    bad = write_file(tmp_path, "bad.tsv", content)
    assert main(["evaluate", sample_store.path, "--pairs", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embq evaluate: error: ") and bad in err and fragment in err
    assert "Traceback" not in err


def test_cli_bad_analogy_file_and_missing_files(sample_store, tmp_path, capsys):
    from embq.cli import main

    bad = write_file(tmp_path, "bad.txt", ": s\na b c\n")
    assert main(["evaluate", sample_store.path, "--analogies", bad]) == 2
    assert "line 2: expected 4 words" in capsys.readouterr().err
    assert main(["evaluate", sample_store.path, "--pairs", str(tmp_path / "nope.tsv")]) == 2
    assert "nope.tsv: no such file" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.embq")]) == 2
    assert "nope.embq" in capsys.readouterr().err


def test_cli_subprocess(sample_store, run_python):
    proc = run_python("-m", "embq", "evaluate", sample_store.path, "--analogies",
                      SAMPLE_ANALOGIES, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["analogies"]["store"]["answered"] == 378


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_cli_json_has_null_for_nan(sample_store, tmp_path, capsys):
    """Constant human scores make both correlations NaN (gensim returns NaN too): the JSON
    says null, and strict parsers accept it."""
    from embq.cli import main

    p = write_file(tmp_path, "const.tsv", "cat\tdog\t5\nparis\tfrance\t5\ncat\tparis\t5\n")
    assert main(["evaluate", sample_store.path, "--against", SAMPLE, "--pairs", p,
                 "--sample", "20", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "NaN" not in out and "Warning" not in err
    entry = _strict_json(out)["pairs"][0]
    assert entry["store"]["spearman"] is None and entry["original"]["pearson"] is None
    assert entry["diff"]["spearman"] is None
    assert entry["store"]["used"] == 3
    # The table says nan, and why.
    assert main(["evaluate", sample_store.path, "--pairs", p]) == 0
    out, err = capsys.readouterr()
    assert "const.tsv spearman                nan" in out and "undefined" in out
    assert "Warning" not in err
    # The Python API warns and returns NaN, as gensim.
    with pytest.warns(Warning, match="constant"):
        pearson, spearman, _ = ev.evaluate_word_pairs(sample_store, p)
    assert np.isnan(spearman[0]) and np.isnan(pearson[0])


def test_json_ready():
    from embq._cmd_evaluate import json_ready

    got = json_ready({"a": float("nan"), "b": [1.5, float("inf"), {"c": -float("inf")}],
                      "d": (2, "x"), "e": None, "f": True})
    assert got == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, "x"], "e": None,
                   "f": True}
    assert _strict_json(json.dumps(got)) == got


def _cli(capsys, *argv):
    from embq.cli import main

    code = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_cli_pair_file_without_known_pair_fails(sample_store, tmp_path, capsys):
    p = write_file(tmp_path, "unknown.tsv", "zzzz\tyyyy\t1\nqqqq\tcat\t2\n")
    for extra in ([], ["--against", SAMPLE, "--sample", "0"]):
        code, out, err = _cli(capsys, sample_store.path, "--pairs", p, *extra)
        assert code == 2 and out == ""
        assert err.startswith("embq evaluate: error: No valid similarity judgements found in")
        assert p in err and "2 pairs" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--threads", "0"], "--threads must be a positive count, got 0; use a positive count "
                             "or omit --threads"),
        (["--restrict-vocab", "-5"], "--restrict-vocab must be a positive number of keys, got -5"),
        (["--restrict-vocab", "0"], "--restrict-vocab must be a positive number of keys, got 0"),
        (["--against", SAMPLE, "-k", "5000"], "-k 5000 is not below the store's 3,162 rows"),
        (["--against", SAMPLE, "-k", "3162"], "-k 3162 is not below the store's 3,162 rows"),
        (["--against", SAMPLE, "--limit", "0"], "--limit must be a positive number of rows"),
        (["--limit", "5"], "--limit only applies to reading the original; give the original "
                           "with --against ORIGINAL"),
        (["--format", "glove", "--encoding", "latin-1"],
         "--format, --encoding only apply to reading the original"),
        (["--against", SAMPLE, "--keys", "/nonexistent/keys.txt"],
         "/nonexistent/keys.txt: no such file"),
    ],
)
def test_cli_refuses_bad_options(sample_store, capsys, argv, fragment):
    code, out, err = _cli(capsys, sample_store.path, "--pairs", SAMPLE_PAIRS, *argv)
    assert code == 2 and out == ""
    assert err.startswith("embq evaluate: error: ") and fragment in err, err
    assert "None" not in err


def test_cli_k_below_rows_and_without_recall(sample_store, capsys):
    code, out, _ = _cli(capsys, sample_store.path, "--against", SAMPLE, "-k", "3161",
                        "--sample", "2")
    assert code == 0 and "recall@3161" in out
    code, out, _ = _cli(capsys, sample_store.path, "--against", SAMPLE, "-k", "5000",
                        "--sample", "0")
    assert code == 0 and "recall@" not in out


def test_cli_reader_options_and_store_defaults(tmp_path, capsys):
    """--encoding, --unicode-errors, --format, --keys and --limit read the original as
    compress did; the store's source_format and source_limit fill in for its source file."""
    import shutil

    # Latin-1 keys: another file than the store's source, so nothing comes from the store.
    raw = "3 2\ncaf\xe9 1 2\nna\xefve 3 -4\nx 5 6\n".encode("latin-1")
    src = write_file(tmp_path, "latin.txt", raw, mode="wb")
    path = str(tmp_path / "latin.embq")
    compress_quietly(src, path, encoding="latin-1")
    other = str(tmp_path / "latin-copy.txt")
    shutil.copy(src, other)
    code, _, err = _cli(capsys, path, "--against", other, "--sample", "0")
    assert code == 2 and f"{other}, line 2" in err and "--encoding" in err
    code, out, _ = _cli(capsys, path, "--against", other, "--sample", "0", "--encoding",
                        "latin-1", "--json")
    data = _strict_json(out)
    assert code == 0 and data["original_options"]["encoding"] == "latin-1"
    assert data["reconstruction"]["error_max_abs_over_scale"] <= 0.5 + 1e-6
    # Undecodable bytes replaced: the keys match the store's only with the same choice.
    path2 = str(tmp_path / "replace.embq")
    compress_quietly(src, path2, unicode_errors="replace")
    code, _, err = _cli(capsys, path2, "--against", other, "--sample", "0")
    assert code == 2 and f"{other}, line 2" in err
    code, out, _ = _cli(capsys, path2, "--against", other, "--sample", "0",
                        "--unicode-errors", "replace", "--json")
    assert code == 0 and _strict_json(out)["original_options"]["unicode_errors"] == "replace"

    # --format: taken from the store for its source file; given for another file.
    glove = write_file(tmp_path, "g.txt", "100 5\n200 6\n300 -7\n")
    gpath = str(tmp_path / "g.embq")
    compress_quietly(glove, gpath, format="glove", limit=2)
    code, out, _ = _cli(capsys, gpath, "--against", glove, "--sample", "0")
    assert code == 0
    assert "read as glove (the store's source_format)" in out
    assert "first 2 rows only (the store's source_limit)" in out
    gcopy = str(tmp_path / "g-copy.txt")
    shutil.copy(glove, gcopy)
    code, _, err = _cli(capsys, gpath, "--against", gcopy, "--sample", "0")
    assert code == 2 and gcopy in err
    code, out, _ = _cli(capsys, gpath, "--against", gcopy, "--sample", "0", "--format",
                        "glove", "--json")
    data = _strict_json(out)
    assert code == 0 and data["original_options"]["format"] == "glove"
    assert data["original_options"]["limit"] == 2  # from the store, for any file
    code, _, err = _cli(capsys, gpath, "--against", gcopy, "--sample", "0", "--format",
                        "glove", "--limit", "3")
    assert code == 2 and "has shape (3, 1) but the store has (2, 1)" in err

    # --keys for a .npy; without it a keyless .npy of the store's shape takes its keys.
    npy = str(tmp_path / "v.npy")
    np.save(npy, np.array([[1, 2], [3, -4], [5, 6]], np.float32))
    keys = write_file(tmp_path, "keys.txt", "café\nnaïve\nx\n")
    code, out, _ = _cli(capsys, path, "--against", npy, "--keys", keys, "--sample", "0",
                        "--json")
    assert code == 0 and _strict_json(out)["original_options"]["keys"] == keys
    code, out, _ = _cli(capsys, path, "--against", npy, "--sample", "0")
    assert code == 0
    assert "the original has no keys: the store's keys are used (rows in the same order)" in out


def test_cli_reader_options_are_the_libraries():
    """The reader flags are built from embq._source.READER_OPTIONS, their choices are the
    readers' own lists, and --help says each option's help."""
    from embq import _readers as readers
    from embq._source import READER_OPTIONS
    from embq.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["evaluate"]
    actions = {a.dest: a for a in sub._actions}
    for name, option in READER_OPTIONS.items():
        assert actions[name].option_strings == ["--" + name.replace("_", "-")]
        assert actions[name].help == option.help and actions[name].default is None
    assert tuple(actions["format"].choices) == readers.FORMATS
    assert tuple(actions["unicode_errors"].choices) == readers.UNICODE_ERRORS
    assert actions["limit"].type is int


def test_cli_normalized_store(tmp_path, capsys):
    path = str(tmp_path / "n.embq")
    compress_quietly(SAMPLE, path, normalize=True)
    code, out, _ = _cli(capsys, path, "--against", SAMPLE, "--sample", "50", "--json")
    assert code == 0
    rec = _strict_json(out)["reconstruction"]
    assert 0.2 < rec["error_mean_abs_over_scale"] < 0.3
    assert rec["error_max_abs_over_scale"] <= 0.5 + 1e-6
