"""Run an evaluation: sample k completions per problem, grade them with the training rewards, write and score.

Files in ``out_dir``:

- ``samples.jsonl``: one line per completion (``id``, ``sample_idx``, ``completion``, ``extracted``,
  ``correct``, ``length``, ``finish_reason``, ``format_ok``, ``qhash``), appended after every batch of problems.
  A rerun reads it back and generates only what is missing, so an interrupted eval resumes where it stopped,
  and a rerun with other ``pass_ks`` / ``cons_k`` or a smaller ``k`` generates nothing.
- ``eval_config.json``: the sampling settings the samples were drawn with; a rerun with different ones stops
  with a message instead of mixing samples from two distributions.
- ``summary.json``: the metrics (see :func:`thinkrl.eval.metrics.summarize`).

Determinism: problems are cut into fixed batches of ``batch_size`` by position and batch b's call is seeded
with a hash of (seed, b, first sample index). The engine's random stream depends only on that seed and the
row position, so a resumed run draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkrl.eval.benchmarks import Grader, prepare_rows
from thinkrl.eval.metrics import flat_metrics, format_table, summarize

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "eval_config.json"


class EvalResumeError(RuntimeError):
    """``out_dir`` holds samples drawn with other settings or prompts; the message says how to proceed."""


@dataclass
class EvalResult:
    """What :func:`evaluate` returns."""

    summary: dict[str, Any]
    """Everything in summary.json: ``metrics``, ``by_level`` / ``by_subject``, ``per_problem``, settings."""
    samples: list[dict[str, Any]]
    """The per-sample records of the evaluated problems, in row order then sample index."""
    out_dir: Path | None
    """Where samples.jsonl and summary.json were written (None: nothing written)."""

    @property
    def metrics(self) -> dict[str, Any]:
        """The headline metrics (``pass@1``, ``pass@1_se``, ``pass@k``, ``cons@k``, lengths, rates)."""
        return self.summary["metrics"]

    def table(self) -> str:
        """The printable table of the summary."""
        return format_table(self.summary)


def evaluate(
    model_or_engine: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    k: int = 16,
    temperature: float = 0.6,
    top_p: float = 0.95,
    top_k: int = 0,
    max_new_tokens: int = 4096,
    template: str = "r1",
    system_prompt: str | None = None,
    stop_strings: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    grader: Grader | None = None,
    pass_ks: Sequence[int] | None = None,
    cons_k: int | None = None,
    batch_size: int = 8,
    regrade: bool = False,
    progress: bool = True,
    name: str | None = None,
) -> EvalResult:
    """Evaluate a model on ``rows`` (from :func:`thinkrl.eval.load_benchmark`) with the R1 protocol.

    Args:
        model_or_engine: a ``RolloutEngine`` (has ``generate(prompt_ids, SamplingParams)``), a ``transformers``
            causal LM (wrapped in ``HFEngine``), or a model path (loaded with its tokenizer).
        tokenizer: renders and tokenizes the prompts; None only with a model path.
        k: samples per problem; pass@1 is their mean correctness. ``temperature=0`` (greedy) uses 1 sample.
        temperature, top_p, top_k, max_new_tokens: sampling (R1: 0.6, 0.95, none, 32768).
        template: ``r1``, ``chat``, ``plain`` or a string with ``{question}``; ``system_prompt`` for ``chat``.
        stop_strings: default ``["</answer>"]`` for the r1 template (the answer is closed), else none.
        out_dir: where samples.jsonl / summary.json go; a rerun resumes from it. None keeps all in memory.
        seed: sampling seed; same seed, same numbers.
        grader: a :class:`Grader` (default ``Grader()``); anything with ``grade`` and ``equivalent`` works.
        pass_ks: k of pass@k (default powers of two up to k, and k); cons_k: votes in cons@k (default k).
        batch_size: problems per ``generate`` call, and the resume granularity.
        regrade: grade the stored completions again (after a grader change) instead of trusting ``correct``.
        progress: show a progress bar (problems done, samples/s, ETA).
        name: the benchmark name in the summary (default: the rows' ``benchmark``).

    Example (tests/test_eval_runner.py runs it with a fake engine)::

        rows = load_benchmark("math500", limit=20)
        result = evaluate("Qwen/Qwen2.5-Math-1.5B", None, rows, k=4, out_dir="runs/eval/qwen/math500")
        print(result.table())
    """
    if k < 1 or batch_size < 1:
        raise ValueError(f"k={k} and batch_size={batch_size} must be >= 1")
    if not rows:
        raise ValueError("no rows to evaluate; check --data and --limit")
    rows = prepare_rows(rows)
    from thinkrl.core import prompt_token_ids
    from thinkrl.data.templates import render_prompt
    from thinkrl.rollout.base import SamplingParams

    engine, tokenizer, model_name = _as_engine(model_or_engine, tokenizer, seed)
    grader = grader or Grader()
    n = 1 if temperature == 0 else k  # greedy samples are all the same completion
    stops = list(stop_strings) if stop_strings is not None else (["</answer>"] if template == "r1" else [])
    name = name or str(rows[0].get("benchmark", "eval"))
    settings = {
        "template": template,
        "system_prompt": system_prompt,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "stop_strings": stops,
        "seed": seed,
        "batch_size": batch_size,
    }
    prompts = [render_prompt(template, r["question"], tokenizer, system=system_prompt) for r in rows]
    prompt_ids = prompt_token_ids(tokenizer, prompts, template)
    qhash = [hashlib.sha1(p.encode()).hexdigest()[:12] for p in prompts]

    out = Path(out_dir) if out_dir is not None else None
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _check_settings(out, settings)
        done = _load_samples(out / SAMPLES_FILE)
        _check_prompts(done, rows, qhash, out)
        if regrade and done:
            _regrade(done, rows, grader, {r["id"]: p for r, p in zip(rows, prompts)})
            _write_samples(out / SAMPLES_FILE, done.values())

    bar = _progress(len(rows), sum(all((r["id"], i) in done for i in range(n)) for r in rows), name, progress)
    t0, generated = time.perf_counter(), 0
    for b, start in enumerate(range(0, len(rows), batch_size)):
        idx = list(range(start, min(start + batch_size, len(rows))))
        missing = [(i, s) for i in idx for s in range(n) if (rows[i]["id"], s) not in done]
        if not missing:
            continue
        first = min(s for _, s in missing)  # samples first..n-1 of every problem of the batch, one call
        params = SamplingParams(
            n=n - first,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            stop_strings=stops,
            seed=_batch_seed(seed, b, first),
        )
        roll = engine.generate([prompt_ids[i] for i in idx], params)
        lengths = roll.lengths.tolist()
        per = n - first
        owners = [idx[j // per] for j in range(len(roll.texts))]
        grades = _grade(grader, [rows[i] for i in owners], roll.texts, [prompts[i] for i in owners])
        new = []
        for j, (text, g) in enumerate(zip(roll.texts, grades)):
            i, s = owners[j], first + j % per
            if (rows[i]["id"], s) in done:
                continue
            rec = {"id": rows[i]["id"], "sample_idx": s, "completion": text, **g, "length": int(lengths[j])}
            rec.update(finish_reason=roll.finish_reasons[j], qhash=qhash[i])
            done[(rows[i]["id"], s)] = rec
            new.append(rec)
        if out is not None:
            _append_samples(out / SAMPLES_FILE, new)
        generated += len(new)
        bar.update(len({i for i, _ in missing}))
        bar.set_postfix(samples_per_s=f"{generated / max(time.perf_counter() - t0, 1e-9):.2f}")
    bar.close()

    samples = [done[(r["id"], s)] for r in rows for s in range(n)]
    summary = summarize(
        samples, rows, n=n, pass_ks=pass_ks, cons_k=cons_k, equivalent=grader.equivalent, seed=seed
    )
    summary = {
        "benchmark": name,
        "model": model_name,
        "samples_per_problem": n,
        "sampling": settings,
        "greedy": temperature == 0,
        **summary,
    }
    if out is not None:
        _write_json(out / SUMMARY_FILE, summary)
    return EvalResult(summary=summary, samples=samples, out_dir=out)


def _as_engine(model_or_engine: Any, tokenizer: Any, seed: int) -> tuple[Any, Any, str]:
    """(engine, tokenizer, a name for the summary) from an engine, a transformers model or a path."""
    if isinstance(model_or_engine, str | Path):
        from thinkrl.core import load_model_and_tokenizer

        model, tok = load_model_and_tokenizer(str(model_or_engine), device="auto")
        tokenizer = tokenizer or tok
        model_or_engine = model
    if tokenizer is None:
        raise ValueError("evaluate needs the tokenizer that renders and tokenizes the prompts")
    import torch

    if isinstance(model_or_engine, torch.nn.Module):
        from thinkrl.rollout.hf import HFEngine

        name = getattr(model_or_engine.config, "_name_or_path", "") or type(model_or_engine).__name__
        return HFEngine(model_or_engine, tokenizer, seed=seed), tokenizer, name
    if not hasattr(model_or_engine, "generate"):
        raise TypeError(f"{type(model_or_engine).__name__} is neither a RolloutEngine nor a torch model")
    return model_or_engine, tokenizer, type(model_or_engine).__name__


def _batch_seed(seed: int, batch: int, first_sample: int) -> int:
    """A call seed that depends only on (seed, batch position, first sample index)."""
    digest = hashlib.sha256(f"{seed}:{batch}:{first_sample}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def _progress(total: int, initial: int, name: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=name, unit="problem", disable=not enabled, dynamic_ncols=True
    )


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / CONFIG_FILE
    if path.exists():
        old = json.loads(path.read_text())
        diff = {key: (old.get(key), val) for key, val in settings.items() if old.get(key) != val}
        if diff and (out / SAMPLES_FILE).exists():
            changes = ", ".join(f"{key}: {a!r} -> {b!r}" for key, (a, b) in diff.items())
            raise EvalResumeError(
                f"{out} holds samples drawn with other settings ({changes}); use another --out, "
                f"or delete {out / SAMPLES_FILE} to start over"
            )
    _write_json(path, settings)


def _check_prompts(
    done: dict[tuple[str, int], dict[str, Any]], rows: Sequence[dict], qhash: list[str], out: Path
):
    want = {r["id"]: h for r, h in zip(rows, qhash)}
    for (pid, _), rec in done.items():
        if pid in want and rec.get("qhash") != want[pid]:
            raise EvalResumeError(
                f"{out / SAMPLES_FILE} has samples for problem {pid!r} with a different prompt (another benchmark "
                "or template?); use another --out for this data"
            )


def _load_samples(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Records keyed by (id, sample_idx); a half-written last line (an interrupted run) is cut off."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    done = {}
    for line in raw.decode().splitlines():
        if line.strip():
            rec = json.loads(line)
            done[(str(rec["id"]), int(rec["sample_idx"]))] = rec
    return done


def _append_samples(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _write_samples(path: Path, records: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.replace(path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _grade(grader: Any, rows: list[dict], completions: list[str], prompts: list[str]) -> list[dict[str, Any]]:
    """Call the grader with the rendered prompts when it accepts them (custom graders may take two args)."""
    if "prompts" in inspect.signature(grader.grade).parameters:
        return grader.grade(rows, completions, prompts=prompts)
    return grader.grade(rows, completions)


def _regrade(
    done: dict[tuple[str, int], dict[str, Any]], rows: Sequence[dict], grader: Any, prompt_of: dict
) -> None:
    by_id = {r["id"]: r for r in rows}
    keys = [key for key in done if key[0] in by_id]
    prompts = [prompt_of[key[0]] for key in keys]
    grades = _grade(
        grader, [by_id[key[0]] for key in keys], [done[key]["completion"] for key in keys], prompts
    )
    for key, g in zip(keys, grades):
        done[key].update(g)


class PeriodicEvaluator:
    """What the trainer calls to evaluate held-out problems during training, with the same metrics.

    The trainer does, once per step::

        if evaluator.should_run(step, last=step == total_steps):
            logger.log(evaluator(engine, step), step)   # {"eval/pass@1": ..., "eval/cons@4": ..., ...}

    Every evaluation uses the same seed, so the curve over steps moves with the model, not the sampler. With
    ``out_dir`` each step's samples and summary go to ``out_dir/step_000100/`` (and resume there).
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        tokenizer: Any,
        *,
        every_steps: int,
        k: int = 4,
        temperature: float = 0.6,
        top_p: float = 0.95,
        max_new_tokens: int = 1024,
        template: str = "r1",
        system_prompt: str | None = None,
        stop_strings: Sequence[str] | None = None,
        max_problems: int | None = None,
        batch_size: int = 8,
        seed: int = 0,
        out_dir: str | Path | None = None,
        grader: Any = None,
        prefix: str = "eval/",
        reuse_samples: bool = False,
    ):
        self.rows = prepare_rows(list(rows)[:max_problems] if max_problems is not None else rows)
        self.tokenizer = tokenizer
        self.every_steps = every_steps
        self.kwargs = dict(
            k=k,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            template=template,
            system_prompt=system_prompt,
            stop_strings=stop_strings,
            batch_size=batch_size,
            seed=seed,
            grader=grader,
        )
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.prefix = prefix
        # Off by default: a run restarted from scratch in the same folder has other weights at the same step.
        self.reuse_samples = reuse_samples

    @classmethod
    def from_config(
        cls, cfg: Any, rows: Sequence[dict[str, Any]], tokenizer: Any, out_dir: str | Path | None = None
    ):
        """Build from the run config: ``cfg.eval`` (every_steps, k, temperature, top_p, max_new_tokens,
        max_problems), ``cfg.data`` (template, system_prompt), ``cfg.rollout`` (max_new_tokens, stop_strings)."""
        ev = cfg.eval
        return cls(
            rows,
            tokenizer,
            every_steps=ev.every_steps,
            k=ev.k,
            temperature=ev.temperature,
            top_p=ev.top_p,
            max_new_tokens=ev.max_new_tokens or cfg.rollout.max_new_tokens,
            template=cfg.data.template,
            system_prompt=cfg.data.system_prompt,
            stop_strings=list(cfg.rollout.stop_strings),
            max_problems=ev.max_problems,
            out_dir=out_dir,
        )

    def should_run(self, step: int, last: bool = False) -> bool:
        """True at step 0, every ``every_steps`` steps, and at the last step; never when every_steps is 0."""
        return self.every_steps > 0 and (step % self.every_steps == 0 or last)

    def __call__(self, engine: Any, step: int) -> dict[str, float]:
        """Evaluate with ``engine`` (already synced to the current weights); returns prefixed scalar metrics."""
        out = self.out_dir / f"step_{step:06d}" if self.out_dir is not None else None
        if out is not None and not self.reuse_samples:
            (out / SAMPLES_FILE).unlink(missing_ok=True)
        result = evaluate(engine, self.tokenizer, self.rows, out_dir=out, progress=False, **self.kwargs)
        return flat_metrics(result.summary, self.prefix)


