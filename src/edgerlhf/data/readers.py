"""Reading a data source into ``(location, row)`` pairs (the loaders in :mod:`edgerlhf.data.loaders` validate
and normalise the rows).

Sources
-------
:func:`read_rows` reads one source into ``(location, row)`` pairs:

* ``.jsonl`` -- one JSON object per line; blank lines are ignored. Location: ``"data.jsonl, line 7"``
  (the physical line number, so an editor's "go to line" finds it).
* ``.json`` -- a top-level list of objects, or an object whose ``"data"`` or ``"train"`` key holds that
  list. Location: ``"data.json, row 3 (index 2)"``.
* ``.csv`` -- a header line, then one row per record; every cell is a string (so CSV holds string
  formats only, never message lists). Location: ``"data.csv, line 5"`` where the header is line 1
  and the first data row is line 2, as in a spreadsheet (a quoted cell that spans several physical
  lines still counts as one row).
* ``hf:<hub id>`` or ``hf:<hub id>:<split>`` (default split ``train``) -- loaded with
  :func:`datasets.load_dataset`. This needs the network: with ``HF_HUB_OFFLINE=1`` (or
  ``HF_DATASETS_OFFLINE=1``), or when the dataset cannot be fetched, a :class:`DataError` says so and
  asks for a local file instead. Location: ``"hf:org/name:train, row 3 (index 2)"``.

Files must be UTF-8 (a BOM is accepted). Non-UTF-8 bytes, invalid JSON and rows that are not objects
are reported with their location.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

__all__ = ["EXTENSIONS", "DataError", "RowProblem", "has_surrogates", "iter_rows", "kind_of", "read_rows", "row_keys"]

EXTENSIONS = (".jsonl", ".json", ".csv")
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, decoded with surrogateescape


class DataError(ValueError):
    """A problem with user data; the message names the source, the row, the problem and the fix.

    ``location`` is the file (or hub id) plus the row, e.g. ``"data.jsonl, line 7"``; ``problem`` is the
    rest of the message.
    """

    def __init__(self, location: str, problem: str):
        self.location = location
        self.problem = problem
        super().__init__(f"{location}: {problem}")


class RowProblem(Exception):
    """Internal: a problem with one row; becomes a DataError once the location is attached."""


# --------------------------------------------------------------------------------------------- reading


def read_rows(source: str) -> list[tuple[str, dict]]:
    """Read a ``.jsonl``/``.json``/``.csv`` file or ``hf:<hub id>[:<split>]`` into ``(location, row)`` pairs.

    Raises :class:`DataError` at the first unreadable row (invalid JSON, non-UTF-8 bytes, a row that is
    not an object), and for a missing file, an unsupported extension or an unreachable hub.
    """
    rows = []
    for item in iter_rows(str(source)):
        if isinstance(item, DataError):
            raise item
        rows.append(item)
    return rows


def iter_rows(source: str) -> Iterator[tuple[str, dict] | DataError]:
    """Rows in file order; an unreadable row is yielded as a DataError (so callers may skip it).

    Problems with the source as a whole are raised at once.
    """
    if source.startswith("hf:"):
        yield from _read_hub(source)
        return
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise DataError(
            source,
            f"unsupported file type {suffix or '(no extension)'!r}; use a .jsonl, .json or .csv file, "
            "or hf:<hub id>[:<split>] for a Hugging Face dataset",
        )
    if not path.exists():
        raise DataError(source, f"file not found (looked for {path.resolve()}); check the path")
    if path.is_dir():
        raise DataError(source, "is a directory, not a file; pass the .jsonl, .json or .csv file inside it")
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}[suffix]
    yield from reader(source, path.read_bytes())


def _utf8_problem(err: UnicodeDecodeError, line_start: int = 0) -> str:
    col = err.start - line_start + 1
    return (
        f"not valid UTF-8 (byte 0x{err.object[err.start]:02x} at column {col}); "
        "re-save the file as UTF-8"
    )


def _read_jsonl(source: str, data: bytes):
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        loc = f"{source}, line {lineno}"
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield DataError(loc, _utf8_problem(e))
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield DataError(
                loc, f"invalid JSON at column {e.colno} ({e.msg}); each line must be one complete JSON object"
            )
            continue
        if not isinstance(obj, dict):
            yield DataError(loc, f"expected a JSON object {{...}}, got {kind_of(obj)}; each line must be one object")
            continue
        yield loc, obj


def _read_json(source: str, data: bytes):
    text = data.decode("utf-8-sig", errors="surrogateescape")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{source}, line {e.lineno}", f"invalid JSON at column {e.colno} ({e.msg}); fix the syntax"
        ) from None
    if isinstance(obj, dict):
        for key in ("data", "train"):
            if isinstance(obj.get(key), list):
                obj = obj[key]
                break
        else:
            raise DataError(
                source,
                f"top-level object has no 'data' or 'train' list (keys: {row_keys(obj)}); "
                "make the file a list of row objects, or put them under \"data\"",
            )
    if not isinstance(obj, list):
        raise DataError(source, f"expected a list of row objects at the top level, got {kind_of(obj)}")
    for i, row in enumerate(obj):
        loc = f"{source}, row {i + 1} (index {i})"
        if not isinstance(row, dict):
            yield DataError(loc, f"expected a JSON object {{...}}, got {kind_of(row)}; every row must be an object")
        elif has_surrogates(row):
            yield DataError(loc, "contains bytes that are not valid UTF-8; re-save the file as UTF-8")
        else:
            yield loc, row


def _read_csv(source: str, data: bytes):
    text = data.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    n = 1
    while True:
        loc = f"{source}, line {n + 1}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(loc, f"unreadable CSV ({e}); check the quoting") from None
        n += 1
        if None in row:
            yield DataError(
                loc,
                f"has {len(reader.fieldnames or []) + len(row[None])} cells but the header has "
                f"{len(reader.fieldnames or [])}; quote cells that contain commas",
            )
        elif has_surrogates(row):
            yield DataError(loc, "contains bytes that are not valid UTF-8; re-save the file as UTF-8")
        else:
            yield loc, row


def _read_hub(source: str) -> list[tuple[str, dict]]:
    spec = source[len("hf:"):]
    hub_id, _, split = spec.partition(":")
    split = split or "train"
    if not hub_id:
        raise DataError(source, "no dataset id; write hf:<hub id> or hf:<hub id>:<split>, e.g. hf:org/name:train")
    label = f"hf:{hub_id}:{split}"
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise DataError(
                label,
                f"the Hugging Face Hub is unreachable because {var}={os.environ[var]} (offline mode); "
                "pass a local .jsonl, .json or .csv file instead",
            )
    try:
        from datasets import load_dataset  # noqa: PLC0415 - datasets is a slow import: only for a Hub data set

        ds = load_dataset(hub_id, split=split)
    except Exception as e:  # noqa: BLE001 - network errors, not found, bad split... all mean the same here
        raise DataError(
            label,
            f"could not load the dataset from the Hugging Face Hub ({type(e).__name__}: {e}); the hub may be "
            "unreachable or the id/split wrong; pass a local .jsonl, .json or .csv file instead",
        ) from None
    return [(f"{label}, row {i + 1} (index {i})", dict(row)) for i, row in enumerate(ds)]


def has_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_SURROGATE.search(value))
    if isinstance(value, dict):
        return any(has_surrogates(k) or has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogates(v) for v in value)
    return False


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def row_keys(row: dict) -> str:
    return ", ".join(repr(k) for k in row) or "none"
