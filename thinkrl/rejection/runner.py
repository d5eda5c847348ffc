"""``thinkrl sample``: k samples per prompt from any model, graded by the reward library, filtered into SFT data.

    thinkrl sample runs/grpo/checkpoints/step-000400 --data train.jsonl --k 16 --out runs/sample --keep correct \\
        --min-language-consistency 0.95 --max-repeat-ratio 0.3 --max-per-prompt 4
    thinkrl sft data.train=runs/sample/sft.jsonl model.path=BASE_MODEL

Generation is :func:`thinkrl.eval.evaluate` (batched through ``HFEngine``, progress bar, resumable): an
interrupted run appends to ``OUT/samples.jsonl`` and a rerun generates only the missing prompts. Grading is
:class:`RewardGrader`: the same reward callables as RL (:func:`thinkrl.rewards.base.compute_rewards`). Filtering
(:mod:`thinkrl.rejection.filters`) is cheap and redone on every run, so filters can be changed without sampling
again. Files in ``OUT``:

- ``samples.jsonl``: every graded sample (``id``, ``sample_idx``, ``completion``, ``correct``, ``rewards``,
  ``reward``, ``length``, ``finish_reason``, ...), ``eval_config.json``: the sampling settings;
- ``summary.json``: the sampler's pass@1 / pass@k / cons@k on these prompts;
- ``sft.jsonl``: the kept samples as ``prompt`` (the rendered prompt), ``response`` (the completion),
  ``question``, ``answer``, ``id``, ``sample_idx``, ``reward``: ``thinkrl sft`` reads it with its defaults;
- ``filter_summary.json``: what each filter removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkrl.data.templates import render_prompt
from thinkrl.rejection.filters import FilterConfig, filter_samples, format_report
from thinkrl.rewards.base import compute_rewards, reward_name
from thinkrl.rewards.extract import extract_answer

SFT_FILE = "sft.jsonl"
FILTER_SUMMARY_FILE = "filter_summary.json"
CORRECTNESS_REWARDS = ("accuracy", "exact_match", "countdown", "code", "routed")
"""Reward names that say whether an answer is right (the first one graded decides ``correct``)."""


class RewardGrader:
    """Grades completions with reward callables; a sample is ``correct`` when ``correct_reward`` gives >= ``threshold``.

    Works as the ``grader`` of :func:`thinkrl.eval.evaluate`: every record gets ``rewards`` ({name: score or
    None}), ``reward`` (the weighted sum), ``correct``, ``extracted`` (for cons@k), ``format_ok`` and, when the
    row has one, ``language``. Every dataset column reaches the rewards as a keyword argument, as in training.
    """

    def __init__(
        self,
        funcs: Sequence[Callable],
        weights: Sequence[float] | None = None,
        *,
        correct_reward: str | None = None,
        threshold: float = 1.0,
    ):
        self.funcs, self.weights = list(funcs), list(weights) if weights is not None else None
        names = [reward_name(f) for f in self.funcs]
        self.correct_reward = correct_reward or next((n for n in CORRECTNESS_REWARDS if n in names), None)
        if self.correct_reward is not None and self.correct_reward not in names:
            raise ValueError(
                f"correct_reward={self.correct_reward!r} is not among the rewards graded: {', '.join(names)}"
            )
        self.threshold = threshold

    def grade(
        self, rows: Sequence[dict[str, Any]], completions: Sequence[str], prompts: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        prompts = list(prompts) if prompts is not None else [r["question"] for r in rows]
        keys = sorted({k for r in rows for k in r})  # every data column, question included (prompt_key)
        columns = {k: [r.get(k) for r in rows] for k in keys}
        out = compute_rewards(self.funcs, self.weights, prompts, list(completions), **columns)
        per_fn = {
            name: [None if v != v else v for v in scores.tolist()]
            for name, scores in out.per_function.items()
        }
        records = []
        for i, text in enumerate(completions):
            scores = {name: vals[i] for name, vals in per_fn.items()}
            ok = scores.get(self.correct_reward) if self.correct_reward else None
            fmt = scores.get("format")
            rec = {
                "rewards": scores,
                "reward": float(out.total[i]),
                "correct": None if ok is None else ok >= self.threshold,
                "extracted": extract_answer(text),
                "format_ok": None if fmt is None else fmt >= 1.0,
            }
            if rows[i].get("language"):
                rec["language"] = rows[i]["language"]
            records.append(rec)
        return records

    def equivalent(self, a: str, b: str, row: dict[str, Any]) -> bool:
        """Votes in cons@k: the same extracted answer, spaces ignored."""
        return "".join(a.split()) == "".join(b.split())


@dataclass
class SampleResult:
    """What :func:`sample_dataset` returns."""

    samples: list[dict[str, Any]]
    """Every graded sample of the prompts, in prompt order then sample index."""
    kept: list[dict[str, Any]]
    """The SFT rows written to ``sft.jsonl`` (``prompt``, ``response``, ...)."""
    report: dict[str, Any]
    """What each filter removed (also in ``filter_summary.json``)."""
    summary: dict[str, Any]
    """The sampler's pass@k / cons@k summary (also in ``summary.json``)."""
    out_dir: Path