def evaluate_during_training(trainer: Any, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The trainer's hook: evaluate ``rows`` with ``trainer.engine`` at ``trainer.step`` using ``trainer.cfg``
    (see :meth:`PeriodicEvaluator.from_config`); files go to ``trainer.run_dir / "eval" / "step_NNNNNN"``.
    Returns ``{"eval/pass@1": ..., "eval/pass@1_se": ..., "eval/cons@K": ..., "eval/length_mean": ...}``."""
    trainer.engine.sync_weights()
    out = Path(trainer.run_dir) / "eval" if getattr(trainer, "run_dir", None) is not None else None
    evaluator = PeriodicEvaluator.from_config(trainer.cfg, rows, trainer.tokenizer, out_dir=out)
    return evaluator(trainer.engine, trainer.step)


def add_eval_arguments(parser: Any) -> None:
    """Add ``thinkrl eval``'s arguments to an ``argparse`` (sub)parser; run them with :func:`run_eval_cli`.

    ``thinkrl eval MODEL --data SPEC[,SPEC...] [--k 16] [--temperature 0.6] [--top-p 0.95] [--top-k 0]
    [--max-new-tokens 4096] [--template r1|chat|plain] [--out DIR] [--seed 0] [--limit N] ...``
    """
    a = parser.add_argument
    a("model", help="model folder or hub name (a transformers causal LM and its tokenizer)")
    a("--data", action="append", required=True, metavar="SPEC",
      help="benchmark name (gsm8k, math500, aime24, aime25, amc23, countdown), NAME:PATH, or a .jsonl/.parquet/"
      ".csv path; repeat or comma-separate for several")  # fmt: skip
    a(
        "--data-dir",
        default=None,
        help="folder laid out like shared/data (default: $THINKRL_DATA_DIR, ../shared/data)",
    )
    a("--limit", type=int, default=None, help="evaluate only the first N problems of each benchmark")
    a("--question-key", default=None, help="question column of a custom file (default: question/problem/...)")
    a("--answer-key", default=None, help="answer column of a custom file (default: answer/...)")
    a("--k", type=int, default=16, help="samples per problem; pass@1 is their mean correctness (R1: 4..64)")
    a("--temperature", type=float, default=0.6, help="R1 protocol: 0.6; 0 = greedy (one sample per problem)")
    a("--top-p", type=float, default=0.95, help="R1 protocol: 0.95")
    a("--top-k", type=int, default=0, help="0 disables")
    a("--max-new-tokens", type=int, default=4096, help="completion cap (R1 used 32768); see truncation_rate")
    a(
        "--template",
        default="r1",
        help="r1 (R1-Zero prompt), chat (tokenizer's chat template), plain, or a string with {question}",
    )
    a("--system-prompt", default=None, help="system message for --template chat")
    a("--stop", action="append", default=None, help="stop string (default: </answer> with --template r1)")
    a(
        "--pass-k",
        default=None,
        help="comma-separated k for pass@k (default: powers of two up to --k, and --k)",
    )
    a("--cons-k", type=int, default=None, help="votes in cons@k (default: --k)")
    a("--extract-mode", default="auto", help="answer extraction: auto, answer_tag, boxed, gsm8k, auto_number")
    a("--out", default=None, help="output folder (default runs/eval/MODEL_NAME); one subfolder per benchmark")
    a("--seed", type=int, default=0, help="sampling seed: same seed, same numbers")
    a("--batch-size", type=int, default=8, help="problems per generate call (and per resume checkpoint)")
    a("--regrade", action="store_true", help="grade stored completions again (after a grader change)")
    a("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    a("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    a("--no-progress", action="store_true", help="hide the progress bar")


def run_eval_cli(args: Any) -> int:
    """Run ``thinkrl eval`` from parsed :func:`add_eval_arguments` args: evaluate every ``--data`` benchmark,
    write OUT/BENCHMARK/{samples.jsonl, summary.json, eval_config.json}, print one table each. Returns 0."""
    from thinkrl.eval.benchmarks import load_benchmark

    specs = [s.strip() for item in args.data for s in item.split(",") if s.strip()]
    from thinkrl.core import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device or "auto")
    out_root = Path(args.out) if args.out else Path("runs") / "eval" / Path(args.model.rstrip("/")).name
    pass_ks = [int(x) for x in args.pass_k.split(",")] if args.pass_k else None
    for spec in specs:
        rows = load_benchmark(
            spec, args.data_dir, args.limit, question_key=args.question_key, answer_key=args.answer_key
        )
        bench = str(rows[0].get("benchmark", Path(spec).stem)) if rows else spec
        result = evaluate(
            model,
            tokenizer,
            rows,
            k=args.k,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_new_tokens=args.max_new_tokens,
            template=args.template,
            system_prompt=args.system_prompt,
            stop_strings=args.stop,
            out_dir=out_root / bench,
            seed=args.seed,
            grader=Grader(extract_mode=args.extract_mode),
            pass_ks=pass_ks,
            cons_k=args.cons_k,
            batch_size=args.batch_size,
            regrade=args.regrade,
            progress=not args.no_progress,
            name=bench,
        )
        print(result.table())
        print(f"  -> {result.out_dir}")
    return 0
