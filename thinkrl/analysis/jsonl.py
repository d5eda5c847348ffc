"""Reading the run folder's JSON-lines files (``metrics.jsonl``, ``completions.jsonl``) safely.

A writer appends one JSON object per line and flushes; a process killed mid-write (kill -9, a preempted node)
leaves at most one torn line, the last. Readers skip that line; a bad line anywhere else is corruption and
raises an error that names the file and the line.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
>>> _ = p.write_text('{"step": 1}\\n{"step": 2}\\n{"ste')
>>> [r["step"] for r in read_jsonl(p)]
[1, 2]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class RunFileError(ValueError):
    """A run file is corrupt beyond a torn last line; the message names the file and the line."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file, in order; a torn last line (no newline at the end) is skipped.

    Raises :class:`RunFileError` for an unparsable line that is not the torn tail, or a line that is not a JSON
    object.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn_tail = not data.endswith(b"\n")  # the last element is then a partial line (or b"" for an empty file)
    out = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        last = i == len(lines) - 1
        try:
            record = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            if last and torn_tail:
                break  # the writer was killed mid-line: everything before it is complete
            raise RunFileError(
                f"{path}:{i + 1}: not valid JSON ({getattr(e, 'msg', e)}); the file is corrupt at this line (only a torn "
                "last line is expected after a crash). Delete or fix the line to read the rest."
            ) from None
        if not isinstance(record, dict):
            raise RunFileError(
                f"{path}:{i + 1}: expected a JSON object per line, got {type(record).__name__}"
            )
        out.append(record)
    return out


def drop_torn_tail(path: str | Path) -> int:
    """Cut a torn last line off ``path`` (before appending to it again); returns the bytes removed.

    Without this, the next record written after a crash would be glued to the fragment and both lost.
    """
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # find the last newline by reading backwards in blocks
        pos, block = size, 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            j = chunk.rfind(b"\n")
            if j >= 0:
                keep = start + j + 1
                break
            pos = start
        f.truncate(keep)
    return size - keep


def write_jsonl_lines(path: Path, records: list[dict[str, Any]], *, fsync: bool = False) -> int:
    """Append ``records`` as JSON lines with one write and a flush; returns the bytes written.

    One ``write`` per batch keeps a crash to one torn line at most; the flush hands the bytes to the OS, so a
    killed process loses nothing already written (``fsync`` also survives a power loss, at a cost per call).
    """
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    with path.open("ab") as f:
        f.write(payload)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return len(payload)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of ``RUN/metrics.jsonl``, in order (a torn last line after a crash is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; is {run_dir} a thinkrl run directory?")
    return read_jsonl(path)
