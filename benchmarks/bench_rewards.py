"""Reward grading: the time bounds of issue 13, and throughput.

    .venv/bin/python benchmarks/bench_rewards.py [--n 512] [--hang 0.05] [--limit 5] [--workers 2]

1. Hung verifier checks: ``--n`` completions graded by the ``accuracy`` reward (answers that need
   math-verify: MATH-500 answers when ../shared/data is there, else fractions), once clean, once with a
   fraction ``--hang`` of them replaced by answers that hang sympy (expansion, integral, power tower).
   Target: hung batch time <= clean batch time + one limit (``grading.math_timeout_s``).
2. Tag spam: 480,000 characters of each spam pattern, after the think block and inside it, through every
   text reward (format, tag_count, accuracy, language_consistency, code extraction). Target: each < 1 s
   (the mean of the two placements is printed).
3. Throughput: math-verify checks/s (helper workers), plain-integer fast path, sandbox runs/s.

Take numbers on a quiet machine: every part is CPU-bound.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from thinkrl.config import GradingConfig
from thinkrl.rewards import build_reward, get_reward, isolation
from thinkrl.rewards.math_grader import math_verify_stats, verify_math_batch, warm_up
from thinkrl.rewards.sandbox import run_python

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HANGS = ["(x+1)^{2000}", "\\int_0^1 x^{1000}\\sin(x) dx", "9^{9^{9}}"]
SPAM = ["<answer>", "</answer>", "<think>", "```", "\\boxed{", "\\(", "$", "####", "<answer>14"]


def answers(n: int) -> tuple[list[str], list[str]]:
    path = DATA / "math500" / "test.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        golds = [r["answer"] for r in rows]
    else:
        golds = [f"\\frac{{{i}}}{{7}}" for i in range(1, 501)]
    golds = [golds[i % len(golds)] for i in range(n)]
    rng = random.Random(0)
    preds = [g if rng.random() < 0.5 else golds[rng.randrange(len(golds))] for g in golds]  # half right
    return [f"<think>work</think> <answer>{p}</answer>" for p in preds], golds


def bench_hangs(n: int, frac: float, limit: float, workers: int) -> None:
    grading = GradingConfig(math_timeout_s=limit, workers=workers)
    acc = build_reward("accuracy", None, grading)
    comps, golds = answers(n)
    warm_up(workers)
    acc(["q"], comps[:8], answer=golds[:8])  # workers forked and warm
    before = math_verify_stats()["timeouts"]
    t = time.perf_counter()
    clean = acc(["q"] * n, comps, answer=golds)
    t_clean = time.perf_counter() - t
    clean_timeouts = math_verify_stats()["timeouts"] - before
    rng = random.Random(1)
    bad = rng.sample(range(n), int(round(frac * n)))
    hung = list(comps)
    for k, i in enumerate(bad):
        hung[i] = f"<think>work</think> <answer>{HANGS[k % len(HANGS)]}</answer>"
    before = math_verify_stats()
    t = time.perf_counter()
    scores = acc(["q"] * n, hung, answer=golds)
    t_hung = time.perf_counter() - t
    timeouts = math_verify_stats()["timeouts"] - before["timeouts"]
    errors = math_verify_stats()["errors"] - before["errors"]
    changed = sum(scores[i] != clean[i] for i in range(n) if i not in set(bad))
    verdict = "MET" if t_hung <= t_clean + limit else "MISSED"
    print(f"hung checks: {n} completions, {len(bad)} hang, limit {limit:g} s, {workers} workers")
    print(
        f"  clean batch   {t_clean:7.2f} s  ({sum(s == 1.0 for s in clean)} correct, {clean_timeouts} timeouts)"
    )
    print(
        f"  with hangs    {t_hung:7.2f} s  ({timeouts} timeouts, {errors} errors; honest rows scored "
        f"differently: {changed})"
    )
    print(f"  target: hung <= clean + limit = {t_clean + limit:.2f} s: {verdict}")


def bench_spam() -> None:
    names = ["format", "tag_count", "accuracy", "language_consistency", "code"]
    cols = {"answer": ["14"], "tests": [["assert f(1) == 1"]], "language": ["en"]}
    worst = 0.0
    print("tag spam: 480,000 characters per completion, seconds per reward")
    print("  pattern        " + "".join(f"{n[:10]:>11}" for n in names))
    for name in names:  # first calls start what they need (the sandbox probe for code) outside the timing
        get_reward(name)(["q"], ["<think>.</think><answer>1</answer>"], **cols)
    for spam in SPAM:
        body = spam * (480_000 // len(spam))
        row = []
        for name in names:  # spam after the think block (answer parsing) and inside it (the chain of thought)
            t = time.perf_counter()
            get_reward(name)(["q"], ["<think>.</think>" + body], **cols)
            get_reward(name)(["q"], ["<think>" + body + "</think><answer>1</answer>"], **cols)
            row.append((time.perf_counter() - t) / 2)
        worst = max(worst, *row)
        print(f"  {spam[:12]!r:<15}" + "".join(f"{s:11.3f}" for s in row))
    print(f"  target: every one < 1 s: {'MET' if worst < 1.0 else 'MISSED'} (worst {worst:.3f} s)")


def bench_throughput(n: int) -> None:
    path = DATA / "math500" / "test.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines()][:n]
        preds, golds = [r["solution"] for r in rows], [r["answer"] for r in rows]
    else:
        preds = ["\\frac{" + str(i) + "}{7}" for i in range(n)]
        golds = [f"{i}/7" for i in range(n)]
    t = time.perf_counter()
    ok = verify_math_batch(preds, golds)
    dt = time.perf_counter() - t
    print(f"math-verify (workers):      {len(preds) / dt:8.1f} checks/s  ({sum(ok)}/{len(ok)} correct)")
    m = n * 20
    t = time.perf_counter()
    verify_math_batch([str(i) for i in range(m)], [str(i) for i in range(m)])
    print(f"plain integers (fast path): {m / (time.perf_counter() - t):8.0f} checks/s")
    iso = isolation()
    runs = max(5, n // 10)
    t = time.perf_counter()
    for i in range(runs):
        r = run_python("print(int(input()) * 2)", stdin=f"{i}\n")
        assert r.stdout.strip() == str(2 * i), r
    print(f"sandbox runs:               {runs / (time.perf_counter() - t):8.1f} runs/s  ({iso['summary']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="completions in the hung-check batch")
    ap.add_argument("--hang", type=float, default=0.05, help="fraction of them that hang the verifier")
    ap.add_argument("--limit", type=float, default=5.0, help="math-verify limit per check (seconds)")
    ap.add_argument("--workers", type=int, default=2, help="grading.workers")
    ap.add_argument("--skip", nargs="*", default=[], choices=["hangs", "spam", "throughput"])
    args = ap.parse_args()
    if "hangs" not in args.skip:
        bench_hangs(args.n, args.hang, args.limit, args.workers)
    if "spam" not in args.skip:
        bench_spam()
    if "throughput" not in args.skip:
        bench_throughput(min(args.n, 200))


if __name__ == "__main__":
    main()
