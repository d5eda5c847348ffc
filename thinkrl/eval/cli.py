"""``thinkrl eval``'s command line, and the sampling and model flags it shares with ``thinkrl sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thinkrl.config import EvalSampling
from thinkrl.eval.benchmarks import Grader
from thinkrl.eval.runner import evaluate


def add_sampling_arguments(parser: Any, defaults: EvalSampling) -> None:
    """The flags of :class:`~thinkrl.config.EvalSampling` (``--k``, ``--temperature``, ... ``--batch-size``)
    with ``defaults``; :func:`sampling_from_args` reads them back."""
    a = parser.add_argument
    a(
        "--k",
        type=int,
        default=defaults.k,
        help="samples per problem; pass@1 is their mean correctness (R1: 4..64)",
    )
    a(
        "--temperature",
        type=float,
        default=defaults.temperature,
        help="R1: 0.6; 0 = greedy (one sample per problem)",
    )
    a("--top-p", type=float, default=defaults.top_p, help="R1: 0.95")
    a("--top-k", type=int, default=defaults.top_k, help="0 disables")
    a(
        "--max-new-tokens",
        type=int,
        default=defaults.max_new_tokens,
        help="completion cap (R1 used 32768); samples that hit it count as truncated",
    )
    a(
        "--template",
        default=defaults.template,
        help="r1 (R1-Zero prompt), chat (tokenizer's chat template), plain, or a string with {question}",
    )
    a("--system-prompt", default=defaults.system_prompt, help="system message for --template chat")
    a("--stop", action="append", default=None, help="stop string (default: </answer> with --template r1)")
    a("--seed", type=int, default=defaults.seed, help="sampling seed: same seed, same samples")
    a("--batch-size", type=int, default=defaults.batch_size,
      help="problems per generate call (and per resume checkpoint)")  # fmt: skip


def sampling_from_args(args: Any) -> EvalSampling:
    """The :class:`~thinkrl.config.EvalSampling` of parsed :func:`add_sampling_arguments` flags."""
    return EvalSampling(
        k=args.k, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        max_new_tokens=args.max_new_tokens, template=args.template, system_prompt=args.system_prompt,
        stop_strings=args.stop, seed=args.seed, batch_size=args.batch_size,
    )  # fmt: skip


def add_model_arguments(parser: Any) -> None:
    """``--dtype``, ``--device``, ``--no-progress``."""
    a = parser.add_argument
    a("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    a("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    a("--no-progress", action="store_true", help="hide the progress bar")


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
    add_sampling_arguments(parser, EvalSampling())
    a(
        "--pass-k",
        default=None,
        help="comma-separated k for pass@k (default: powers of two up to --k, and --k)",
    )
    a("--cons-k", type=int, default=None, help="votes in cons@k (default: --k)")
    a("--extract-mode", default="auto", help="answer extraction: auto, answer_tag, boxed, gsm8k, auto_number")
    a("--out", default=None, help="output folder (default runs/eval/MODEL_NAME-HASH, one per model); one subfolder "
      "per benchmark")  # fmt: skip
    a("--regrade", action="store_true", help="grade stored completions again (after a grader change)")
    add_tool_arguments(parser)
    add_model_arguments(parser)


def default_out_dir(model: str) -> Path:
    """``runs/eval/NAME-HASH``: one folder per model, so two models never share samples by default. NAME is
    the model folder's name (with its run's for a checkpoint, ``RUN-step-000040``) or the hub name; HASH is of
    the resolved path.

    >>> default_out_dir("runs/a/checkpoints/step-000003").name[:-9], default_out_dir("Qwen/Qwen2.5-0.5B").parent
    ('a-step-000003', PosixPath('runs/eval'))
    """
    import hashlib

    from thinkrl.core import resolve_model_path

    resolved = resolve_model_path(model)
    p = Path(resolved).expanduser()
    key = str(p.resolve()) if p.exists() else resolved
    name = p.name or "model"
    if p.parent.name == "checkpoints" and p.parent.parent.name:
        name = f"{p.parent.parent.name}-{name}"
    return Path("runs") / "eval" / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def add_tool_arguments(parser: Any) -> None:
    """``--tools`` and the tool limits (the ``tools`` config section's fields; docs/tools.md)."""
    from thinkrl.config import ToolsConfig

    d, a = ToolsConfig(), parser.add_argument
    a("--tools", action="store_true",
      help="let the model run Python in the sandbox while it answers (<python>...</python>; use --template r1_tools)")  # fmt: skip
    a("--tools-stateless", action="store_true", help="every call in a fresh sandbox (default: one session)")
    a("--tool-max-calls", type=int, default=d.max_calls, help="tool calls per sample")
    a("--tool-max-turns", type=int, default=d.max_turns, help="model turns per sample")
    a("--tool-timeout", type=float, default=d.call_timeout_s, help="seconds per call")
    a("--tool-output-chars", type=int, default=d.output_chars, help="characters of output shown per call")
    a("--tool-workers", type=int, default=d.workers, help="calls run at once")


def environment_from_args(args: Any, tokenizer: Any) -> Any:
    """The Python tool environment of ``--tools`` (None without it); bad limits fail with the field named."""
    if not getattr(args, "tools", False):
        return None
    from thinkrl.config import ToolsConfig, check
    from thinkrl.config.tools import check_tools_fields
    from thinkrl.rewards.sandbox import default_sandbox
    from thinkrl.rollout.python_tool import PythonTool

    limits = ToolsConfig(
        enabled=True, stateful=not args.tools_stateless, max_calls=args.tool_max_calls,
        max_turns=args.tool_max_turns, call_timeout_s=args.tool_timeout, output_chars=args.tool_output_chars,
        workers=args.tool_workers,
    )  # fmt: skip
    check_tools_fields(limits, check)
    sandbox = default_sandbox()
    sandbox.chosen()  # refuse at start (naming the fixes) where code may not run
    return PythonTool(tokenizer, args.template, stateful=limits.stateful, limits=limits, sandbox=sandbox)


def run_eval_cli(args: Any) -> int:
    """Run ``thinkrl eval`` from parsed :func:`add_eval_arguments` args: evaluate every ``--data`` benchmark,
    write OUT/BENCHMARK/{samples.jsonl, summary.json, eval_config.json}, print one table each. Returns 0."""
    from thinkrl.core import load_model_and_tokenizer
    from thinkrl.eval.benchmarks import load_benchmark

    specs = [s.strip() for item in args.data for s in item.split(",") if s.strip()]
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device or "auto")
    out_root = Path(args.out) if args.out else default_out_dir(args.model)
    pass_ks = [int(x) for x in args.pass_k.split(",")] if args.pass_k else None
    sampling = sampling_from_args(args)
    env = environment_from_args(args, tokenizer)
    for spec in specs:
        rows = load_benchmark(
            spec, args.data_dir, args.limit, question_key=args.question_key, answer_key=args.answer_key
        )
        bench = str(rows[0].get("benchmark", Path(spec).stem)) if rows else spec
        result = evaluate(
            model, tokenizer, rows, sampling, out_dir=out_root / bench, grader=Grader(extract_mode=args.extract_mode),
            pass_ks=pass_ks, cons_k=args.cons_k, regrade=args.regrade, progress=not args.no_progress, name=bench,
            env=env,
        )  # fmt: skip
        print(result.table())
        print(f"  -> {result.out_dir}")
    return 0
