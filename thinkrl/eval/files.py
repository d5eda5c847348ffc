"""The files of an evaluation folder, written so that an interrupted run resumes and a changed one refuses.

- ``samples.jsonl``: one record per completion, appended (and synced) after every batch; a half-written last
  line (a kill mid-write) is cut off on reading.
- ``eval_config.json``: the sampling settings the samples were drawn with (:func:`check_settings`).
- ``summary.json``: the metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "eval_config.json"


class EvalResumeError(RuntimeError):
    """``out_dir`` holds samples drawn with other settings or prompts; the message says how to proceed."""


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to add to samples drawn by another model (``model`` path, ``weights`` fingerprint) or with other
    sampling ``settings``; then record these ones."""
    path = out / CONFIG_FILE
    if path.exists():
        old = json.loads(path.read_text())
        diff = {key: (old.get(key), val) for key, val in settings.items() if old.get(key) != val}
        if diff and (out / SAMPLES_FILE).exists():
            changes = ", ".join(f"{key}: {a!r} -> {b!r}" for key, (a, b) in diff.items())
            who = "another model" if {"model", "weights"} & set(diff) else "other settings"
            raise EvalResumeError(
                f"{out} holds samples drawn by {who} ({changes}), which this evaluation must not reuse; use "
                f"another --out, or delete {out / SAMPLES_FILE} to start over"
            )
    write_json(path, settings)


def check_prompts(
    done: dict[tuple[str, int], dict[str, Any]],
    rows: Sequence[dict],
    qhash: list[str],
    out: Path,
    ahash: list[str] | None = None,
) -> None:
    """Refuse stored samples of a problem id whose prompt (hash) differs from this run's, or, with ``ahash``,
    whose gold answer differs (their ``correct`` was graded against the old one)."""
    want = {r["id"]: h for r, h in zip(rows, qhash)}
    gold = {r["id"]: h for r, h in zip(rows, ahash)} if ahash is not None else {}
    for (pid, _), rec in done.items():
        if pid in want and rec.get("qhash") != want[pid]:
            raise EvalResumeError(
                f"{out / SAMPLES_FILE} has samples for problem {pid!r} with a different prompt (another benchmark "
                "or template?); use another --out for this data"
            )
        if pid in gold and rec.get("ahash", gold[pid]) != gold[pid]:
            raise EvalResumeError(
                f"{out / SAMPLES_FILE} has samples for problem {pid!r} graded against another gold answer; rerun "
                "with --regrade to grade the stored completions against the new answers, or use another --out"
            )


def load_samples(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Records keyed by (id, sample_idx); a half-written last line (an interrupted run) is cut off."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    done = {}
    for line in raw.decode().splitlines():
        if line.strip():
            rec = json.loads(line)
            done[(str(rec["id"]), int(rec["sample_idx"]))] = rec
    return done


def append_samples(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records as JSON lines and sync them to disk (the resume point)."""
    with path.open("a") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def write_samples(path: Path, records: Any) -> None:
    """Replace the file with ``records`` atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.replace(path)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
