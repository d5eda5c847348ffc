"""Synchronous vs asynchronous GRPO (``rollout.max_staleness``) vs TRL's GRPOTrainer on the demo task, each arm
on the same 2 cores: samples/s, wall-clock to a held-out reward, reward-per-sample curves, the overlap bound.

    .venv/bin/python benchmarks/bench_async.py                          # every arm, 30 steps: ~30 min quiet
    .venv/bin/python benchmarks/bench_async.py --arms sync2,async1 --steps 2 --eval-every 2 --eval-problems 4
                                                                        # smoke test (~2 min)

Arms, one after the other, each in its own process(es), 2 cores' worth of threads in every arm:

  sync1    thinkrl synchronous, 1 torch thread: the thread-scaling and single-thread stage-time reference
  sync2    thinkrl synchronous, 2 threads (``train.num_threads=2``): generate, then train
  async1   ``rollout.max_staleness=1``: learner 1 thread + generator process 1 thread, ``algorithm.tis_cap=2``
  async2   ``rollout.max_staleness=2``: the same
  trl      TRL 1.16's GRPOTrainer, 2 threads, from ``.venv-trl`` (``bash benchmarks/setup_trl.sh``)

The work is the demo's (``thinkrl/demo/demo.yaml``): the shipped ~1M-parameter Llama (``demo-base``), the
``builtin:demo`` addition problems with the R1-Zero template, accuracy + format rewards, 16 prompts x G=8
completions of at most 140 tokens per step (stopped at ``</answer>``), lr 1e-4 with 5 warm-up steps, beta 0.001
(k3), clip 0.2, seq-mean-token-mean loss, one update per batch. TRL gets the same prompt tokens, rewards, stop
string and hyper-parameters (``run_trl``).

Measured per arm (the learner's clock from its first step, minus the time spent copying snapshots):
  samples/s       completions per second over the steps after ``--warmup`` (steady state), and overall
  stages          medians of ``time/generate``, ``time/reward``, ``time/ref_logp``, ``time/train``, ``time/wait``
                  (async: generate/reward are the generator's, overlapping the learner; wait is the learner's)
  weight sync     async: ``async/weight_sync_s`` (learner's copy in), ``async/generator_load_s`` (copy out)
  held-out reward the policy every ``--eval-every`` steps is copied (outside the clock) and evaluated afterwards
                  on ``--eval-problems`` held-out problems with the demo's protocol (k=4, T=0.6, top-p 0.95, one
                  seed for every snapshot): mean reward = pass@1 + format rate (0..2). Curves vs samples and
                  vs wall-clock; the wall-clock at the first snapshot at or above ``--target``.

The overlap bound. On 2 cores the async arms run the two stages side by side on one core each, so their step
cannot beat max(G1, L1), the single-thread generation (+ reward) and learner times (sync1's stages), while
sync2 takes G2 + L2 with both threads on each stage in turn. bound = (G2 + L2) / max(G1, L1) is the most
async1 can gain over sync2 here; the report states it and async1's share of it (the issue's targets: >= 1.6x,
or >= 90% of the bound where the bound is lower).

Results and the machine's state: benchmarks/RESULTS.md ("Asynchronous RL"). Timing needs a quiet machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
THINKRL_PY = Path(os.environ.get("THINKRL_PYTHON", ROOT / ".venv" / "bin" / "python"))
TRL_PY = Path(os.environ.get("TRL_PYTHON", ROOT / ".venv-trl" / "bin" / "python"))
MARK = "BENCH_RESULT "
ARMS = {  # name -> (framework, threads per process, thinkrl overrides)
    "sync1": ("thinkrl", 1, []),
    "sync2": ("thinkrl", 2, []),
    "async1": ("thinkrl", 1, ["rollout.max_staleness=1", "algorithm.tis_cap=2.0"]),
    "async2": ("thinkrl", 1, ["rollout.max_staleness=2", "algorithm.tis_cap=2.0"]),
    "trl": ("trl", 2, []),
}
STAGES = ("generate", "reward", "ref_logp", "old_logp", "train", "wait", "step")


# ------------------------------------------------------------------------------------------ thinkrl workers
def demo_cfg(args: argparse.Namespace, threads: int, overrides: list[str]) -> Any:
    from thinkrl.config import load_config
    from thinkrl.demo.run import DEMO_CONFIG

    return load_config(DEMO_CONFIG, [
        f"train.output_dir={args.out_dir}", f"train.steps={args.steps}", "eval.every_steps=0",
        "log.progress=false", "log.completions_every=0", f"train.num_threads={threads}",
        f"asynchronous.generator_threads={threads}", *overrides,
    ])  # fmt: skip


def snapshot(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Clock:
    """The learner's wall-clock from its first step, minus the time spent on the benchmark's own copies."""

    def __init__(self) -> None:
        self.start, self.excluded = time.perf_counter(), 0.0

    def now(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def exclude(self, began: float) -> None:
        self.excluded += time.perf_counter() - began


def run_thinkrl(args: argparse.Namespace) -> dict:
    """One thinkrl arm: ``train_step()`` after ``train_step()``, timed, with snapshots of the policy."""
    import torch

    from thinkrl.core import DEMO_BASE_PATH, load_model_and_tokenizer
    from thinkrl.data.addition import split_rows
    from thinkrl.train import GRPOTrainer

    _, threads, overrides = ARMS[args.worker]
    torch.set_num_threads(threads)
    cfg = demo_cfg(args, threads, overrides)
    model, tokenizer = load_model_and_tokenizer(DEMO_BASE_PATH, dtype=cfg.model.dtype)
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tokenizer, train_rows=split_rows(seed=0)[0])
    snapshots = {0: snapshot(trainer.model)}
    steps: list[dict] = []
    clock = Clock()
    for s in range(1, args.steps + 1):
        m = trainer.train_step()
        rec = {"step": s, "t": clock.now(), "samples": m["completions"], "reward": m["reward/mean"]}
        rec.update({f"time/{k}": m[f"time/{k}"] for k in STAGES if f"time/{k}" in m})
        rec.update({k: v for k, v in m.items() if k.startswith(("async/", "train/is_", "train/logprob"))})
        steps.append(rec)
        if s % args.eval_every == 0 or s == args.steps:
            began = time.perf_counter()
            snapshots[s] = snapshot(trainer.model)
            clock.exclude(began)
    torch.save(snapshots, args.out_dir / "snapshots.pt")
    return {"steps": steps, "threads": threads}


# ---------------------------------------------------------------------------------------------- TRL worker
def run_trl(args: argparse.Namespace) -> dict:
    """TRL's GRPOTrainer on the demo's work (module docstring), timed by a callback, with snapshots."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    threads = ARMS["trl"][1]
    torch.set_num_threads(threads)
    work = json.loads((args.out_dir.parent / "trl_work.json").read_text())  # written by the driver
    model = AutoModelForCausalLM.from_pretrained(work["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(work["model"])
    n = work["prompts_per_step"] * work["group_size"]
    config = GRPOConfig(
        output_dir=str(args.out_dir), use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        max_steps=args.steps, per_device_train_batch_size=work["micro_batch"],
        gradient_accumulation_steps=n // work["micro_batch"], generation_batch_size=n,
        num_generations=work["group_size"], max_completion_length=work["max_new_tokens"],
        temperature=1.0, top_p=1.0, top_k=0, num_iterations=1, beta=work["beta"], epsilon=0.2,
        loss_type="grpo", scale_rewards="group", learning_rate=work["lr"],
        lr_scheduler_type="constant_with_warmup", warmup_steps=work["warmup_steps"], weight_decay=0.0,
        adam_beta1=0.9, adam_beta2=0.999, max_grad_norm=1.0, optim="adamw_torch", logging_steps=1,
        report_to="none", save_strategy="no", disable_tqdm=True, log_completions=False, use_vllm=False,
        dataloader_num_workers=0, seed=0, shuffle_dataset=False,
        # thinkrl stops at </answer>; TRL's generate does too once the tokenizer is passed (below), and pads a
        # stopped completion with EOS, after which TRL masks: one EOS token more than thinkrl trains on
        generation_kwargs={"stop_strings": work["stop_strings"], "pad_token_id": tokenizer.eos_token_id},
    )  # fmt: skip
    rows = work["rows"]
    dataset = Dataset.from_dict(
        {"prompt": [r["prompt"] for r in rows], "answer": [r["answer"] for r in rows]}
    )
    steps: list[dict] = []
    snapshots: dict[int, Any] = {}
    clock: list[Clock] = []

    class Timer(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            clock.append(Clock())
            snapshots[0] = snapshot(model)

        def on_step_end(self, a: Any, state: Any, *rest: Any, **k: Any) -> None:
            s = state.global_step
            steps.append({"step": s, "t": clock[0].now(), "samples": float(n)})
            if s % args.eval_every == 0 or s == args.steps:
                began = time.perf_counter()
                snapshots[s] = snapshot(model)
                clock[0].exclude(began)

    model.generate = functools.partial(model.generate, tokenizer=tokenizer)  # HF's stop strings need it
    trainer = GRPOTrainer(
        model=model, reward_funcs=trl_rewards(), args=config, train_dataset=dataset,
        processing_class=tokenizer, callbacks=[Timer()],
    )  # fmt: skip
    torch.set_num_threads(threads)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    for rec, r in zip(steps, rewards):
        rec["reward"] = r
    torch.save(snapshots, args.out_dir / "snapshots.pt")
    return {"steps": steps, "threads": torch.get_num_threads(), "trl_version": trl.__version__}


def trl_rewards() -> list[Any]:
    """thinkrl's accuracy and format rewards as TRL reward functions (TRL passes ``prompts``, ``completions``
    and the dataset's ``answer`` column by name, as thinkrl does). Defined here: .venv-trl has no thinkrl."""
    sys.path.insert(0, str(ROOT))
    from thinkrl.rewards.accuracy import accuracy_reward
    from thinkrl.rewards.format import format_reward

    return [accuracy_reward, format_reward]


# --------------------------------------------------------------------------------------------- the driver
def trl_work(tmp: Path, steps: int) -> None:
    """What TRL needs to do the demo's work, as plain JSON (its venv imports no thinkrl): the base model
    folder, the rendered prompts in thinkrl's draw order, and the settings."""
    from thinkrl.core import DEMO_BASE_PATH, load_model_and_tokenizer, prompt_token_ids
    from thinkrl.core.models import resolve_model_path
    from thinkrl.data.addition import split_rows
    from thinkrl.rollout import Prompts, SingleTurn

    cfg = demo_cfg(argparse.Namespace(out_dir=tmp, steps=steps), 2, [])
    _, tokenizer = load_model_and_tokenizer(DEMO_BASE_PATH)
    r, a, t = cfg.rollout, cfg.algorithm, cfg.train
    prompts = Prompts(split_rows(seed=0)[0], SingleTurn(tokenizer, cfg.data.template), tokenizer, seed=t.seed)
    order = [i for _ in range(steps) for i in prompts.next(r.prompts_per_step)]
    texts = [prompts.texts[i] for i in order]
    if prompt_token_ids(tokenizer, texts, cfg.data.template) != tokenizer(texts)["input_ids"]:
        raise RuntimeError("TRL would tokenize the prompts differently from thinkrl (special tokens)")
    (tmp / "trl_work.json").write_text(json.dumps({
        "model": resolve_model_path(DEMO_BASE_PATH), "prompts_per_step": r.prompts_per_step,
        "group_size": r.group_size, "max_new_tokens": r.max_new_tokens, "stop_strings": list(r.stop_strings),
        "beta": a.beta, "lr": t.lr, "warmup_steps": t.warmup_steps, "micro_batch": t.micro_batch_size,
        "rows": [{"prompt": x, "answer": prompts.rows[i]["answer"]} for x, i in zip(texts, order)],
    }))  # fmt: skip


def launch(arm: str, args: argparse.Namespace, tmp: Path) -> dict:
    framework, threads, _ = ARMS[arm]
    python = TRL_PY if framework == "trl" else THINKRL_PY
    out_dir = tmp / arm
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", arm, "--out-dir", str(out_dir),
           "--steps", str(args.steps), "--eval-every", str(args.eval_every)]  # fmt: skip
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}  # fmt: skip
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"arm": arm, "error": f"timed out after {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            out = json.loads(line[len(MARK) :])
            out.update(arm=arm, load_before=load, load_after=os.getloadavg()[0], snapshots=str(out_dir))
            return out
    return {"arm": arm, "error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-3000:]}"}


def summarize(r: dict, warmup: int) -> dict:
    """samples/s (steady state after ``warmup`` steps, and overall) and the stage medians of one arm."""
    steps = r["steps"]
    t = [s["t"] for s in steps]
    samples = [s["samples"] for s in steps]
    w = min(warmup, len(steps) - 1)
    steady = sum(samples[w + 1 :]) / (t[-1] - t[w]) if len(steps) > w + 1 else float("nan")
    out = {"samples_per_s": steady, "samples_per_s_all": sum(samples) / t[-1], "wall_s": t[-1]}
    later = steps[w + 1 :] or steps
    for k in STAGES:
        if f"time/{k}" in later[0]:
            out[f"{k}_s"] = statistics.median(s[f"time/{k}"] for s in later)
    for k in ("async/weight_sync_s", "async/generator_load_s", "async/staleness_mean"):
        if k in later[0]:
            out[k] = statistics.median(s[k] for s in later)
    return out


def evaluate_snapshots(results: list[dict], args: argparse.Namespace) -> None:
    """Held-out reward (pass@1 + format rate) of every arm's snapshots, one seeded protocol for all."""
    import dataclasses

    import torch

    from thinkrl.core import DEMO_BASE_PATH, load_model_and_tokenizer
    from thinkrl.data.addition import split_rows
    from thinkrl.eval import evaluate
    from thinkrl.eval.periodic import eval_sampling

    torch.set_num_threads(2)
    cfg = demo_cfg(argparse.Namespace(out_dir=Path(tempfile.gettempdir()), steps=1), 2, [])
    sampling = dataclasses.replace(eval_sampling(cfg), seed=0)
    rows = [{**r, "id": f"heldout-{i}"} for i, r in enumerate(split_rows(seed=0)[1][: args.eval_problems])]
    model, tokenizer = load_model_and_tokenizer(DEMO_BASE_PATH)
    cache: dict[int, dict] = {}
    for r in results:
        if "error" in r:
            continue
        curve = {}
        for step, state in sorted(torch.load(Path(r["snapshots"]) / "snapshots.pt").items()):
            if step == 0 and 0 in cache:  # every arm starts from the same weights
                curve[0] = cache[0]
                continue
            model.load_state_dict(state)
            m = evaluate(model, tokenizer, rows, sampling, progress=False).metrics
            curve[step] = {"pass@1": m["pass@1"], "format_rate": m["format_rate"],
                           "reward": m["pass@1"] + m["format_rate"]}  # fmt: skip
            if step == 0:
                cache[0] = curve[0]
        r["heldout"] = curve


def time_to(r: dict, target: float) -> tuple[float | None, int | None]:
    """(wall-clock s, step) of the first snapshot with held-out reward >= ``target``."""
    t = {s["step"]: s["t"] for s in r.get("steps", [])}
    t[0] = 0.0
    for step, m in sorted(r.get("heldout", {}).items()):
        if m["reward"] >= target:
            return t[step], step
    return None, None


def report(results: list[dict], args: argparse.Namespace) -> str:
    """The markdown tables of RESULTS.md's section."""
    ok = {r["arm"]: r for r in results if "error" not in r}
    lines = ["| arm | samples/s (steady) | samples/s (all) | wall s | generate / reward / ref / train / wait s "
             f"| weight sync / load ms | held-out reward >= {args.target}: s (step) | load |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, r in ok.items():
        s = r["summary"]
        stages = " / ".join(f"{s.get(f'{k}_s', float('nan')):.2f}" for k in ("generate", "reward", "ref_logp",
                                                                                  "train", "wait"))  # fmt: skip
        sync = (f"{1e3 * s['async/weight_sync_s']:.1f} / {1e3 * s['async/generator_load_s']:.1f}"
                if "async/weight_sync_s" in s else "")  # fmt: skip
        t, step = time_to(r, args.target)
        reached = f"{t:.0f} ({step})" if t is not None else "not reached"
        lines.append(f"| {arm} | {s['samples_per_s']:.2f} | {s['samples_per_s_all']:.2f} | {s['wall_s']:.0f} | "
                     f"{stages} | {sync} | {reached} | {r['load_before']:.2f} |")  # fmt: skip
    if {"sync1", "sync2"} <= ok.keys():
        s1, s2 = ok["sync1"]["summary"], ok["sync2"]["summary"]
        g1, g2 = s1["generate_s"] + s1.get("reward_s", 0), s2["generate_s"] + s2.get("reward_s", 0)
        l1, l2 = s1["step_s"] - g1, s2["step_s"] - g2
        bound = (g2 + l2) / max(g1, l1)
        lines += ["", f"Thread scaling: sync2 / sync1 samples/s = {s2['samples_per_s'] / s1['samples_per_s']:.2f}. "
                  f"Stages, 1 thread: generate+reward {g1:.2f} s, learner {l1:.2f} s; 2 threads: {g2:.2f} s, "
                  f"{l2:.2f} s. Overlap bound on 2 cores (G2 + L2) / max(G1, L1) = **{bound:.2f}x** sync2."]  # fmt: skip
        for arm in ("async1", "async2"):
            if arm in ok:
                gain = ok[arm]["summary"]["samples_per_s"] / s2["samples_per_s"]
                lines.append(f"- {arm}: **{gain:.2f}x** sync2's samples/s = {gain / bound:.0%} of the bound")
    if "trl" in ok:
        t_trl, _ = time_to(ok["trl"], args.target)
        for arm in ("sync2", "async1", "async2"):
            t, _ = time_to(ok.get(arm, {}), args.target)
            if t is not None and t_trl is not None:
                lines.append(f"- wall-clock to held-out reward {args.target}: {arm} / TRL = {t / t_trl:.2f}")
    steps = sorted({s for r in ok.values() for s in r.get("heldout", {})})
    if steps:
        lines += ["", "Held-out reward (pass@1 + format, 0..2) by step; samples = step x "
                  f"{int(next(iter(ok.values()))['steps'][0]['samples'])}:", "",
                  "| step | " + " | ".join(ok) + " |", "|---|" + "---|" * len(ok)]  # fmt: skip
        for st in steps:
            cells = [
                f"{r['heldout'][st]['reward']:.3f}" if st in r.get("heldout", {}) else "" for r in ok.values()
            ]
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
    for r in results:
        if "error" in r:
            lines.append(f"\n{r['arm']}: ERROR {r['error'][-500:]}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", default="sync1,sync2,async1,async2,trl", help=f"subset of {','.join(ARMS)}")
    p.add_argument("--steps", type=int, default=30, help="steps per arm (the demo's 30)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the steady-state samples/s")
    p.add_argument("--eval-every", type=int, default=2, help="snapshot the policy every N steps")
    p.add_argument(
        "--eval-problems", type=int, default=50, help="held-out problems per snapshot (x4 samples)"
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="held-out reward for the wall-clock comparison (default 1.7)",
    )
    p.add_argument("--timeout", type=int, default=3600, help="seconds per arm")
    p.add_argument("--json-out", type=Path, default=None, help="write every measurement here")
    p.add_argument("--report", type=Path, default=None, help="only print the tables of a saved --json-out")
    p.add_argument("--worker", choices=sorted(ARMS), help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:  # the tables again, from a saved --json-out
        saved = json.loads(args.report.read_text())
        args.target = args.target if args.target is not None else saved["args"]["target"]
        print(report(saved["results"], args))
        return 0
    if args.worker:
        out = run_trl(args) if ARMS[args.worker][0] == "trl" else run_thinkrl(args)
        print(MARK + json.dumps(out), flush=True)
        return 0
    args.target = 1.7 if args.target is None else args.target
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"unknown arm(s) {unknown}; valid: {', '.join(ARMS)}")
        return 2
    if "trl" in arms and not TRL_PY.exists():
        print("note: .venv-trl is missing (run `bash benchmarks/setup_trl.sh`); TRL is skipped", flush=True)
        arms.remove("trl")
    print(
        f"nproc {os.cpu_count()}, load average {os.getloadavg()}, arms {arms}, {args.steps} steps", flush=True
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="thinkrl-async-") as name:
        tmp = Path(name)
        if "trl" in arms:
            trl_work(tmp, args.steps)
        for arm in arms:
            began = time.perf_counter()
            r = launch(arm, args, tmp)
            if "error" not in r:
                r["summary"] = summarize(r, args.warmup)
            results.append(r)
            text = r.get("error") or json.dumps({k: round(v, 3) for k, v in r["summary"].items()})
            print(f"  {arm:7s} {time.perf_counter() - began:6.0f} s  {text}", flush=True)
        began = time.perf_counter()
        evaluate_snapshots(results, args)
        print(f"  held-out evaluation {time.perf_counter() - began:.0f} s", flush=True)
    for r in results:
        r.pop("snapshots", None)
    if args.json_out:  # before the report: a table that fails to render loses no measurement
        args.json_out.write_text(json.dumps({"results": results, "args": vars(args)}, default=str))
    print(report(results, args))
    print(f"load average now {os.getloadavg()}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
