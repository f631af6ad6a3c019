"""Keys for matrix formats (``.npy``, ``.npz``, safetensors): a keys file or a tokenizer.json.

* A text file with one key per line, one line per row (a BERT ``vocab.txt`` is one), maybe
  gzip, bz2 or xz compressed; it is read line by line as the rows are read.
* A Hugging Face ``tokenizer.json``: the vocabulary of its model (WordPiece, BPE and
  WordLevel map token -> id; Unigram lists ``[token, score]`` pairs whose index is the id)
  plus its ``added_tokens`` (``{"id", "content"}``), ordered by id. The ids must cover the
  rows ``0 .. count-1`` exactly once; otherwise the first repeat or gap is named.
"""

from __future__ import annotations

import io
import json
import os

from embq._errors import FormatError
from embq._read_common import plural

__all__ = ["TextKeys", "TokenizerKeys", "is_tokenizer_json", "open_keys"]

_UTF8_BOM = b"\xef\xbb\xbf"
_SNIFF = 256


def is_tokenizer_json(path: str) -> bool:
    """Is ``path`` a JSON document (a ``.json`` name, or a ``{`` first) rather than key lines?"""
    if path.lower().endswith(".json"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF)
    except OSError:
        return False
    head = head[len(_UTF8_BOM):] if head.startswith(_UTF8_BOM) else head
    if not head.lstrip().startswith(b"{"):
        return False
    # A keys file may start with the key "{": only a whole JSON object with a model counts.
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (ValueError, OSError):
        return False
    return isinstance(doc, dict) and ("model" in doc or "added_tokens" in doc)


class TextKeys:
    """One key per line, read as the rows are read.

    ``matrix`` names the rows the keys belong to in messages (a file, a tensor).
    """

    def __init__(self, path: str, count: int, matrix: str, encoding: str = "utf8",
                 unicode_errors: str = "strict") -> None:
        from embq._input import Input, printable
        from embq._readers import _is_utf8

        self._printable = printable
        self.path = path
        self.count = count
        self.matrix = matrix
        self.encoding = encoding
        self.unicode_errors = unicode_errors
        self._bom = _is_utf8(encoding)
        self._stream = io.BufferedReader(Input(path, "a keys file"))

    def take(self, first_row: int, n: int) -> list[str]:
        """The keys of rows ``first_row .. first_row + n - 1`` (read in order)."""
        keys = []
        readline = self._stream.readline
        for i in range(n):
            raw = readline()
            line = first_row + i + 1
            if not raw:
                raise self._ended(line)
            raw = raw.rstrip(b"\r\n")
            if line == 1 and self._bom and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            try:
                key = raw.decode(self.encoding, self.unicode_errors)
            except UnicodeDecodeError as exc:
                raise FormatError(
                    f"key bytes {self._printable(raw)!r} are not valid {self.encoding} "
                    f"({exc.reason} at byte {exc.start} of the key); pass --unicode-errors "
                    "replace (or ignore), or the right --encoding",
                    path=self.path, line=line) from None
            if not key:
                raise FormatError("empty key; expected one non-empty key per line",
                                  path=self.path, line=line)
            keys.append(key)
        return keys

    def _ended(self, line: int) -> FormatError:
        return FormatError(
            f"the keys file ends after {plural(line - 1, 'key')} but {self.matrix} has "
            f"{plural(self.count, 'row')}; expected one key per row", path=self.path, line=line)

    def skip(self, n: int) -> None:
        """Pass over the keys of the first ``n`` rows, for a reader that starts at row ``n``."""
        readline = self._stream.readline
        for line in range(1, n + 1):
            if not readline():
                raise self._ended(line)

    def finish(self, rows_read: int, whole: bool) -> None:
        """After the last row: when all rows were read, no key may be left over."""
        if not whole:
            return
        line = rows_read
        for raw in self._stream:
            line += 1
            if raw.strip():
                raise FormatError(
                    f"the keys file has more keys than the {plural(self.count, 'row')} of "
                    f"{self.matrix}; expected one key per row", path=self.path, line=line)

    def close(self) -> None:
        self._stream.close()


def _id_of(value, token: str, where: str, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"{where} gives token {token!r} the id {value!r}; expected an "
                          "integer >= 0", path=path)
    return value


