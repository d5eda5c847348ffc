"""``thinkrl demo``: R1-Zero in miniature, end to end, on a laptop CPU.

    base model (shipped, or `thinkrl pretrain`) -> held-out eval (R1 protocol) -> GRPO with the R1-Zero template
    and rule rewards only (accuracy + format) -> the same eval -> report (HTML + PNG + terminal table)

The ablation ``--no-think`` runs the same RL with thinking forbidden: a completion that writes anything
inside ``<think>`` earns no reward, so only direct answers can be reinforced.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from thinkrl.analysis.report import build_report, format_comparison
from thinkrl.config import Config, load_config
from thinkrl.data.addition import split_rows
from thinkrl.demo.probe import MODES, classify_completion

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
PROTOCOL = (
    "Held-out problems never seen in pretraining or RL. pass@1 = mean correctness of k samples per problem at "
    "temperature 0.6, top-p 0.95 (the R1 paper's protocol); cons@k = majority vote; ± is the standard error "
    "over problems."
)


def forbid_thinking(reward_fn):
    """Wrap a reward so that completions with any text inside <think>...</think> score 0 (the ablation)."""

    def no_think(prompts, completions, **columns):
        scores = reward_fn(prompts, completions, **columns)
        return [0.0 if _think_text(c) else s for c, s in zip(completions, scores)]

    no_think.__name__ = getattr(reward_fn, "__name__", "reward")
    return no_think


def _think_text(completion: str) -> str:
    start, end = completion.find("<think>"), completion.find("</think>")
    if start < 0:
        return ""
    return completion[start + len("<think>") : end if end > start else None].strip()


def mode_mix(samples: list[dict[str, Any]], rows_by_id: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Share of samples per mode (steps / direct / malformed) and each mode's accuracy."""
    results = [
        classify_completion(
            s["completion"], str(rows_by_id[s["id"]]["answer"]), rows_by_id[s["id"]].get("operands")
        )
        for s in samples
    ]
    out: dict[str, float] = {}
    for m in MODES:
        in_mode = [r for r in results if r["mode"] == m]
        out[f"mode/{m}"] = len(in_mode) / max(len(results), 1)
        if in_mode:
            out[f"mode/{m}_accuracy"] = sum(r["correct"] for r in in_mode) / len(in_mode)
    return out


def demo_config(out_dir: str | Path, overrides: list[str] | None = None) -> Config:
    return load_config(DEMO_CONFIG, [f"train.output_dir={out_dir}", *(overrides or [])])


def evaluate_stage(model, tokenizer, rows, cfg: Config, out_dir: Path, name: str) -> tuple[dict, list[dict]]:
    """The R1 protocol on held-out rows, sampled as the run's periodic eval samples (seeded by
    ``train.seed``); returns (metrics incl. mode mix, samples)."""
    from thinkrl.eval import eval_sampling, evaluate

    sampling = dataclasses.replace(eval_sampling(cfg), seed=cfg.train.seed)
    result = evaluate(
        model,
        tokenizer,
        rows,
        sampling,
        out_dir=out_dir / f"eval_{name}",
        progress=cfg.log.progress,
        name=name,
    )
    m = result.metrics
    keep = {k: m[k] for k in m if isinstance(m[k], (int, float)) and not k.startswith("n_")}
    keep.update(mode_mix(result.samples, {str(r["id"]): r for r in rows}))
    return keep, result.samples


def _examples(samples: list[dict], rows_by_id: dict[str, dict], n: int = 3) -> list[dict]:
    out = []
    for s in samples:
        if s["sample_idx"] == 0 and len(out) < n:
            row = rows_by_id[s["id"]]
            out.append({"question": row["question"], "answer": row["answer"], "completion": s["completion"],
                        "correct": bool(s["correct"])})  # fmt: skip
    return out


