"""Policy-optimisation variants side by side on the built-in demo task: one base model, one budget, 3+ seeds.

    .venv/bin/python benchmarks/algorithms.py            # the default list, 3 seeds, < 1 h; a quiet machine
    .venv/bin/python benchmarks/algorithms.py --variants grpo,cispo --seeds 0 --steps 2 --eval-problems 8
    .venv/bin/python benchmarks/algorithms.py --report-only    # redraw the report from OUT/results.jsonl

Every variant is a list of config overrides on ``thinkrl/demo/demo.yaml``, so it runs exactly what a user can
select by name in a config (docs/algorithms.md, "Choosing a variant in the config"); a variant the config
rejects is reported as skipped, with the reason. The shared budget: ``--steps`` RL steps of 16 prompts x 8 samples
from the shipped demo base checkpoint, each step's samples split into 4 minibatches (4 optimizer steps), so
from the second minibatch on the update is off-policy and the clips, gates and covariance selections act
(with one on-policy update per step every loss reduces to the same policy gradient). Held-out pass@1 (the
R1 protocol: k = 4 samples at temperature 0.6, top-p 0.95) every ``--eval-every`` steps.

Writes to ``--out`` (default ``benchmarks/algorithms``): ``results.jsonl`` (one line per run: variant, seed,
wall time, every step's metrics; a rerun skips the runs already there, so a killed bench continues),
``curves.png`` (held-out pass@1, entropy, completion length and clip fraction vs step; mean over seeds with a
95% t-interval band) and ``report.md`` (final pass@1 mean ± 95% CI, difference to GRPO, wall time, the
command). Timings are only comparable on a quiet machine: check the load average printed per run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Every run: 4 minibatches per step (R1 uses 16), so the updates after the first are off-policy.
SHARED = ["algorithm.num_minibatches=4", "log.progress=false", "train.save_every=0"]


@dataclass(frozen=True)
class Variant:
    overrides: tuple[str, ...]
    note: str


VARIANTS: dict[str, Variant] = {
    "grpo": Variant(
        (), "GRPO as the demo runs it: group-normalised advantage, PPO clip 0.2, seq-mean-token-mean"
    ),
    "dr_grpo": Variant(
        ("algorithm.advantage=dr_grpo", "algorithm.loss_agg=seq_mean_token_sum_norm"),
        "Dr. GRPO: no std division, constant normaliser",
    ),
    "dapo": Variant(
        (
            "algorithm.loss_agg=token_mean",
            "algorithm.clip_high=0.28",
            "algorithm.dynamic_sampling=true",
            "algorithm.mask_truncated=true",
            "algorithm.beta=0.0",
        ),
        "DAPO: token-mean, clip-higher 0.28, dynamic sampling (more generation), overlong mask, no KL",
    ),  # fmt: skip
    "gspo": Variant(
        ("algorithm.ratio_level=sequence", "algorithm.clip_low=0.0003", "algorithm.clip_high=0.0004"),
        "GSPO: sequence ratio, clip 3e-4 / 4e-4",
    ),
    "cispo": Variant(
        (
            "algorithm.loss=cispo",
            "algorithm.loss_agg=token_mean",
            "algorithm.clip_low=1.0",
            "algorithm.clip_high=4.0",
        ),
        "CISPO: clipped IS weight (cap 5, no lower bound, ScaleRL), token-mean",
    ),
    "gmpo": Variant(
        ("algorithm.loss=gmpo", "algorithm.clip_low=0.4", "algorithm.clip_high=0.4"),
        "GMPO: geometric-mean ratio, log-space clip (e^-0.4, e^0.4)",
    ),
    "sapo": Variant(("algorithm.loss=sapo",), "SAPO: soft gate, tau 1.0 / 1.05"),
    "rloo": Variant(("algorithm.advantage=rloo",), "RLOO leave-one-out baseline"),
    "reinforce_pp": Variant(("algorithm.advantage=reinforce_pp",), "REINFORCE++ with a group baseline"),
    "ppo": Variant(
        ("algorithm.advantage=gae", "critic.model=head", "critic.lr=1e-3", "critic.vf_coef=0.1"),
        "PPO: a value head on the policy (lr 1e-3, vf_coef 0.1), GAE gamma = lam = 1, value clip 0.5",
    ),
    "clip_cov": Variant(
        ("algorithm.loss=clip_cov", "algorithm.loss_agg=token_mean"), "Clip-Cov (entropy control)"
    ),
    "kl_cov": Variant(("algorithm.loss=kl_cov", "algorithm.loss_agg=token_mean"), "KL-Cov (entropy control)"),
}
DEFAULT = "grpo,dr_grpo,dapo,gspo,cispo,gmpo,sapo,rloo,reinforce_pp,ppo"

CURVES = [
    ("eval/pass@1", "held-out pass@1"),
    ("train/entropy", "token entropy (nats)"),
    ("completion/len_mean", "completion length (tokens)"),
    ("train/clip_fraction", "clip fraction"),
]

# two-sided 95% Student t quantiles by degrees of freedom (scipy is not a dependency)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, _T975.get(n - 1, 1.96) * sd / math.sqrt(n)


def overrides_for(name: str, seed: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    return [
        *SHARED, *VARIANTS[name].overrides, f"train.seed={seed}", f"train.steps={args.steps}",
        f"eval.every_steps={args.eval_every}", f"eval.max_problems={args.eval_problems}",
        f"train.output_dir={run_dir}", f"train.num_threads={args.threads}",
    ]  # fmt: skip


def check_variant(name: str, args: argparse.Namespace) -> str | None:
    """None when the current config accepts the variant, else the reason it cannot run yet."""
    from thinkrl.config import load_config
    from thinkrl.demo.run import DEMO_CONFIG
    from thinkrl.train.checks import check_config

    try:
        check_config(load_config(DEMO_CONFIG, overrides_for(name, 0, args, Path("unused"))))
    except ValueError as e:  # ConfigError: a setting this version of thinkrl does not accept
        return str(e).splitlines()[0]
    return None


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict:
    """One training run; returns its record (variant, seed, wall time, the metrics of every logged step)."""
    import torch

    from thinkrl.config import load_config
    from thinkrl.core import DEMO_BASE_PATH, load_model_and_tokenizer
    from thinkrl.data.addition import split_rows
    from thinkrl.demo.run import DEMO_CONFIG
    from thinkrl.train import GRPOTrainer

    run_dir = args.out / "runs" / f"{name}-seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a half-finished run from a killed bench starts over
    cfg = load_config(DEMO_CONFIG, overrides_for(name, seed, args, run_dir))
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(str(DEMO_BASE_PATH), dtype=cfg.model.dtype)
    train_rows, held_rows = split_rows(seed=0)  # the demo's fixed split: every run sees the same problems
    eval_rows = [{**r, "id": f"heldout-{i}"} for i, r in enumerate(held_rows[: args.eval_problems])]
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, train_rows=train_rows, eval_rows=eval_rows)
    trainer.train()
    seconds = time.perf_counter() - start
    steps = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln]
    return {"variant": name, "seed": seed, "seconds": round(seconds, 2), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "config": list(VARIANTS[name].overrides),
            "steps": steps}  # fmt: skip


def curve(records: list[dict], key: str) -> tuple[list[int], list[float], list[float]]:
    """Steps where every seed logged ``key``, the mean over seeds and the CI half-width."""
    by_step: dict[int, list[float]] = {}
    for rec in records:
        for s in rec["steps"]:
            if isinstance(s.get(key), (int, float)) and math.isfinite(s[key]):
                by_step.setdefault(s["step"], []).append(float(s[key]))
    xs = sorted(st for st, v in by_step.items() if len(v) == len(records))
    stats = [mean_ci(by_step[x]) for x in xs]
    return xs, [m for m, _ in stats], [h for _, h in stats]


def final_pass(rec: dict) -> float | None:
    evals = [s for s in rec["steps"] if isinstance(s.get("eval/pass@1"), (int, float))]
    return max(evals, key=lambda s: s["step"])["eval/pass@1"] if evals else None


def write_report(out: Path, results: list[dict], skipped: dict[str, str], command: str) -> Path:
    by_variant: dict[str, list[dict]] = {}
    for rec in results:
        by_variant.setdefault(rec["variant"], []).append(rec)
    names = [n for n in VARIANTS if n in by_variant]
    base = [p for p in map(final_pass, by_variant.get("grpo", [])) if p is not None]
    lines = [
        "# Policy-optimisation variants on the demo task", "",
        f"Command: `{command}`", "",
        "Final held-out pass@1 (k = 4 at temperature 0.6, top-p 0.95) after the same number of steps "
        "from the same base checkpoint; ± is the 95% t-interval over seeds (the spread of whole runs). "
        "Δ vs GRPO compares means; overlapping intervals mean no measured difference. Wall time is per run, "
        "on this machine, with the load average before each run in results.jsonl.", "",
        "| variant | seeds | final pass@1 | Δ vs GRPO | wall time (s) | what it is |",
        "| --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for n in names:
        finals = [p for p in map(final_pass, by_variant[n]) if p is not None]
        m, h = mean_ci(finals) if finals else (float("nan"), 0.0)
        delta = f"{m - sum(base) / len(base):+.3f}" if base and finals else "—"
        t, th = mean_ci([r["seconds"] for r in by_variant[n]])
        lines.append(
            f"| {n} | {len(by_variant[n])} | {m:.3f} ± {h:.3f} | {delta} | {t:.0f} ± {th:.0f} "
            f"| {VARIANTS[n].note} |"
        )
    for n, why in skipped.items():
        lines.append(f"| {n} | 0 | not run | — | — | {VARIANTS[n].note}; skipped: {why} |")
    lines += ["", "![curves](curves.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    plot(out / "curves.png", by_variant, names)
    return path


def plot(path: Path, by_variant: dict[str, list[dict]], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, label) in zip(axes.flat, CURVES):
        for n in names:
            xs, mean, half = curve(by_variant[n], key)
            if not xs:
                continue
            (line,) = ax.plot(xs, mean, marker="o" if len(xs) < 15 else None, ms=3, label=n)
            ax.fill_between(xs, [m - h for m, h in zip(mean, half)], [m + h for m, h in zip(mean, half)],
                            color=line.get_color(), alpha=0.15)  # fmt: skip
        ax.set(xlabel="step", ylabel=label)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.suptitle("variants on the demo task: mean over seeds, 95% t-interval bands")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_results(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln] if path.exists() else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=DEFAULT, help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated train.seed values (3+ for intervals)")
    # the budget: with 4 optimizer steps a step, the demo's held-out pass@1 is near its ceiling after ~8 steps;
    # 30 runs of 8 steps and 5 evaluations fit in an hour on the 2-core machine (docs/algorithms.md)
    p.add_argument("--steps", type=int, default=8, help="RL steps per run")
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--eval-problems", type=int, default=50, help="held-out problems per evaluation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "algorithms")
    p.add_argument("--report-only", action="store_true", help="only redraw the report from results.jsonl")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    command = "python benchmarks/algorithms.py " + " ".join(argv if argv is not None else sys.argv[1:])

    skipped = {n: why for n in names if (why := check_variant(n, args)) is not None}
    for n, why in skipped.items():
        print(f"[algorithms] skipping {n}: {why}", flush=True)
    if not args.report_only:
        for name in (n for n in names if n not in skipped):
            for seed in seeds:
                done = {(r["variant"], r["seed"]) for r in load_results(results_path)}
                if (name, seed) in done:
                    continue
                print(f"[algorithms] {name} seed {seed} (load average {os.getloadavg()[0]:.2f})", flush=True)
                rec = run_one(name, seed, args)
                with results_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                final = final_pass(rec)
                print(
                    f"[algorithms] {name} seed {seed}: final pass@1 {final}, {rec['seconds']:.0f} s",
                    flush=True,
                )
    results = [r for r in load_results(results_path) if r["variant"] in names and r["seed"] in seeds]
    if not results:
        print("[algorithms] no results to report")
        return 1
    report = write_report(args.out, results, skipped, command)
    print(f"[algorithms] report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
