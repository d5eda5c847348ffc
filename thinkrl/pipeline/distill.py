"""``thinkrl distill``: a teacher's graded samples become a student's SFT data (DeepSeek-R1 §4 / Table 6).

    thinkrl distill --teacher runs/r1/reasoning_rl/model --student runs/student-base --data builtin:demo \\
        --out runs/distill --k 4 --keep correct --max-per-prompt 2 --eval-data builtin:demo sft.train.epochs=2

It is a pipeline of two or three stages (:func:`distill_pipeline`), so it resumes and skips like one:

    sample  (kind sample): the teacher, k samples per prompt, graded, rejection-filtered -> sample/sft.jsonl
    sft     (kind sft):    the student, trained on that text -> sft/model
    eval    (kind eval):   the student after distillation (with --eval-data)

Text is the interface: the SFT stage renders each ``question`` again with the *student's* template and
tokenizer (``data.prompt_key=question``, ``data.template`` = the sampling template), so teacher and student may
have different tokenizers, vocabularies and chat templates. ``sample.KEY=...``, ``sft.KEY=...`` and
``eval.KEY=...`` override any field of a stage (the fields of ``thinkrl pipeline`` stages).
"""

from __future__ import annotations

from typing import Any

from thinkrl.pipeline.config import Pipeline, build_pipeline


def distill_pipeline(
    teacher: str,
    student: str,
    data: str,
    out: str,
    *,
    k: int = 4,
    keep: str = "correct",
    max_per_prompt: int | None = None,
    limit: int | None = None,
    template: str = "r1",
    system_prompt: str | None = None,
    temperature: float = 0.6,
    max_new_tokens: int = 1024,
    eval_data: str | None = None,
    eval_k: int = 4,
    eval_limit: int | None = None,
    overrides: list[str] | None = None,
) -> Pipeline:
    """The distillation pipeline (stages ``sample``, ``sft`` and, with ``eval_data``, ``eval``), resolved.

    ``overrides``: ``sample.KEY=VALUE`` / ``sft.KEY=VALUE`` / ``eval.KEY=VALUE`` for any field of a stage.
    """
    sampling = {"template": template, "system_prompt": system_prompt, "max_new_tokens": max_new_tokens}
    stages: list[dict[str, Any]] = [
        {"name": "sample", "kind": "sample", "model": teacher, "data": data, "k": k, "limit": limit,
         "temperature": temperature, "filters": {"keep": keep, "max_per_prompt": max_per_prompt}, **sampling},
        {"name": "sft", "kind": "sft", "model": {"path": student},
         "data": {"train": "${stages.sample.data}", "prompt_key": "question", "template": template,
                  "system_prompt": system_prompt}},
    ]  # fmt: skip
    if eval_data:
        stages.append(
            {"name": "eval", "kind": "eval", "model": "${stages.sft.model}", "data": eval_data, "k": eval_k,
             "limit": eval_limit, **sampling}
        )  # fmt: skip
    return build_pipeline({"output_dir": out, "stages": stages}, overrides, source="distill")


def add_distill_arguments(parser: Any) -> None:
    """``thinkrl distill --teacher T --student S --data SPEC --out DIR [options] [STAGE.KEY=VALUE ...]``."""
    a = parser.add_argument
    a("overrides", nargs="*", help="sample.KEY=VALUE, sft.KEY=VALUE, eval.KEY=VALUE (e.g. sft.train.lr=1e-3)")
    a("--teacher", required=True, help="teacher model folder or hub name (samples the SFT data)")
    a("--student", required=True, help="student model folder or hub name (trained on the teacher's text)")
    a("--data", required=True, help="prompts: .jsonl/.parquet/.csv, folder, hub name, builtin:demo")
    a(
        "--out",
        required=True,
        help="output folder: sample/, sft/ (sft/model is the student), eval/, summary.md",
    )
    a("--k", type=int, default=4, help="teacher samples per prompt")
    a("--keep", choices=("all", "correct"), default="correct", help="correct: rejection sampling (R1)")
    a("--max-per-prompt", type=int, default=None, help="keep at most N samples per prompt")
    a("--limit", type=int, default=None, help="use only the first N prompts")
    a(
        "--template",
        default="r1",
        help="r1, chat, plain or a string with {question}; the same for both models",
    )
    a("--system-prompt", default=None, help="system message for --template chat")
    a("--temperature", type=float, default=0.6, help="teacher sampling temperature (R1: 0.6)")
    a("--max-new-tokens", type=int, default=1024, help="completion cap of the teacher (and of the eval)")
    a("--eval-data", default=None, help="held-out prompts: evaluate the distilled student on them")
    a("--eval-k", type=int, default=4, help="samples per eval problem (pass@1 = their mean correctness)")
    a("--eval-limit", type=int, default=None, help="evaluate only the first N problems")
    a(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="redo sample, sft or eval (and what follows)",
    )
    a("--dry-run", action="store_true", help="resolve and validate the stages, print the plan, run nothing")


def run_distill_cli(args: Any) -> int:
    """Run ``thinkrl distill`` from parsed :func:`add_distill_arguments` args."""
    from thinkrl.pipeline.runner import run_loaded

    pipeline = distill_pipeline(
        args.teacher, args.student, args.data, args.out, k=args.k, keep=args.keep,
        max_per_prompt=args.max_per_prompt, limit=args.limit, template=args.template,
        system_prompt=args.system_prompt, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
        eval_data=args.eval_data, eval_k=args.eval_k, eval_limit=args.eval_limit, overrides=args.overrides,
    )  # fmt: skip
    return run_loaded(pipeline, args)
