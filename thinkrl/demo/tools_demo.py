"""``thinkrl demo --tools``: RL teaches a tiny model to use a Python tool, on CPU, in minutes.

    tools base (shipped, or `thinkrl pretrain --tools`) -> held-out eval with the tool -> GRPO in the Python
    tool environment with rule rewards only (accuracy + format) -> the same eval -> report

The task, multiplying two three-digit numbers, is beyond a one-million-parameter model's head but two copies
away with Python (``thinkrl/data/multiplication.py``). The base model's corpus has both modes, calling the tool
and answering at once (``tools_corpus.py``); RL selects the one that earns reward. ``--text-only`` is the
ablation: the same RL on the same base and budget with the tool switched off (a ``<python>`` block is then plain
text: nothing runs and no output comes back). ``--with-text-arm`` runs it after the tool arm, into
``OUT/text-only``, and adds its held-out result to the table.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from thinkrl.config import Config, load_config
from thinkrl.data.multiplication import split_rows
from thinkrl.demo.run import _examples, finish_demo, start_demo

TOOLS_CONFIG = Path(__file__).with_name("tools_demo.yaml")
TOOLS_BASE_PATH = Path(__file__).resolve().parent.parent / "assets" / "tools-base"
PROTOCOL = (
    "Held-out problems never seen in pretraining or RL. pass@1 = mean correctness of k samples per problem at "
    "temperature 0.6, top-p 0.95 (the R1 paper's protocol), the model free to call the tool (none in the "
    "text-only arm); ± is the standard error over problems. tool_calls_mean = tool calls per sample."
)
MODES = ("tool", "direct", "malformed")


def tool_mode_mix(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Share of samples per mode and each mode's accuracy: ``tool`` (called Python; in the text-only arm:
    wrote a ``<python>`` block), ``direct`` (answered without), ``malformed`` (no answer).

    >>> tool_mode_mix([{"completion": "<python>x</python>", "tool_calls": 1, "extracted": "6", "correct": True},
    ...                {"completion": "7", "extracted": None, "correct": False}])["mode/tool_accuracy"]
    1.0
    """
    counts = {m: [0, 0] for m in MODES}
    for s in samples:
        if s.get("tool_calls") or "</python>" in s["completion"]:
            mode = "tool"
        elif s.get("extracted") is not None:
            mode = "direct"
        else:
            mode = "malformed"
        counts[mode][0] += 1
        counts[mode][1] += bool(s.get("correct"))
    n = max(len(samples), 1)
    out = {f"mode/{m}": c[0] / n for m, c in counts.items()}
    out.update({f"mode/{m}_accuracy": c[1] / c[0] for m, c in counts.items() if c[0]})
    return out


def tools_config(out_dir: str | Path, overrides: list[str] | None = None, text_only: bool = False) -> Config:
    extra = ["tools.enabled=false"] if text_only else []
    return load_config(TOOLS_CONFIG, [f"train.output_dir={out_dir}", *extra, *(overrides or [])])


def evaluate_with_tools(model, tokenizer, rows, cfg: Config, out_dir: Path, name: str) -> tuple[dict, list]:
    """The R1 protocol on held-out rows, with the run's tool when it has one; (metrics incl. mode mix and tool
    use, samples)."""
    from thinkrl.eval import eval_sampling, evaluate
    from thinkrl.rollout import build_environment

    env = build_environment(cfg, tokenizer) if cfg.tools.enabled else None
    sampling = dataclasses.replace(eval_sampling(cfg), seed=cfg.train.seed)
    result = evaluate(model, tokenizer, rows, sampling, out_dir=out_dir / f"eval_{name}", env=env,
                      progress=cfg.log.progress, name=name)  # fmt: skip
    m = result.metrics
    keep = {k: m[k] for k in m if isinstance(m[k], (int, float)) and not k.startswith("n_")}
    keep.setdefault("tool_calls_mean", 0.0)
    keep.update(tool_mode_mix(result.samples))
    return keep, result.samples


def run_tools_demo(
    out_dir: str | Path = "runs/demo-tools",
    *,
    overrides: list[str] | None = None,
    text_only: bool = False,
    with_text_arm: bool = False,
    eval_problems: int = 200,
    base_model: str | Path | None = None,
) -> dict[str, Any]:
    """Run one arm of the tools demo (and the text-only arm after it with ``with_text_arm``); returns the
    summary (also ``OUT/summary.json``)."""
    from thinkrl.rewards import build_reward_funcs
    from thinkrl.train import GRPOTrainer

    start = time.perf_counter()
    out = Path(out_dir)
    cfg = tools_config(out, overrides, text_only)
    path = str(base_model or TOOLS_BASE_PATH)
    model, tokenizer, train_rows, eval_rows = start_demo(
        out, cfg, path, split_rows, eval_problems, "pretrain --tools"
    )
    rows_by_id = {r["id"]: r for r in eval_rows}
    arm = "without tools" if text_only else "with tools"

    print(f"[demo --tools] base model {path}; arm: RL {arm}; {len(eval_rows)} held-out problems")
    base_metrics, base_samples = evaluate_with_tools(model, tokenizer, eval_rows, cfg, out, "base")
    print(f"[demo --tools] base pass@1 {base_metrics['pass@1']:.3f}, tool calls per sample "
          f"{base_metrics['tool_calls_mean']:.2f}  ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    funcs, weights = build_reward_funcs(cfg.rewards, cfg.grading)
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, reward_funcs=list(zip(funcs, weights)),
                          train_rows=train_rows, eval_rows=eval_rows if cfg.eval.every_steps else None)  # fmt: skip
    trainer.train()
    rl_seconds = time.perf_counter() - start
    print(f"[demo --tools] RL done: {cfg.train.steps} steps ({rl_seconds:.0f} s)")
    after_metrics, after_samples = evaluate_with_tools(trainer.model, tokenizer, eval_rows, cfg, out, "after")
    base_name, after_name = f"base ({arm})", f"after RL {arm}"
    summary: dict[str, Any] = {
        "title": "thinkrl demo --tools: RL teaches a tiny model to use Python"
        + (" — ablation: no tool" if text_only else ""),
        "description": (
            "A ~1M-parameter Llama pretrained by thinkrl on a synthetic corpus with two modes (calling Python and "
            "answering at once) is trained with GRPO to multiply two three-digit numbers, with the R1-Zero "
            f"template plus one sentence about the tool and rule rewards only (accuracy + format); RL {arm}."
        ),
        "protocol": PROTOCOL,
        "evals": {base_name: base_metrics, after_name: after_metrics},
        "samples": {
            base_name: _examples(base_samples, rows_by_id),
            after_name: _examples(after_samples, rows_by_id),
        },  # fmt: skip
        "seconds": round(time.perf_counter() - start, 1),
        "config": str(out / "config.yaml"),
    }
    if with_text_arm and not text_only:
        other = run_tools_demo(out / "text-only", overrides=overrides, text_only=True,
                               eval_problems=eval_problems, base_model=base_model)  # fmt: skip
        text_name = "after RL without tools (text-only arm)"
        summary["evals"] = {base_name: base_metrics, text_name: other["evals"]["after RL without tools"],
                            after_name: after_metrics}  # fmt: skip
        summary["text_arm_seconds"] = other["seconds"]
    finish_demo(out, summary, "[demo --tools] report", "this arm")
    return summary