def sample_dataset(
    model_or_engine: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    grader: Any,
    filters: FilterConfig | None = None,
    k: int = 4,
    temperature: float = 0.6,
    top_p: float = 0.95,
    top_k: int = 0,
    max_new_tokens: int = 1024,
    template: str = "r1",
    system_prompt: str | None = None,
    stop_strings: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> SampleResult:
    """Sample ``k`` completions per row, grade, filter, and write ``OUT/sft.jsonl`` (see the module docstring).

    Args:
        model_or_engine: a ``RolloutEngine``, a ``transformers`` causal LM or a model path.
        tokenizer: renders and tokenizes the prompts (None only with a model path).
        rows: prompt rows with ``question`` and ``answer`` (e.g. from :func:`thinkrl.data.load_prompts`);
            an ``id`` column keys the resume (default: the row's position).
        grader: a :class:`RewardGrader` (or any object with ``grade`` and ``equivalent``).
        filters: which samples to keep (default: :class:`FilterConfig`'s defaults, every grade).
        k, temperature, top_p, top_k, max_new_tokens, template, system_prompt, stop_strings, seed, batch_size:
            as in :func:`thinkrl.eval.evaluate` (R1's sampling: temperature 0.6, top-p 0.95).

    Example (tests/test_sample.py runs it on a tiny model)::

        grader = RewardGrader([get_reward("accuracy"), get_reward("format")])
        result = sample_dataset(model, tok, rows, "runs/sample", grader=grader, k=8,
                                filters=FilterConfig(keep="correct", max_per_prompt=2))
    """
    from thinkrl.eval.benchmarks import prepare_rows
    from thinkrl.eval.runner import _write_json, evaluate

    out = Path(out_dir)
    rows = prepare_rows(rows)
    if isinstance(
        model_or_engine, str | Path
    ):  # load once here: the prompts for sft.jsonl need its tokenizer
        from thinkrl.core import load_model_and_tokenizer

        model_or_engine, loaded = load_model_and_tokenizer(str(model_or_engine), device="auto")
        tokenizer = tokenizer if tokenizer is not None else loaded
    result = evaluate(
        model_or_engine, tokenizer, rows, k=k, temperature=temperature, top_p=top_p, top_k=top_k,
        max_new_tokens=max_new_tokens, template=template, system_prompt=system_prompt, stop_strings=stop_strings,
        out_dir=out, seed=seed, grader=grader, batch_size=batch_size, progress=progress, name="sample",
    )  # fmt: skip
    by_id = {r["id"]: r for r in rows}
    kept, report = filter_samples(result.samples, filters or FilterConfig())
    sft_rows = []
    for s in kept:
        row = by_id[s["id"]]
        prompt = render_prompt(
            template, row["question"], tokenizer, system=system_prompt
        )  # as evaluate renders it
        sft_rows.append({
            "prompt": prompt, "response": s["completion"], "question": row["question"], "answer": row["answer"],
            "id": s["id"], "sample_idx": s["sample_idx"], "reward": s.get("reward"),
        })  # fmt: skip
    tmp = out / (SFT_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sft_rows))
    tmp.replace(out / SFT_FILE)
    _write_json(out / FILTER_SUMMARY_FILE, report)
    return SampleResult(
        samples=result.samples, kept=sft_rows, report=report, summary=result.summary, out_dir=out
    )


