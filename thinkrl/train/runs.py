"""Run folders: a fresh run never writes over another run, and a resume continues only its own run.

``RUN/run.json`` holds the run's id, made when the run starts fresh. Every checkpoint's manifest carries the
id (``keep_last`` counts only this run's) and its trainer state the run's *identity*: the resolved config
without the fields a resume may change (:data:`FREE_FIELDS`: more steps, another checkpoint interval, the
logging, the periodic eval, memory knobs). A resume picks the newest checkpoint of this run whose files match
their checksums, sets aside the bad ones it skipped (``step-N.bad``, never deleted), and refuses a checkpoint
of another run or config unless ``train.resume_force`` says to continue anyway.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkrl.train.checkpoint import (
    STATE_FILES,
    CheckpointError,
    checkpoint_problem,
    list_checkpoints,
    read_manifest,
    set_aside,
)

RUN_FILE = "run.json"
RUN_FILES = (RUN_FILE, "config.yaml", "metrics.jsonl", "checkpoints", "completions.jsonl")
"""What makes a folder hold a run (other files, such as the demo's evaluations, may sit beside it)."""
FREE_FIELDS = (
    "train.steps", "train.max_steps", "train.epochs", "train.resume", "train.resume_force", "train.overwrite",
    "train.output_dir", "train.save_every", "train.keep_last", "train.num_threads", "train.device",
    "train.log_every", "train.eval_every", "train.micro_batch_size", "train.fsdp", "train.share_prompt",
    "train.fused_lm_head", "model.gradient_checkpointing", "data.eval", "log", "eval", "doctor", "grading",
)  # fmt: skip
"""Config fields (or whole sections) a resume may change: they do not change what the steps compute, up to
float rounding (the memory knobs)."""


class RunFolderError(RuntimeError):
    """The run folder holds another run, or a resume would continue the wrong run; the message gives the fixes."""


# ------------------------------------------------------------------------------------------- fresh runs
def run_files(run_dir: Path) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir``."""
    return [name for name in RUN_FILES if (run_dir / name).exists()]


def claim_run_dir(run_dir: Path, *, overwrite: bool, what: str = "train") -> Path | None:
    """Make ``run_dir`` ready for a fresh run: refuse when it holds a run, or with ``overwrite`` move that run
    to ``RUN.old-N`` (returned). Nothing is deleted.

    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp()) / "run"; run.mkdir(); _ = (run / "metrics.jsonl").write_text("")
    >>> claim_run_dir(run, overwrite=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    thinkrl.train.runs.RunFolderError: .../run already holds a run (metrics.jsonl); a fresh run there would ...
    >>> claim_run_dir(run, overwrite=True).name  # doctest: +ELLIPSIS
    [thinkrl] train: moved the run that was in .../run to .../run.old-1 (--overwrite)
    'run.old-1'
    """
    found = run_files(run_dir)
    if not found:
        return None
    aside = _free_name(run_dir)
    if not overwrite:
        raise RunFolderError(
            f"{run_dir} already holds a run ({', '.join(found)}); a fresh run there would overwrite it. Continue "
            f"it with --resume (train.resume=true), start this run in another folder (train.output_dir=NEW_DIR), "
            f"or pass --overwrite (train.overwrite=true) to move the old run to {aside} first (nothing is deleted)"
        )
    run_dir.rename(aside)
    print(f"[thinkrl] {what}: moved the run that was in {run_dir} to {aside} (--overwrite)", flush=True)
    return aside


def _free_name(run_dir: Path) -> Path:
    n = 1
    while run_dir.with_name(f"{run_dir.name}.old-{n}").exists():
        n += 1
    return run_dir.with_name(f"{run_dir.name}.old-{n}")


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def read_run_id(run_dir: Path) -> str | None:
    try:
        return str(json.loads((run_dir / RUN_FILE).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_run_id(run_dir: Path, run_id: str, kind: str) -> None:
    path = run_dir / RUN_FILE
    if read_run_id(run_dir) == run_id:
        return
    tmp = path.with_name(RUN_FILE + ".tmp")
    tmp.write_text(
        json.dumps({"run_id": run_id, "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    )
    tmp.replace(path)


def check_run_dir(t: Any) -> None:
    """Refuse a fresh run into a folder that holds a run (a ``train`` section: ``output_dir``, ``resume``,
    ``overwrite``) before anything loads; the trainer claims the folder itself when it starts."""
    if not t.resume and not t.overwrite:
        claim_run_dir(Path(t.output_dir), overwrite=False)  # raises, or changes nothing


def add_run_flags(parser: Any) -> None:
    """``--resume`` and ``--overwrite`` of ``thinkrl train`` and ``thinkrl sft``."""
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir"
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="train.output_dir holds a run: move it to OUTPUT_DIR.old-N first (nothing is deleted)",
    )  # fmt: skip


def run_flags(args: Any) -> list[str]:
    """The overrides ``--resume`` / ``--overwrite`` stand for."""
    return ["train.resume=true"] * bool(args.resume) + ["train.overwrite=true"] * bool(args.overwrite)


# ------------------------------------------------------------------------------------------------ identity
def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The config fields (dotted keys) that decide what a run computes: all but :data:`FREE_FIELDS`.

    >>> identity({"train": {"lr": 0.1, "steps": 4}, "log": {"progress": False}})
    {'train.lr': 0.1}
    """
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif not any(prefix == f or prefix.startswith(f + ".") for f in FREE_FIELDS):
            flat[prefix] = node

    walk(config, "")
    return flat


def check_identity(path: Path, current: dict[str, Any], *, force: bool) -> list[str]:
    """The fields whose value checkpoint ``path`` was written with differs from ``current``; an error unless
    ``force``."""
    try:
        saved = json.loads((path / STATE_FILES[0]).read_text()).get("identity")
    except (OSError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path / STATE_FILES[0]} cannot be read ({e})") from None
    if not isinstance(saved, dict):
        return []
    keys = sorted(set(saved) | set(current))
    changes = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    if changes and not force:
        raise RunFolderError(
            f"checkpoint {path} was written with another config ({'; '.join(changes)}). Resume with the config it "
            f"was written with (it is in {path.parent.parent / 'config.yaml'}), start a fresh run in another "
            "train.output_dir, or pass train.resume_force=true to continue with the new values"
        )
    return changes


# -------------------------------------------------------------------------------------------------- resume
@dataclass
class ResumePoint:
    """The checkpoint a resume continues from, and what was skipped on the way."""

    path: Path
    run_id: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """(set-aside folder, problem) of each newer checkpoint that failed its checksums."""
    foreign: list[Path] = field(default_factory=list)
    """Newer checkpoints of another run, left where they are."""


def find_resume_point(run_dir: Path, run_id: str | None, *, force: bool) -> ResumePoint | None:
    """The newest checkpoint of run ``run_id`` (any run's with ``force``; any when the id is unknown) whose
    files match their manifest; None when the run has no checkpoint at all. Newer bad ones are set aside.

    Raises :class:`CheckpointError` when checkpoints exist but none is usable (nothing is renamed then), and
    :class:`RunFolderError` when the only good ones belong to another run.
    """
    bad: list[tuple[Path, str]] = []
    foreign: list[tuple[Path, str]] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(path)
        if problem is not None:
            bad.append((path, problem))
            continue
        owner = str((read_manifest(path) or {}).get("run_id", ""))
        if run_id and owner != run_id and not force:
            foreign.append((path, owner))
            continue
        skipped = [(set_aside(p, "bad"), why) for p, why in bad]
        return ResumePoint(path, owner or run_id or "", skipped, [p for p, _ in foreign])
    if foreign:
        path, owner = foreign[0]
        raise RunFolderError(
            f"{path} was written by another run (run id {owner}; {run_dir / RUN_FILE} says {run_id}), so --resume "
            "will not continue from it. Start a fresh run in another train.output_dir, or pass "
            "train.resume_force=true to continue from it anyway"
        )
    if bad:
        listed = "; ".join(f"{p.name}: {why}" for p, why in bad)
        raise CheckpointError(
            f"no usable checkpoint in {run_dir / 'checkpoints'} ({listed}). Restore a good copy of a checkpoint "
            "there, or start over with --overwrite (moves this run aside; nothing is deleted)"
        )
    return None


# ------------------------------------------------------------------------------------------------- rewards
def qualified_name(fn: Any) -> str:
    """``module:qualname`` of a reward callable (the form a config's ``rewards`` entry accepts when the
    function is importable), looking through thinkrl's named wrappers and ``functools.partial``.

    >>> qualified_name(qualified_name)
    'thinkrl.train.runs:qualified_name'
    """
    while hasattr(fn, "fn") and callable(fn.fn):  # NamedReward
        fn = fn.fn
    if isinstance(fn, functools.partial):
        return qualified_name(fn.func) + " (partial)"
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}:{target.__qualname__}"


def reward_records(funcs: list[Any], weights: list[float]) -> list[dict[str, Any]]:
    """The ``rewards`` entries of the run's config.yaml for rewards passed as Python callables: a registry
    reward by its name, any other callable by :func:`qualified_name`."""
    from thinkrl.rewards.registry import REWARDS

    def name(f: Any) -> str:
        key = getattr(f, "name", None)
        builtin = REWARDS.get(key) if isinstance(key, str) else None
        return key if builtin is not None and getattr(f, "fn", None) is builtin.fn else qualified_name(f)

    return [{"name": name(f), "weight": float(w), "kwargs": {}} for f, w in zip(funcs, weights)]
