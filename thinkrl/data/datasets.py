"""Load prompt rows from files, ``datasets`` folders, the hub, or a built-in task.

Every row becomes a dict with at least ``question`` and ``answer``; other columns ride along and reach the
reward functions as keyword arguments (e.g. ``verifier``, ``numbers``, ``target``, ``tests``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


class DataError(ValueError):
    """The dataset spec, file or columns are wrong; the message says what and how to fix it."""


def _read_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                line = _utf8(raw, path, lineno)
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"{path}:{lineno} is a JSON {type(row).__name__}, not an object; each line must be one "
                        'row like {"question": ..., "answer": ...}'
                    )
                rows.append(row)
        return rows
    if suffix == ".json":
        try:
            data = json.loads(_utf8(path.read_bytes(), path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno} is not valid JSON ({e.msg}); fix the file") from None
        if isinstance(data, dict):  # {"data": [...]} or column-oriented {"question": [...], ...}
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(data) == 1 and lists:
                data = lists[0]
            elif lists and all(isinstance(v, list) for v in data.values()):
                keys = list(data)
                data = [dict(zip(keys, vals)) for vals in zip(*data.values())]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of objects")
        return data
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow's ArrowInvalid and friends
            raise DataError(f"{path} is not a readable parquet file ({type(e).__name__}: {e})") from None
    if suffix == ".csv":
        import csv
        import io

        return list(csv.DictReader(io.StringIO(_utf8(path.read_bytes(), path), newline="")))
    raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


def _utf8(raw: bytes, path: Path, lineno: int | None = None) -> str:
    """``raw`` decoded as UTF-8, or a :class:`DataError` naming the file, line and byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = lineno if lineno is not None else raw[: e.start].count(b"\n") + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        raise DataError(
            f"{path}:{line} is not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column}); re-save the file "
            "as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > NEW`)"
        ) from None


def _read_datasets(spec: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise DataError("reading a datasets folder or hub name needs `pip install datasets`") from e
    path = Path(spec)
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{spec}: no split {split!r}; available: {', '.join(ds)} (set data.split)")
            ds = ds[split]
        return ds.to_list()
    name, _, config = spec.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:
        raise DataError(
            f"could not load {spec!r}: not a local file or folder, and the hub load failed ({type(e).__name__}: {e}). "
            f"Pass a path to a {'/'.join(FILE_SUFFIXES)} file or a saved datasets folder"
        ) from None
    return ds.to_list()


def read_rows(spec: str, split: str = "train") -> list[dict[str, Any]]:
    """Raw rows from ``spec``: a file, a folder of files, a ``datasets`` folder, a hub name, or ``builtin:NAME``."""
    if not spec:
        raise DataError(
            "no dataset given; set data.train to a .jsonl/.parquet/.csv file, a folder, or builtin:demo"
        )
    if spec.startswith("builtin:"):
        from thinkrl.data.builtin import builtin_rows

        return builtin_rows(spec.removeprefix("builtin:"), split)
    path = Path(spec)
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or not files:
            return _read_datasets(spec, split)
        preferred = [p for p in files if p.stem.startswith(split)] or files
        return [row for p in preferred for row in _read_file(p)]
    if path.suffix.lower() in FILE_SUFFIXES or "/" in spec and not spec.count("/") == 1:
        raise DataError(f"dataset file {spec!r} does not exist; check the path (relative to {Path.cwd()})")
    return _read_datasets(spec, split)


def load_prompts(
    spec: str,
    *,
    split: str = "train",
    question_key: str = "question",
    answer_key: str = "answer",
    max_rows: int | None = None,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Rows with ``question`` and ``answer`` keys (renamed from the given columns), other columns kept.

    ``seed`` shuffles the rows (before ``max_rows`` is applied) deterministically.
    """
    rows = read_rows(spec, split)
    if not rows:
        raise DataError(f"dataset {spec!r} has no rows")
    columns = list(rows[0].keys())
    for key, role in ((question_key, "data.question_key"), (answer_key, "data.answer_key")):
        if key not in rows[0]:
            raise DataError(
                f"dataset {spec!r} has no column {key!r} ({role}); its columns are: {', '.join(columns)}"
            )
    out = []
    for i, row in enumerate(rows):
        if row.get(question_key) in (None, ""):
            raise DataError(
                f"dataset {spec!r} row {i} has an empty {question_key!r}; remove the row or fix it"
            )
        if answer_key not in row:
            raise DataError(
                f"dataset {spec!r} row {i} has no {answer_key!r} column (data.answer_key; rows are counted from 0, "
                "blank lines skipped); add the answer or remove the row"
            )
        new = {k: v for k, v in row.items() if k not in (question_key, answer_key)}
        new["question"] = str(row[question_key])
        new["answer"] = row[answer_key]
        out.append(new)
    if seed is not None:
        random.Random(seed).shuffle(out)
    return out[:max_rows] if max_rows is not None else out
