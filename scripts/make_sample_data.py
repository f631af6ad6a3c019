#!/usr/bin/env python
"""Generate the small sample embedding files in ``data/``, deterministically.

The vectors have structure a query can show:

* named clusters of real words (animals, colours, fruits, ...), each word near its cluster centre;
* relations as constant offsets (country -> capital, singular -> plural, male -> female), so
  analogy questions such as ``paris : france :: rome : ?`` have a right answer;
* filler keys ``tok00000`` ... that are random, so a search has to find the structure among noise.

Outputs (word2vec text format for the vectors):

* ``data/sample.w2v.txt``     the embeddings, ``count dim`` header, one ``key v1 ... vd`` per line
* ``data/sample.pairs.tsv``   word pairs with similarity scores (``word1<TAB>word2<TAB>score``)
* ``data/sample.analogies.txt`` analogy questions in the ``questions-words.txt`` format

Run ``python scripts/make_sample_data.py`` from the repository root; the same files come out every
time (fixed seed, fixed formatting).
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np

SEED = 20261122
DIM = 64
N_FILLER = 3000

CLUSTERS: dict[str, list[str]] = {
    "animal": ["cat", "dog", "horse", "cow", "sheep", "goat", "tiger", "lion", "wolf", "fox",
               "bear", "rabbit", "mouse", "deer", "zebra", "camel", "otter", "badger"],
    "colour": ["red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black",
               "white", "grey", "violet", "cyan", "magenta", "beige", "turquoise"],
    "fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum",
              "melon", "kiwi", "papaya", "apricot", "fig", "lime", "café"],
    "music": ["guitar", "piano", "violin", "drum", "flute", "trumpet", "cello", "harp",
              "saxophone", "clarinet", "banjo", "ukulele", "oboe", "tuba"],
    "sport": ["football", "tennis", "golf", "rugby", "cricket", "hockey", "baseball",
              "basketball", "volleyball", "cycling", "rowing", "skiing", "boxing", "fencing"],
    "tool": ["hammer", "wrench", "saw", "drill", "chisel", "pliers", "screwdriver", "shovel",
             "rake", "axe", "ladder", "clamp", "file", "level"],
}

# country -> capital: the capitals get a shared offset from their country.
CAPITALS = {
    "france": "paris", "italy": "rome", "spain": "madrid", "germany": "berlin",
    "japan": "tokyo", "egypt": "cairo", "kenya": "nairobi", "peru": "lima",
    "canada": "ottawa", "norway": "oslo", "greece": "athens", "poland": "warsaw",
    "日本": "東京",
}
# singular -> plural
PLURALS = {
    "car": "cars", "tree": "trees", "house": "houses", "river": "rivers", "book": "books",
    "road": "roads", "city": "cities", "child": "children", "window": "windows",
    "bridge": "bridges", "mountain": "mountains", "lake": "lakes",
}
# male -> female
GENDER = {
    "king": "queen", "man": "woman", "boy": "girl", "father": "mother", "brother": "sister",
    "uncle": "aunt", "prince": "princess", "husband": "wife", "son": "daughter", "actor": "actress",
}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def build(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    keys: list[str] = []
    rows: list[np.ndarray] = []

    def add(key: str, vec: np.ndarray) -> None:
        keys.append(key)
        rows.append(vec.astype(np.float32))

    for words in CLUSTERS.values():
        centre = _unit(rng.standard_normal(DIM)) * 3.0
        for w in words:
            add(w, centre + rng.standard_normal(DIM) * 0.3)
    for relation in (CAPITALS, PLURALS, GENDER):
        base_centre = _unit(rng.standard_normal(DIM)) * 2.0
        offset = _unit(rng.standard_normal(DIM)) * 2.5
        for a, b in relation.items():
            va = base_centre + rng.standard_normal(DIM) * 1.2
            add(a, va)
            add(b, va + offset + rng.standard_normal(DIM) * 0.25)
    # Filler keys: numbered tokens with random directions and varied lengths, so row scales vary.
    lengths = rng.lognormal(mean=1.0, sigma=0.35, size=N_FILLER)
    filler = _unit(rng.standard_normal((N_FILLER, DIM))) * lengths[:, None]
    for i in range(N_FILLER):
        add(f"tok{i:05d}", filler[i])
    return keys, np.stack(rows)


def write_word2vec_text(path: str, keys: list[str], matrix: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(f"{matrix.shape[0]} {matrix.shape[1]}\n")
        for key, row in zip(keys, matrix):
            fh.write(key + " " + " ".join(f"{x:.6f}" for x in row) + "\n")


def write_pairs(path: str, keys: list[str], matrix: np.ndarray, rng: np.random.Generator) -> None:
    """Pairs scored 0-10 from the true cosine plus noise, like human similarity judgements."""
    index = {k: i for i, k in enumerate(keys)}
    words = [w for ws in CLUSTERS.values() for w in ws]
    pairs = set()
    while len(pairs) < 150:
        a, b = rng.choice(len(words), size=2, replace=False)
        pairs.add((words[a], words[b]))
    unit = _unit(matrix.astype(np.float64))
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("# word1\tword2\tsimilarity (0-10), generated by scripts/make_sample_data.py\n")
        for a, b in sorted(pairs):
            cos = float(unit[index[a]] @ unit[index[b]])
            score = np.clip(5.0 + 5.0 * cos + rng.normal(0.0, 0.6), 0.0, 10.0)
            fh.write(f"{a}\t{b}\t{score:.2f}\n")
        # Unknown words are skipped by evaluators and counted as such.
        fh.write("cat\tunicorn\t3.00\n")


def write_analogies(path: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for section, relation in (("capital-world", CAPITALS), ("gram-plural", PLURALS),
                                  ("family", GENDER)):
            fh.write(f": {section}\n")
            for (a, b), (c, d) in itertools.permutations(relation.items(), 2):
                fh.write(f"{a} {b} {c} {d}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data"),
                        help="output directory (default: data/ of this repository)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    keys, matrix = build(rng)
    write_word2vec_text(os.path.join(args.out, "sample.w2v.txt"), keys, matrix)
    write_pairs(os.path.join(args.out, "sample.pairs.tsv"), keys, matrix, rng)
    write_analogies(os.path.join(args.out, "sample.analogies.txt"))
    print(f"wrote {len(keys)} keys x {matrix.shape[1]} to {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
