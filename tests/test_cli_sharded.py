"""``embq info``, ``query``, ``export`` and ``evaluate`` on a sharded store directory.

Each command's output on a sharded store equals its output on one store file holding the same
rows (the store's own path aside); ``info`` lists the shards; a damaged shard is one line on
stderr and exit code 2.  One test runs ``embq query --scheduler`` in a subprocess against a
LocalCluster.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _sharded_util import write_sharded

import embq
from embq.cli import main

N, D = 400, 12
SIZES = [150, 130, 120]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(single store file, sharded store directory, pairs file) of the same rows."""
    tmp = tmp_path_factory.mktemp("cli-sharded")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, D)).astype(np.float32)
    x[300] = x[10]      # a tie across two shards
    keys = [f"w{i}" for i in range(N)]
    single = str(tmp / "one.h5")
    embq.save(single, x, keys, n_threads=1)
    sharded = write_sharded(tmp / "many.embq", x, SIZES, keys)
    pairs = tmp / "pairs.txt"
    pairs.write_text("".join(f"w{i}\tw{(i * 7) % N}\t{(i * 13) % 10}\n" for i in range(0, N, 3)))
    return single, sharded, str(pairs)


def _run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _same_json(stores, argv: list[str], capsys) -> dict:
    """``argv`` (a command, then its arguments after STORE) prints the same JSON for the single
    store and the sharded one, their paths aside; returns it."""
    single, sharded, _ = stores
    code1, one, _ = _run([argv[0], single, *argv[1:]], capsys)
    code2, many, _ = _run([argv[0], sharded, *argv[1:]], capsys)
    assert code1 == code2 == 0
    a, b = json.loads(one), json.loads(many)
    assert a.pop("store") == single and b.pop("store") == sharded
    assert a == b
    return a


def test_info_lists_the_shards_and_the_total_size(stores, capsys):
    _, sharded, _ = stores
    code, out, _ = _run(["info", sharded], capsys)
    assert code == 0
    paths = [os.path.join(sharded, "shards", f"part-{i:05d}.h5") for i in range(len(SIZES))]
    total = os.path.getsize(os.path.join(sharded, "manifest.json")) + sum(
        os.path.getsize(p) for p in paths)
    assert f"{N:,} rows x {D} (with keys)" in out
    assert "shards       3" in out
    assert "shards/part-00001.h5  rows 150 to 280 (130 rows)" in out
    from embq._utils import human_bytes
    assert f"total size   {human_bytes(total)}" in out

    code, out, _ = _run(["info", "--json", sharded], capsys)
    doc = json.loads(out)
    assert [s["rows"] for s in doc["shards"]] == SIZES
    assert [s["offset"] for s in doc["shards"]] == [0, 150, 280]
    assert [s["bytes"] for s in doc["shards"]] == [os.path.getsize(p) for p in paths]


@pytest.mark.parametrize("extra", [
    [], ["--metric", "dot", "--rescore", "0"], ["--restrict", "150", "-k", "4"], ["-k", "200"],
    ["--metric", "l2"], ["--metric", "l2", "--rescore", "0", "-k", "3"],
    ["--threshold", "0.3"], ["--threshold", "12", "--metric", "l2", "-k", "5"],
    ["--allow-keys", "ALLOW", "-k", "6"], ["--allow-keys", "ALLOW", "--threshold", "0.1"],
])
def test_query_equals_the_single_store(stores, extra, capsys, tmp_path):
    single, sharded, _ = stores
    allow = tmp_path / "allow.txt"
    allow.write_text("".join(f"w{i}\n" for i in range(0, N, 7)), encoding="utf-8")
    extra = [str(allow) if a == "ALLOW" else a for a in extra]
    vec = tmp_path / "q.npy"
    np.save(vec, np.random.default_rng(1).standard_normal((3, D)).astype(np.float32))
    _same_json(stores, ["query", "w10", "w300", "w149", "--vectors", str(vec), "--json",
                        *extra], capsys)
    code1, one, _ = _run(["query", single, "w10", "w299", *extra], capsys)
    code2, many, _ = _run(["query", sharded, "w10", "w299", *extra], capsys)
    assert code1 == code2 == 0 and one == many