# ---------------------------------------------------------------------------------------------------- CLI
def add_sample_arguments(parser: Any) -> None:
    """``thinkrl sample MODEL --data SPEC --out DIR [--k 4] [--keep correct] [filters ...]``."""
    a = parser.add_argument
    a("model", help="model folder or hub name (a transformers causal LM and its tokenizer)")
    a(
        "--data",
        required=True,
        help="prompts: .jsonl/.parquet/.csv file, folder, datasets folder, hub name, builtin:NAME",
    )
    a("--out", required=True, help="output folder: samples.jsonl (resumable), sft.jsonl, filter_summary.json")
    a("--split", default="train", help="split of a datasets folder or hub name")
    a("--question-key", default="question", help="column holding the problem text")
    a("--answer-key", default="answer", help="column holding the gold answer (passed to rewards as `answer`)")
    a("--limit", type=int, default=None, help="use only the first N prompts")
    a("--k", type=int, default=4, help="samples per prompt")
    a("--temperature", type=float, default=0.6, help="R1: 0.6; 0 = greedy (one sample per prompt)")
    a("--top-p", type=float, default=0.95, help="R1: 0.95")
    a("--top-k", type=int, default=0, help="0 disables")
    a(
        "--max-new-tokens",
        type=int,
        default=1024,
        help="completion cap; samples that hit it count as truncated",
    )
    a("--template", default="r1", help="r1, chat, plain, or a string with {question}")
    a("--system-prompt", default=None, help="system message for --template chat")
    a("--stop", action="append", default=None, help="stop string (default: </answer> with --template r1)")
    a(
        "--rewards",
        default="accuracy,format",
        help="comma-separated reward names to grade with (thinkrl.rewards)",
    )
    a(
        "--correct-reward",
        default=None,
        help="reward that decides `correct` (default: accuracy/countdown/... graded)",
    )
    a("--seed", type=int, default=0, help="sampling seed")
    a("--batch-size", type=int, default=8, help="prompts per generate call (and per resume checkpoint)")
    f = parser.add_argument_group("filters (rejection sampling)")
    f.add_argument("--keep", choices=("all", "correct"), default="all", help="correct: rejection sampling")
    f.add_argument("--keep-truncated", action="store_true", help="keep samples that hit --max-new-tokens")
    f.add_argument("--max-tokens", type=int, default=None, help="drop samples longer than this many tokens")
    f.add_argument(
        "--min-language-consistency", type=float, default=None, help="e.g. 0.95: drop mixed-language CoTs"
    )
    f.add_argument("--max-repeat-ratio", type=float, default=None, help="e.g. 0.3: drop repetitive samples")
    f.add_argument("--repeat-ngram", type=int, default=8, help="n of the repeated n-grams")
    f.add_argument("--no-code", action="store_true", help="drop samples with a fenced code block")
    f.add_argument(
        "--require-format", action="store_true", help="drop samples whose `format` reward is not 1"
    )
    f.add_argument("--no-dedup", action="store_true", help="keep identical completions of a prompt")
    f.add_argument("--max-per-prompt", type=int, default=None, help="keep at most N samples per prompt")
    a("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    a("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    a("--no-progress", action="store_true", help="hide the progress bar")


def filters_from_args(args: Any) -> FilterConfig:
    return FilterConfig(
        keep=args.keep, drop_truncated=not args.keep_truncated, max_tokens=args.max_tokens,
        min_language_consistency=args.min_language_consistency, max_repeat_ratio=args.max_repeat_ratio,
        repeat_ngram=args.repeat_ngram, drop_code=args.no_code, require_format=args.require_format,
        dedup=not args.no_dedup, max_per_prompt=args.max_per_prompt,
    )  # fmt: skip


def run_sample_cli(args: Any) -> int:
    """Run ``thinkrl sample`` from parsed :func:`add_sample_arguments` args; prints the filter report."""
    from thinkrl.core import load_model_and_tokenizer
    from thinkrl.data.datasets import load_prompts
    from thinkrl.rewards import get_reward

    filters = filters_from_args(args)
    funcs = [get_reward(n.strip()) for n in args.rewards.split(",") if n.strip()]
    grader = RewardGrader(funcs, correct_reward=args.correct_reward)
    if filters.keep == "correct" and grader.correct_reward is None:
        raise SystemExit(
            f"thinkrl sample: --keep correct needs a correctness reward among --rewards={args.rewards!r} "
            f"(one of {', '.join(CORRECTNESS_REWARDS)}) or --correct-reward NAME"
        )
    rows = load_prompts(
        args.data,
        split=args.split,
        question_key=args.question_key,
        answer_key=args.answer_key,
        max_rows=args.limit,
    )
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device or "auto")
    result = sample_dataset(
        model, tokenizer, rows, args.out, grader=grader, filters=filters, k=args.k, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_new_tokens, template=args.template,
        system_prompt=args.system_prompt, stop_strings=args.stop, seed=args.seed, batch_size=args.batch_size,
        progress=not args.no_progress,
    )  # fmt: skip
    print(format_report(result.report))
    print(
        f"  -> {result.out_dir / SFT_FILE} ({len(result.kept)} rows), {result.out_dir / FILTER_SUMMARY_FILE}"
    )
    return 0
