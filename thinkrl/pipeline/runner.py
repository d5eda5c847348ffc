"""Run a pipeline: stages in order, finished ones skipped, an interrupted one resumed, one summary at the end.

    thinkrl pipeline configs/pipelines/tiny-cpu.yaml            # run, or continue after a kill
    thinkrl pipeline configs/pipelines/r1.yaml vars.base_model=/models/Qwen2.5-7B cold_start.train.lr=2e-5
    thinkrl pipeline configs/pipelines/tiny-cpu.yaml --force reasoning_rl   # redo it and what reads from it

Each stage folder ``OUTPUT/NAME/`` gets ``STARTED.json`` (the stage's config hash) when it starts and
``DONE.json`` (hash, outputs, metrics, wall time) when it finishes, written atomically. On a rerun:

- ``DONE.json`` with the same hash: skipped, nothing in the folder is touched;
- ``DONE.json`` or ``STARTED.json`` with another hash (its config, or an input stage's, changed): refused
  with a message, unless ``--force NAME`` names it or a stage it reads from, which deletes the folder first;
- ``STARTED.json`` with the same hash: resumed by the stage's own resume (checkpoints, samples.jsonl).

The summary table is printed and written to ``OUTPUT/summary.md`` and ``OUTPUT/summary.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkrl.config import save_config
from thinkrl.pipeline.config import OUTPUTS, Pipeline, load_pipeline
from thinkrl.pipeline.stages import run_stage

DONE_FILE = "DONE.json"
STARTED_FILE = "STARTED.json"
STAGE_CONFIG_FILE = "stage_config.yaml"


class PipelineError(RuntimeError):
    """A stage folder holds work done with another config; the message says how to proceed."""


@dataclass
class StageRecord:
    """One row of the summary."""

    name: str
    kind: str
    status: str
    """``ran`` (this run, from scratch), ``resumed`` (this run, after an interruption), ``skipped`` (done earlier)."""
    wall_s: float
    """Seconds the stage took in the run that finished it."""
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


def run_pipeline(
    pipeline: Pipeline, *, force: Sequence[str] = (), only: Sequence[str] | None = None
) -> list[StageRecord]:
    """Run every stage of ``pipeline`` that is not done (see the module docstring); returns the summary rows.

    ``force``: stage names to redo from scratch, with every stage that reads from them.
    ``only``: run stages up to and including these, then stop (the others are reported as ``pending``).
    """
    redo = {n for name in force for n in pipeline.dependents(pipeline.stage(name).name)}
    last = max((pipeline.stages.index(pipeline.stage(n)) for n in only), default=-1) if only else None
    problems = input_problems(pipeline)  # a missing input of stage 4 fails now, not after stages 1-3 ran
    if problems:
        raise PipelineError("the pipeline's inputs are not ready:\n  " + "\n  ".join(problems))
    pipeline.output_dir.mkdir(parents=True, exist_ok=True)
    check_stages(pipeline, redo)  # before running anything: a refusal never leaves a half-run pipeline
    records: list[StageRecord] = []
    for i, stage in enumerate(pipeline.stages):
        if last is not None and i > last:
            records.append(StageRecord(stage.name, stage.kind, "pending", 0.0))
            continue
        if stage.name in redo:
            shutil.rmtree(stage.dir, ignore_errors=True)
        done = _read(stage.dir / DONE_FILE)
        if done is not None:
            records.append(
                StageRecord(
                    stage.name, stage.kind, "skipped", done["wall_s"], done["metrics"], done["outputs"]
                )
            )
            print(f"pipeline: stage {stage.name} ({stage.kind}) is done; skipped", flush=True)
            continue
        resumed = (stage.dir / STARTED_FILE).exists()
        print(
            f"pipeline: stage {stage.name} ({stage.kind}) {'resumed' if resumed else 'started'}", flush=True
        )
        stage.dir.mkdir(parents=True, exist_ok=True)
        save_config(stage.cfg, stage.dir / STAGE_CONFIG_FILE)
        _write(stage.dir / STARTED_FILE, {"hash": stage.hash, "kind": stage.kind})
        start = time.perf_counter()
        metrics = run_stage(stage)
        wall = round(time.perf_counter() - start, 1)
        outputs = {what: str(stage.output(what)) for what in [*OUTPUTS[stage.kind], "dir"]}
        _write(stage.dir / DONE_FILE, {"hash": stage.hash, "kind": stage.kind, "wall_s": wall,
                                       "metrics": metrics, "outputs": outputs,
                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
        records.append(
            StageRecord(stage.name, stage.kind, "resumed" if resumed else "ran", wall, metrics, outputs)
        )
    write_summary(pipeline, records)
    return records


def check_stages(pipeline: Pipeline, redo: set[str] | None = None) -> None:
    """Refuse when a stage folder holds work (finished or not) of another config and the stage is not redone."""
    for stage in pipeline.stages:
        if stage.name in (redo or ()):
            continue
        for marker in (DONE_FILE, STARTED_FILE):
            rec = _read(stage.dir / marker)
            if rec is not None and rec.get("hash") != stage.hash:
                what = "finished" if marker == DONE_FILE else "started"
                raise PipelineError(
                    f"stage {stage.name!r} was {what} with another config (or one of its inputs, "
                    f"{', '.join(stage.deps) or 'none'}, changed): hash {rec.get('hash')} there, {stage.hash} now; "
                    f"rerun with --force {stage.name} to redo it and the stages that read from it "
                    f"({', '.join(pipeline.dependents(stage.name))}), or restore the old config "
                    f"(it is in {stage.dir / STAGE_CONFIG_FILE})"
                )
            if rec is not None:
                break


def input_problems(pipeline: Pipeline) -> list[str]:
    """What would make a stage fail for lack of an input, as sentences: an empty var; a model or data path that
    does not exist. Paths under the pipeline's ``output_dir`` are earlier stages' outputs and not checked; hub
    names (``org/name``) cannot be checked offline and pass."""
    from thinkrl.core import ModelLoadError, check_model_path, looks_local, resolve_model_path
    from thinkrl.data.datasets import FILE_SUFFIXES
    from thinkrl.eval.benchmarks import BENCHMARKS

    problems = [
        f"vars.{k} is empty; set it (vars.{k}=VALUE on the command line, or in the file's vars)"
        for k, v in pipeline.vars.items()
        if v is None or str(v).strip() == ""
    ]
    outputs = Path(pipeline.output_dir).resolve()
    for s in pipeline.stages:
        trains = s.kind in ("sft", "rl")
        models = [("model.path", s.cfg.model.path)] if trains else [("model", s.cfg.model)]
        data = (
            [("data.train", s.cfg.data.train), ("data.eval", s.cfg.data.eval)]
            if trains
            else [("data", s.cfg.data)]
        )
        for key, value in models:
            if value and not _under(value, outputs):
                try:
                    check_model_path(resolve_model_path(value))
                except ModelLoadError as e:
                    problems.append(f"stage {s.name!r}: {key}: {e}")
        for key, value in data:
            name, sep, rest = (value or "").partition(":")
            path = rest if name in BENCHMARKS and sep else value
            if not path or name == "builtin" or (name in BENCHMARKS and not sep) or _under(path, outputs):
                continue
            local = looks_local(path) or Path(path).suffix.lower() in FILE_SUFFIXES
            if local and not Path(path).expanduser().exists():
                problems.append(
                    f"stage {s.name!r}: {key}={value!r}: {path} does not exist (relative to {Path.cwd()}); fix the "
                    "path or the var that sets it"
                )
    return problems


def _under(path: str, root: Path) -> bool:
    return Path(path).expanduser().resolve().is_relative_to(root)


# ------------------------------------------------------------------------------------------------ summary
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def format_summary(records: Sequence[StageRecord]) -> str:
    """A markdown table: stage, kind, status, wall time, key metrics."""
    lines = ["| stage | kind | status | wall (s) | metrics |", "| --- | --- | --- | --- | --- |"]
    for r in records:
        metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in r.metrics.items())
        lines.append(f"| {r.name} | {r.kind} | {r.status} | {r.wall_s:.1f} | {metrics or '-'} |")
    return "\n".join(lines)


def write_summary(pipeline: Pipeline, records: Sequence[StageRecord]) -> str:
    """Print the table and write ``summary.md`` / ``summary.json`` in the pipeline folder; returns the table."""
    table = format_summary(records)
    print(table, flush=True)
    (pipeline.output_dir / "summary.md").write_text(f"# pipeline {pipeline.source}\n\n{table}\n")
    _write(
        pipeline.output_dir / "summary.json",
        {"source": pipeline.source, "stages": [vars(r) for r in records]},
    )
    return table


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------- CLI
def add_pipeline_arguments(parser: Any) -> None:
    """``thinkrl pipeline PIPELINE.yaml [key=value ...] [--force STAGE] [--until STAGE] [--dry-run]``."""
    parser.add_argument("pipeline", help="pipeline YAML (see configs/pipelines/ and docs/pipeline.md)")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="output_dir=DIR, vars.NAME=VALUE or STAGE.KEY=VALUE (e.g. rl.train.steps=5)",
    )
    parser.add_argument(
        "--force", action="append", default=[], metavar="STAGE",
        help="redo STAGE from scratch, and every stage that reads its outputs (repeatable)",
    )  # fmt: skip
    parser.add_argument("--until", action="append", default=None, metavar="STAGE", help="stop after STAGE")
    parser.add_argument(
        "--dry-run", action="store_true", help="resolve and validate every stage, print the plan, run nothing"
    )


def run_pipeline_cli(args: Any) -> int:
    """Run ``thinkrl pipeline`` from parsed :func:`add_pipeline_arguments` args."""
    pipeline = load_pipeline(args.pipeline, args.overrides)
    return run_loaded(pipeline, args)


def run_loaded(pipeline: Pipeline, args: Any) -> int:
    """The CLI body shared by ``thinkrl pipeline`` and ``thinkrl distill``: plan, or run and summarise."""
    if args.dry_run:
        print(format_plan(pipeline))
        problems = input_problems(pipeline)
        for line in problems:
            print(f"thinkrl: error: {line}", flush=True)
        print(
            "inputs: every path exists and every var is set"
            if not problems
            else f"{len(problems)} problem(s)"
        )
        return 2 if problems else 0
    try:
        run_pipeline(pipeline, force=args.force, only=getattr(args, "until", None))
    except PipelineError as e:
        print(f"thinkrl: error: {e}", flush=True)
        return 2
    print(f"pipeline directory: {pipeline.output_dir}")
    return 0


def format_plan(pipeline: Pipeline) -> str:
    """One line per stage: name, kind, state on disk, inputs, hash."""
    lines = []
    for s in pipeline.stages:
        state = (
            "done"
            if (s.dir / DONE_FILE).exists()
            else "started"
            if (s.dir / STARTED_FILE).exists()
            else "new"
        )
        lines.append(f"{s.name:<24} {s.kind:<7} {state:<8} reads {', '.join(s.deps) or '-':<30} {s.hash}")
    return "\n".join(lines)