def test_query_cosmul_and_doesnt_match_on_a_sharded_store(stores, capsys):
    for args in (["--doesnt-match", "w1", "w2", "w300", "--json"],
                 ["w1", "w2", "--cosmul", "--rescore", "0", "-k", "4", "--json"],
                 ["w1", "w2", "--cosmul", "-k", "4", "--json"]):
        _same_json(stores, ["query", *args], capsys)


def test_query_allow_keys_names_a_missing_key(stores, capsys, tmp_path):
    _, sharded, _ = stores
    allow = tmp_path / "allow.txt"
    allow.write_text("w1\nnot-a-key\n", encoding="utf-8")
    code, out, err = _run(["query", sharded, "w3", "--allow-keys", str(allow)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "allow.txt line 2: key 'not-a-key' is not in" in err


@pytest.mark.parametrize("fmt", ["word2vec", "npy", "glove"])
def test_export_equals_the_single_store(stores, fmt, tmp_path, capsys):
    single, sharded, _ = stores
    a, b = tmp_path / "one.out", tmp_path / "many.out"
    assert main(["export", single, str(a), "--format", fmt, "-q"]) == 0
    assert main(["export", sharded, str(b), "--format", fmt, "-q"]) == 0
    assert a.read_bytes() == b.read_bytes()
    if fmt == "npy":
        assert (tmp_path / "one.out.keys.txt").read_bytes() == \
            (tmp_path / "many.out.keys.txt").read_bytes()


def test_evaluate_equals_the_single_store(stores, tmp_path, capsys):
    single, sharded, pairs = stores
    orig = tmp_path / "orig.txt"
    assert main(["export", single, str(orig), "--format", "word2vec", "-q"]) == 0
    args = ["--against", str(orig), "--pairs", pairs, "-k", "5", "--sample", "60"]
    code1, one, _ = _run(["evaluate", single, *args], capsys)
    code2, many, _ = _run(["evaluate", sharded, *args], capsys)
    assert code1 == code2 == 0
    assert one.replace(single, "STORE") == many.replace(sharded, "STORE")
    assert "recall@5" in one and "spearman" in one
    code1, one, _ = _run(["evaluate", single, "--pairs", pairs, "--json"], capsys)
    code2, many, _ = _run(["evaluate", sharded, "--pairs", pairs, "--json"], capsys)
    a, b = json.loads(one), json.loads(many)
    assert a.pop("store") == single and b.pop("store") == sharded
    for doc in (a, b):
        assert doc["pairs"][0]["store"].pop("seconds") >= 0   # a timing, not a result
    assert a == b


@pytest.mark.parametrize("damage", ["delete", "replace"])
@pytest.mark.parametrize("command", ["info", "query", "export", "evaluate"])
def test_a_damaged_shard_is_one_line_and_exit_2(stores, tmp_path, capsys, damage, command):
    import shutil

    _, sharded, pairs = stores
    copy = str(tmp_path / "copy.embq")
    shutil.copytree(sharded, copy)
    shard = os.path.join(copy, "shards", "part-00001.h5")
    if damage == "delete":
        os.remove(shard)
    else:   # another valid store in its place: the manifest notices
        rng = np.random.default_rng(3)
        os.remove(shard)
        embq.save(shard, rng.standard_normal((130, D)).astype(np.float32),
                  [f"x{i}" for i in range(130)], n_threads=1)
    argv = {"info": ["info", copy], "query": ["query", copy, "w1"],
            "export": ["export", copy, str(tmp_path / "o.txt"), "--format", "glove"],
            "evaluate": ["evaluate", copy, "--pairs", pairs]}[command]
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"embq {command}: error: ")
    assert "part-00001.h5" in err
    assert not os.path.exists(tmp_path / "o.txt")


def test_cluster_flags_need_a_sharded_store(stores, capsys):
    single, _, _ = stores
    code, _, err = _run(["query", single, "w1", "--scheduler", "tcp://127.0.0.1:1"], capsys)
    assert code == 2
    assert "--scheduler searches the shards of a sharded store" in err
    assert err.count("\n") == 1
    code, _, err = _run(["query", single, "w1", "--workers", "0"], capsys)
    assert code == 2 and "--workers" in err


def test_query_and_evaluate_on_a_scheduler_in_a_subprocess(stores, run_python, capsys):
    distributed = pytest.importorskip("distributed")
    single, sharded, pairs = stores
    args = ["w10", "w300", "-k", "7", "--json"]
    assert main(["query", single, *args]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["evaluate", single, "--pairs", pairs]) == 0
    expected_eval = capsys.readouterr().out
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        proc = run_python("-m", "embq", "query", sharded, *args,
                          "--scheduler", cluster.scheduler_address)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        proc = run_python("-m", "embq", "evaluate", sharded, "--pairs", pairs,
                          "--scheduler", cluster.scheduler_address)
        assert proc.returncode == 0, proc.stderr
        got_eval = proc.stdout
    assert expected.pop("store") == single and got.pop("store") == sharded
    assert got == expected
    assert got_eval.replace(sharded, "STORE") == expected_eval.replace(single, "STORE")


def test_query_with_workers(stores, capsys):
    pytest.importorskip("distributed")
    single, sharded, _ = stores
    args = ["w10", "w300", "-k", "5", "--json"]
    assert main(["query", single, *args]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["query", sharded, *args, "--workers", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert expected.pop("store") == single and got.pop("store") == sharded
    assert got == expected
    # l2 range search on the cluster
    args = ["w10", "w300", "--metric", "l2", "--threshold", "14", "--json"]
    assert main(["query", single, *args]) == 0
    expected = json.loads(capsys.readouterr().out)
    assert main(["query", sharded, *args, "--workers", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert expected.pop("store") == single and got.pop("store") == sharded
    assert got == expected and expected["queries"][0]["results"]


def test_sketch_a_sharded_store_then_query_with_the_prefilter(tmp_path, capsys):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, D)).astype(np.float32)
    keys = [f"w{i}" for i in range(N)]
    single = str(tmp_path / "one.h5")
    embq.save(single, x, keys, n_threads=1)
    assert main(["sketch", single, "--quiet"]) == 0
    sharded = write_sharded(tmp_path / "many.embq", x, SIZES, keys)
    code, out, _ = _run(["info", sharded], capsys)
    assert code == 0 and f"none (`embq sketch {sharded}` adds one)" in out
    code, _, err = _run(["query", sharded, "w3", "--prefilter", "sketch"], capsys)
    assert code == 2 and "has no sketch; add one with embq sketch" in err
    code, _, err = _run(["sketch", sharded, "--output", str(tmp_path / "x.h5")], capsys)
    assert code == 2 and "omit --output" in err and err.count("\n") == 1
    code, out, _ = _run(["sketch", sharded], capsys)
    assert code == 0 and "sketch" in out
    code, out, _ = _run(["info", sharded], capsys)
    assert code == 0 and "one center over all shards" in out
    for flags in (["--prefilter", "sketch"], ["--prefilter", "sketch", "--oversample", "2"]):
        argv = ["w3", "w299", "-k", "5", "--json", *flags]
        code1, one, _ = _run(["query", single, *argv], capsys)
        code2, many, _ = _run(["query", sharded, *argv], capsys)
        assert code1 == code2 == 0
        a, b = json.loads(one), json.loads(many)
        assert a.pop("store") == single and b.pop("store") == sharded
        assert a == b
