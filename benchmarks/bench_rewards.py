"""Reward throughput: math-verify checks per second and sandbox runs per second.

    .venv/bin/python benchmarks/bench_rewards.py [--n 200]

Math: MATH-500 gold solutions graded against their answers (helper path; a solution is long text), and
plain-integer pairs (in-process fast path). Sandbox: a tiny stdin/stdout program, one run per test case.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from thinkrl.rewards.math import math_verify_stats, verify_math_batch
from thinkrl.rewards.sandbox import isolation, run_python

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="checks/runs per measurement")
    args = ap.parse_args()

    verify_math_batch(["\\frac{1}{2}"], ["0.5"])  # start the helper outside the timing
    path = DATA / "math500" / "test.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines()][: args.n]
        preds, golds = [r["solution"] for r in rows], [r["answer"] for r in rows]
    else:
        preds = ["\\frac{" + str(i) + "}{7}" for i in range(args.n)]
        golds = [f"{i}/7" for i in range(args.n)]
    t = time.perf_counter()
    ok = verify_math_batch(preds, golds)
    dt = time.perf_counter() - t
    print(f"math-verify (helper process): {len(preds) / dt:8.1f} checks/s  ({sum(ok)}/{len(ok)} correct)")
    n = args.n * 20
    t = time.perf_counter()
    verify_math_batch([str(i) for i in range(n)], [str(i) for i in range(n)])
    dt = time.perf_counter() - t
    print(f"plain integers (fast path):   {n / dt:8.0f} checks/s")
    print(f"math stats: {math_verify_stats()}")

    iso = isolation()
    runs = max(5, args.n // 10)
    t = time.perf_counter()
    for i in range(runs):
        r = run_python("print(int(input()) * 2)", stdin=f"{i}\n")
        assert r.stdout.strip() == str(2 * i), r
    dt = time.perf_counter() - t
    layers = ",".join(k for k in ("netns", "pidns", "mountns", "uid") if iso[k]) or "rlimits only"
    print(f"sandbox runs:                 {runs / dt:8.1f} runs/s  (layers: {layers})")


if __name__ == "__main__":
    main()