def tokenizer_vocabulary(path: str) -> dict[int, str]:
    """Token id -> token of a ``tokenizer.json`` (model vocabulary plus added tokens).

    A repeated id (two tokens with one id) is an error naming both; an added token that
    repeats its vocabulary entry (same id, same content, as BERT's ``[CLS]``) is one token.
    """
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 JSON ({exc.reason} at byte {exc.start}); expected a "
                          "Hugging Face tokenizer.json", path=path) from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"not valid JSON ({exc.msg} at line {exc.lineno} column "
                          f"{exc.colno}); expected a Hugging Face tokenizer.json",
                          path=path) from None
    if not isinstance(doc, dict):
        raise FormatError(f"the JSON document is a {type(doc).__name__}; expected a Hugging "
                          "Face tokenizer.json (an object with a 'model')", path=path)
    model = doc.get("model")
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if vocab is None:
        found = ("no 'model'" if model is None else
                 f"a model of type {model.get('type')!r} without 'vocab'"
                 if isinstance(model, dict) else f"a 'model' that is a {type(model).__name__}")
        raise FormatError(f"the tokenizer has {found}; expected model.vocab (WordPiece, BPE, "
                          "WordLevel or Unigram) to give one key per row", path=path)
    ids: dict[int, str] = {}

    def add(i: int, token: str, where: str) -> None:
        if not isinstance(token, str):
            raise FormatError(f"{where} holds {token!r} for id {i}; expected a string token",
                              path=path)
        old = ids.setdefault(i, token)
        if old != token:
            raise FormatError(f"id {i:,} is given twice, to {old!r} and to {token!r} ({where}); "
                              "expected each id once", path=path)

    if isinstance(vocab, dict):  # WordPiece, BPE, WordLevel: token -> id
        seen: dict[int, str] = {}
        for token, value in vocab.items():
            i = _id_of(value, token, "model.vocab", path)
            if i in seen:
                raise FormatError(f"id {i:,} is given twice in model.vocab, to {seen[i]!r} and "
                                  f"to {token!r}; expected each id once", path=path)
            seen[i] = token
        ids.update(seen)
    elif isinstance(vocab, list):  # Unigram: [token, score] pairs, the index is the id
        for i, entry in enumerate(vocab):
            if not (isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str)):
                raise FormatError(f"model.vocab entry {i:,} is {entry!r}; expected "
                                  "[token, score] (a Unigram vocabulary)", path=path)
            ids[i] = entry[0]
    else:
        raise FormatError(f"model.vocab is a {type(vocab).__name__}; expected an object "
                          "(token -> id) or a list of [token, score]", path=path)
    added = doc.get("added_tokens") or []
    if not isinstance(added, list):
        raise FormatError(f"added_tokens is a {type(added).__name__}; expected a list",
                          path=path)
    for entry in added:
        if not isinstance(entry, dict) or "id" not in entry or "content" not in entry:
            raise FormatError(f"added_tokens holds {entry!r}; expected objects with 'id' and "
                              "'content'", path=path)
        add(_id_of(entry["id"], entry["content"], "added_tokens", path), entry["content"],
            "added_tokens")
    return ids


class TokenizerKeys:
    """The tokens of a ``tokenizer.json`` as the keys of ``count`` rows, ordered by id."""

    def __init__(self, path: str, count: int, matrix: str) -> None:
        self.path = path
        ids = tokenizer_vocabulary(path)
        keys: list[str | None] = [None] * count
        beyond = []
        for i, token in ids.items():
            if i < count:
                keys[i] = token
            else:
                beyond.append(i)
        gaps = [i for i, k in enumerate(keys) if k is None or k == ""]
        if beyond or gaps or len(ids) != count:
            parts = [f"the tokenizer gives {plural(len(ids), 'token id')} but {matrix} has "
                     f"{plural(count, 'row')}; expected ids 0 .. {count - 1:,}, each once"]
            if gaps:
                first = gaps[0]
                if keys[first] == "":
                    parts.append(f"id {first:,} is the empty token")
                else:
                    parts.append(f"first gap: no token has id {first:,}"
                                 + (f" ({plural(len(gaps), 'id')} missing)" if len(gaps) > 1
                                    else ""))
            if beyond:
                b = min(beyond)
                parts.append(f"id {b:,} ({ids[b]!r}) is past the last row"
                             + (f" ({plural(len(beyond), 'id')} are)" if len(beyond) > 1
                                else ""))
            raise FormatError("; ".join(parts), path=path)
        self._keys: list[str] = keys  # type: ignore[assignment]

    def take(self, first_row: int, n: int) -> list[str]:
        return self._keys[first_row:first_row + n]

    def skip(self, n: int) -> None:
        """Nothing to do: keys are taken by row number."""

    def finish(self, rows_read: int, whole: bool) -> None:
        """Nothing to check: the ids were matched with the rows when opened."""

    def close(self) -> None:
        self._keys = []


def open_keys(path: str | os.PathLike, count: int, matrix: str, *, encoding: str = "utf8",
              unicode_errors: str = "strict") -> TextKeys | TokenizerKeys:
    """The keys of ``count`` rows from a keys file or a tokenizer.json (told from the content).

    Parameters
    ----------
    path : str or os.PathLike
        The keys file.
    count : int
        Rows of the matrix the keys belong to.
    matrix : str
        How messages name that matrix (``"model.safetensors"``, ``"tensor 'w' of m.st"``).
    encoding, unicode_errors : str
        How the lines of a keys file are decoded (a tokenizer.json is UTF-8 JSON).
    """
    path = os.fspath(path)
    if path != "-" and os.path.isfile(path) and is_tokenizer_json(path):
        return TokenizerKeys(path, count, matrix)
    return TextKeys(path, count, matrix, encoding, unicode_errors)
