"""Run one pipeline stage with its command's own machinery; return its headline metrics.

- ``sft`` / ``rl``: :class:`~thinkrl.sft.SFTTrainer` / :class:`~thinkrl.train.GRPOTrainer` with
  ``train.output_dir = STAGE/run`` and ``train.resume=true`` (an interrupted stage continues from its latest
  checkpoint: ``train.save_every`` sets how much a kill can lose), then the final checkpoint is exported to
  ``STAGE/model``: a plain Hugging Face folder (weights + tokenizer, no optimizer state), hard-linked.
- ``sample``: :func:`thinkrl.rejection.runner_dataset` into ``STAGE/`` (``samples.jsonl`` resumes per batch).
- ``eval``: :func:`thinkrl.eval.evaluate` into ``STAGE/`` (resumes the same way).
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path
from typing import Any

from thinkrl.pipeline.config import EvalStageConfig, SampleStageConfig, SamplingStageConfig, Stage
from thinkrl.train.checkpoint import MANIFEST, STATE_FILES, checkpoint_problem, latest_checkpoint


def run_stage(stage: Stage) -> dict[str, Any]:
    """Run (or resume) ``stage``; returns its metrics for the summary table (numbers or short strings)."""
    stage.dir.mkdir(parents=True, exist_ok=True)
    try:
        return RUNNERS[stage.kind](stage)
    finally:
        gc.collect()  # the next stage loads its own model; drop this one's before it does


def _run_sft(stage: Stage) -> dict[str, Any]:
    from thinkrl.sft import SFTTrainer

    SFTTrainer(stage.cfg).train()
    export_model(Path(stage.cfg.train.output_dir), stage.output("model"))
    last = _last_with(Path(stage.cfg.train.output_dir), "train/loss")
    return {"steps": last.get("step"), "final loss": last.get("train/loss")}


def _run_rl(stage: Stage) -> dict[str, Any]:
    from thinkrl.train import GRPOTrainer

    GRPOTrainer(stage.cfg).train()
    run_dir = Path(stage.cfg.train.output_dir)
    export_model(run_dir, stage.output("model"))
    last = _last_with(run_dir, "reward/mean")
    out = {"steps": last.get("step"), "reward": last.get("reward/mean"), "accuracy": last.get("accuracy")}
    pass1 = _last_with(run_dir, "eval/pass@1").get("eval/pass@1")
    if pass1 is not None:
        out["eval pass@1"] = pass1
    return out


def _run_sample(stage: Stage) -> dict[str, Any]:
    from thinkrl.rejection import require_rows, sample_dataset

    cfg: SampleStageConfig = stage.cfg
    model, tokenizer = _load(cfg)
    result = sample_dataset(
        model,
        tokenizer,
        _rows(cfg),
        stage.dir,
        cfg,
        grader=_grader(cfg),
        filters=cfg.filters,
        progress=cfg.progress,
    )
    require_rows(result)  # 0 kept rows fail this stage (not DONE), with what removed them
    return {
        "kept": result.report["kept"],
        "total": result.report["total"],
        "sampler pass@1": result.summary["metrics"]["pass@1"],
    }


def _run_eval(stage: Stage) -> dict[str, Any]:
    from thinkrl.eval import evaluate

    cfg: EvalStageConfig = stage.cfg
    model, tokenizer = _load(cfg)
    result = evaluate(
        model, tokenizer, _rows(cfg), cfg, out_dir=stage.dir, grader=_grader(cfg), progress=cfg.progress,
        name=stage.name,
    )  # fmt: skip
    m = result.metrics
    return {
        "pass@1": m["pass@1"],
        "pass@1_se": m["pass@1_se"],
        "problems": len(result.summary["per_problem"]),
    }


RUNNERS = {"sft": _run_sft, "rl": _run_rl, "sample": _run_sample, "eval": _run_eval}


# ------------------------------------------------------------------------------------------------ helpers
def export_model(run_dir: Path, dest: Path) -> Path:
    """Publish the latest checkpoint of ``run_dir`` as ``dest``, once its files pass their checksums: model
    and tokenizer files only (no trainer state, no manifest, no ``reference/``), hard-linked when the file system
    allows, renamed into place."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise RuntimeError(f"{run_dir} has no checkpoint to export; did the stage train any step?")
    problem = checkpoint_problem(ckpt)
    if problem is not None:
        raise RuntimeError(
            f"checkpoint {ckpt} cannot be exported: {problem}; rerun the pipeline to resume the stage"
        )
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ckpt.iterdir():
        if f.is_file() and f.name not in (*STATE_FILES, MANIFEST):
            try:
                os.link(f, tmp / f.name)
            except OSError:
                shutil.copy2(f, tmp / f.name)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest


def _last_with(run_dir: Path, key: str) -> dict[str, Any]:
    """The last record of ``run_dir/metrics.jsonl`` that has ``key`` (empty when none)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return next((r for r in reversed(records) if r.get(key) is not None), {})


def _load(cfg: SamplingStageConfig) -> tuple[Any, Any]:
    from thinkrl.core import load_model_and_tokenizer

    return load_model_and_tokenizer(cfg.model, dtype=cfg.dtype, device=cfg.device or "auto")


def _rows(cfg: SamplingStageConfig) -> list[dict[str, Any]]:
    """Benchmark names (``gsm8k``, ``math500:PATH``, ...) through the eval loader, anything else as training data."""
    from thinkrl.eval.benchmarks import BENCHMARKS, load_benchmark

    if cfg.data.partition(":")[0] in BENCHMARKS:
        return load_benchmark(cfg.data, limit=cfg.limit)
    from thinkrl.data.datasets import load_prompts

    return load_prompts(
        cfg.data,
        split=cfg.split,
        question_key=cfg.question_key,
        answer_key=cfg.answer_key,
        max_rows=cfg.limit,
    )


def _grader(cfg: SamplingStageConfig) -> Any:
    from thinkrl.rejection import RewardGrader
    from thinkrl.rewards import build_reward_funcs

    funcs, weights = build_reward_funcs(cfg.rewards, cfg.grading)
    return RewardGrader(funcs, weights, correct_reward=cfg.correct_reward, grading=cfg.grading)
