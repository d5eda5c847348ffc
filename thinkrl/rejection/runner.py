"""``thinkrl sample``: k samples per prompt from any model, graded by the reward library, filtered into SFT data.

    thinkrl sample runs/grpo/checkpoints/step-000400 --data train.jsonl --k 16 --out runs/sample --keep correct \\
        --min-language-consistency 0.95 --max-repeat-ratio 0.3 --max-per-prompt 4
    thinkrl sft data.train=runs/sample/sft.jsonl model.path=BASE_MODEL

Generation is :func:`thinkrl.eval.evaluate` (batched through ``HFEngine``, progress bar, resumable): an
interrupted run appends to ``OUT/samples.jsonl`` and a rerun generates only the missing prompts. Grading is
:class:`RewardGrader`: the same reward callables as RL, scored as the collector scores them
(:func:`thinkrl.rollout.score`). Filtering
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

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkrl.config import EvalSampling
from thinkrl.data.templates import render_prompt
from thinkrl.eval import evaluate, prepare_rows
from thinkrl.eval.cli import add_model_arguments, add_sampling_arguments, sampling_from_args
from thinkrl.eval.files import write_json
from thinkrl.rejection.filters import FilterConfig, filter_samples, format_report
from thinkrl.rewards import RewardScorer
from thinkrl.rewards.extract import extract_answer
from thinkrl.rollout import CORRECTNESS_REWARDS, score

SFT_FILE = "sft.jsonl"
FILTER_SUMMARY_FILE = "filter_summary.json"
SAMPLE_DEFAULTS = EvalSampling(k=4, max_new_tokens=1024)
"""``thinkrl sample``'s sampling defaults (the pipeline's sample stage uses the same)."""


class SampleError(RuntimeError):
    """Rejection sampling kept no sample (the files are written; the message says what removed them)."""


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
        grading: Any = None,
    ):
        self.scorer = RewardScorer(funcs, weights, grading)  # the time bounds of training apply here too
        names = [f.name for f in self.scorer.funcs]
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
        # every data column reaches the rewards, question included (a reward model's prompt_key)
        out = score(self.scorer, prompts, completions, rows)
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
    sampling: EvalSampling | None = None,
    *,
    grader: Any,
    filters: FilterConfig | None = None,
    progress: bool = True,
    **settings: Any,
) -> SampleResult:
    """Sample ``k`` completions per row, grade, filter, and write ``OUT/sft.jsonl`` (see the module docstring).

    Args:
        model_or_engine: a ``RolloutEngine``, a ``transformers`` causal LM or a model path.
        tokenizer: renders and tokenizes the prompts (None only with a model path).
        rows: prompt rows with ``question`` and ``answer`` (e.g. from :func:`thinkrl.data.load_prompts`);
            an ``id`` column keys the resume (default: the row's position).
        sampling: how to sample (default :data:`SAMPLE_DEFAULTS`, R1's temperature 0.6 and top-p 0.95);
            ``settings`` override its fields by name, as in :func:`thinkrl.eval.evaluate`.
        grader: a :class:`RewardGrader` (or any object with ``grade`` and ``equivalent``).
        filters: which samples to keep (default: :class:`FilterConfig`'s defaults, every grade).

    >>> import tempfile
    >>> from thinkrl.rewards import get_reward
    >>> from thinkrl.testing import char_tokenizer, tiny_model
    >>> tok = char_tokenizer()
    >>> rows = [{"question": "1+1", "answer": "2"}]
    >>> result = sample_dataset(tiny_model("llama", len(tok)), tok, rows, tempfile.mkdtemp(), k=2,
    ...     max_new_tokens=4, template="plain", grader=RewardGrader([get_reward("format")]),
    ...     filters=FilterConfig(drop_truncated=False), progress=False)
    >>> result.report["total"], sorted(result.kept[0])
    (2, ['answer', 'id', 'prompt', 'question', 'response', 'reward', 'sample_idx'])
    """
    out = Path(out_dir)
    rows = prepare_rows(rows)
    s = dataclasses.replace(sampling or SAMPLE_DEFAULTS, **settings)
    if isinstance(
        model_or_engine, str | Path
    ):  # load once here: the prompts for sft.jsonl need its tokenizer
        from thinkrl.core import load_model_and_tokenizer

        model_or_engine, loaded = load_model_and_tokenizer(str(model_or_engine), device="auto")
        tokenizer = tokenizer if tokenizer is not None else loaded
    result = evaluate(
        model_or_engine, tokenizer, rows, s, out_dir=out, grader=grader, progress=progress, name="sample"
    )
    by_id = {r["id"]: r for r in rows}
    kept, report = filter_samples(result.samples, filters or FilterConfig())
    sft_rows = []
    for sample in kept:
        row = by_id[sample["id"]]
        prompt = render_prompt(
            s.template, row["question"], tokenizer, system=s.system_prompt
        )  # as evaluate does
        sft_rows.append({
            "prompt": prompt, "response": sample["completion"], "question": row["question"],
            "answer": row["answer"], "id": sample["id"], "sample_idx": sample["sample_idx"],
            "reward": sample.get("reward"),
        })  # fmt: skip
    tmp = out / (SFT_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sft_rows))
    tmp.replace(out / SFT_FILE)
    write_json(out / FILTER_SUMMARY_FILE, report)
    return SampleResult(
        samples=result.samples, kept=sft_rows, report=report, summary=result.summary, out_dir=out
    )


def require_rows(result: SampleResult) -> SampleResult:
    """``result``, or a :class:`SampleError` saying what removed every sample: an empty SFT set would only fail
    (or train on nothing) in the next stage. ``thinkrl sample`` and the pipeline's sample stage call it."""
    report = result.report
    if not result.kept:
        removed = (
            ", ".join(f"{name} removed {n}" for name, n in report["removed"].items() if n)
            or "nothing removed"
        )
        raise SampleError(
            f"rejection sampling kept 0 of {report['total']} samples ({removed}; "
            f"{result.out_dir / FILTER_SUMMARY_FILE}). Loosen the filters (e.g. keep: all, no max_tokens / "
            "require_format), sample more (k, limit), or start from a stronger model"
        )
    return result


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
    add_sampling_arguments(parser, SAMPLE_DEFAULTS)
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
    add_model_arguments(parser)


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
        model,
        tokenizer,
        rows,
        args.out,
        sampling_from_args(args),
        grader=grader,
        filters=filters,
        progress=not args.no_progress,
    )
    print(format_report(result.report))
    print(
        f"  -> {result.out_dir / SFT_FILE} ({len(result.kept)} rows), {result.out_dir / FILTER_SUMMARY_FILE}"
    )
    require_rows(result)
    return 0
