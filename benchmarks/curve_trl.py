"""Learning curves of thinkrl and TRL 1.16 on the same toy task, at the same settings, side by side.

    .venv/bin/python benchmarks/curve_trl.py                  # 25 steps, 4M model, 32-token completions
    .venv/bin/python benchmarks/curve_trl.py --steps 30 --lr 1e-3

Runs ``bench_trl.py`` (its set-up: one random tiny Qwen2 saved once and loaded by both, 8 prompts x G=8,
beta 0.04, token-mean loss, AdamW, fp32) with a learning rate large enough for a random model to move, and
records each step's mean reward: the fraction of vowels in the completion, which the policy can raise by
shifting probability mass to 10 of its 97 tokens (about 0.10 for a uniform policy). Writes
``benchmarks/curve_trl.csv`` and ``benchmarks/curve_trl.png`` (matplotlib, when installed).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--config", default="4M/32", help="MODEL/LENGTH, as bench_trl.py --configs")
    p.add_argument("--out", type=Path, default=HERE / "curve_trl")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out_json = Path(tmp) / "curve.json"
        cmd = [sys.executable, str(HERE / "bench_trl.py"), "--configs", args.config, "--steps", str(args.steps),
               "--warmup", "0", "--lr", str(args.lr), "--json-out", str(out_json)]  # fmt: skip
        code = subprocess.run(cmd).returncode
        results = json.loads(out_json.read_text())["results"] if out_json.exists() else []
    curves = {r["framework"]: r["rewards"] for r in results if "rewards" in r}
    if not curves:
        print("no curve recorded (see the errors above)")
        return 1
    names = sorted(curves)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", *names])
        for i in range(max(len(c) for c in curves.values())):
            w.writerow([i + 1, *[curves[n][i] if i < len(curves[n]) else "" for n in names]])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: CSV only")
    else:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for n in names:
            ax.plot(range(1, len(curves[n]) + 1), curves[n], marker="o", ms=3, label=n)
        ax.set(xlabel="step", ylabel="mean reward (vowel fraction)", title=f"{args.config}, lr {args.lr}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".png"), dpi=120)
    for n in names:
        c = curves[n]
        k = max(1, len(c) // 5)
        print(f"{n}: first {k} steps mean {sum(c[:k]) / k:.3f}, last {k} steps mean {sum(c[-k:]) / k:.3f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