def start_demo(
    out: Path, cfg: Config, path: str, split: Any, eval_problems: int, pretrain: str
) -> tuple[Any, Any, list[dict], list[dict]]:
    """What every demo does first: claim ``out`` (a previous demo there moves to ``OUT.old-N``; nothing is
    deleted), set the threads, load the base model at ``path`` (``thinkrl {pretrain}`` builds it) and split the
    task's rows with ``split`` (seed 0: every run sees the same problems). Returns (model, tokenizer, train
    rows, the first ``eval_problems`` held-out rows with ids)."""
    from thinkrl.core import load_model_and_tokenizer
    from thinkrl.train.runs import claim_run_dir

    claim_run_dir(out, overwrite=True, what="demo")
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"no base model at {path}; run `thinkrl {pretrain} --out {path}` first")
    model, tokenizer = load_model_and_tokenizer(path, dtype=cfg.model.dtype)
    train_rows, held_rows = split(seed=0)
    eval_rows = [{**r, "id": f"heldout-{i}"} for i, r in enumerate(held_rows[:eval_problems])]
    return model, tokenizer, train_rows, eval_rows


def finish_demo(out: Path, summary: dict[str, Any], label: str, seconds: str) -> Path:
    """What every demo does last: ``OUT/summary.json``, the report, the before/after table on the terminal and
    the report's path with the time (``seconds`` names it: ``total``, ``this arm``)."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report = build_report(out)
    print()
    print(format_comparison(summary))
    print(f"\n{label}: {report.resolve()}  ({seconds} {summary['seconds']:.0f} s)")
    return report


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    overrides: list[str] | None = None,
    no_think: bool = False,
    eval_problems: int = 200,
    base_model: str | Path | None = None,
) -> dict[str, Any]:
    """Run the whole demo; returns the summary (also written to ``OUT/summary.json``)."""
    from thinkrl.core import DEMO_BASE_PATH
    from thinkrl.rewards import build_reward_funcs
    from thinkrl.train import GRPOTrainer

    start = time.perf_counter()
    out = Path(out_dir)
    cfg = demo_config(out, overrides)
    path = str(base_model or DEMO_BASE_PATH)
    model, tokenizer, train_rows, eval_rows = start_demo(
        out, cfg, path, split_rows, eval_problems, "pretrain"
    )
    rows_by_id = {r["id"]: r for r in eval_rows}

    print(f"[demo] base model {path}; {len(train_rows)} RL problems, {len(eval_rows)} held-out problems")
    base_metrics, base_samples = evaluate_stage(model, tokenizer, eval_rows, cfg, out, "base")
    print(f"[demo] base pass@1 {base_metrics['pass@1']:.3f}  ({time.perf_counter() - start:.0f} s)")

    funcs, weights = build_reward_funcs(cfg.rewards, cfg.grading)  # the trainer's own builder
    rewards = list(zip(funcs, weights))
    if no_think:
        rewards = [(forbid_thinking(fn), w) for fn, w in rewards]
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, reward_funcs=rewards, train_rows=train_rows,
                          eval_rows=eval_rows if cfg.eval.every_steps else None)  # fmt: skip
    trainer.train()
    print(f"[demo] RL done: {cfg.train.steps} steps ({time.perf_counter() - start:.0f} s)")
    after_name = "after RL (no thinking)" if no_think else "after RL"
    after_metrics, after_samples = evaluate_stage(trainer.model, tokenizer, eval_rows, cfg, out, "after")

    summary = {
        "title": "thinkrl demo: R1-Zero in miniature"
        + (" — ablation: thinking forbidden" if no_think else ""),
        "description": (
            "A ~1M-parameter Llama pretrained by thinkrl on a synthetic corpus (no reasoning ever follows the "
            "R1 template in it) is trained with GRPO on 'add four one-digit numbers', with the R1-Zero template "
            "and rule rewards only (accuracy + format)."
        ),
        "protocol": PROTOCOL,
        "evals": {"base": base_metrics, after_name: after_metrics},
        "samples": {
            "base": _examples(base_samples, rows_by_id),
            after_name: _examples(after_samples, rows_by_id),
        },
        "seconds": round(time.perf_counter() - start, 1),
        "config": str(out / "config.yaml"),
    }
    finish_demo(out, summary, "[demo] report", "total")
    return summary
