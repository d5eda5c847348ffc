"""``thinkrl doctor RUN_DIR`` and ``thinkrl estimate CONFIG``: their arguments and what they run.

``thinkrl/cli.py`` calls :func:`add_analysis_commands` once; everything else about the commands lives here.
"""

from __future__ import annotations

import argparse
import sys


def _error(e: Exception) -> int:
    print(f"thinkrl: error: {e}", file=sys.stderr)
    return 2


def cmd_doctor(args: argparse.Namespace) -> int:
    from thinkrl.analysis.doctor import diagnose, format_findings, run_doctor_config
    from thinkrl.analysis.jsonl import RunFileError, read_metrics

    try:
        records = read_metrics(args.run_dir)
    except (FileNotFoundError, RunFileError) as e:
        return _error(e)
    episodes = diagnose(records, run_doctor_config(args.run_dir))
    print(format_findings(episodes, len(records)))
    return 1 if episodes and args.strict else 0


def cmd_estimate(args: argparse.Namespace) -> int:
    from thinkrl.analysis.estimate import (
        EstimateError,
        format_estimate,
        format_r1_zero,
        load_shape,
        workload_from_config,
    )

    if args.r1_zero:
        print(format_r1_zero(args.completion_tokens or 8000, args.prompt_tokens or 256))
        return 0
    from thinkrl.config import load_config

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path:  # `thinkrl estimate a=b` starts from the defaults
        path, overrides = None, [path, *overrides]
    cfg = load_config(path, overrides)
    try:
        shape = load_shape(cfg.model.path, args.model_config)
        w = workload_from_config(cfg, prompt_tokens=args.prompt_tokens, completion_tokens=args.completion_tokens,
                                 eval_problems=args.eval_problems)  # fmt: skip
        print(format_estimate(shape, w, args.gpu, args.utilisation))
    except EstimateError as e:
        return _error(e)
    return 0


def add_analysis_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``doctor`` and ``estimate`` on the top-level ``thinkrl`` subparsers."""
    p = sub.add_parser(
        "doctor", help="name what is wrong with a run (entropy collapse, runaway length, ...) and the fix",
        description="Runs the run doctor's checks over RUN_DIR/metrics.jsonl (thresholds from the run's "
        "config.yaml `doctor:` section) and prints each finding with its step range, likely cause and fix.",
    )  # fmt: skip
    p.add_argument("run_dir", help="a run directory written by thinkrl train or thinkrl demo")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when anything is found")
    p.set_defaults(func=cmd_doctor)

    from thinkrl.analysis.estimate import GPUS

    p = sub.add_parser(
        "estimate", help="tokens, FLOPs and GPU-hours of a run, from its config alone",
        description="Counts the FLOPs of generation, old/reference log-prob passes, training and evaluation per "
        "step and per run (docs/visibility.md: formula and assumptions) and converts them to GPU-hours.",
    )  # fmt: skip
    p.add_argument("config", nargs="?", help="YAML config file; omit to start from the defaults")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rollout.group_size=16")
    p.add_argument("--gpu", default="H100", choices=sorted(GPUS), help="GPU whose dense BF16 peak is used")
    p.add_argument("--utilisation", "--mfu", type=float, default=0.3,
                   help="share of peak FLOP/s the run sustains (an assumption; default 0.3)")  # fmt: skip
    p.add_argument("--prompt-tokens", type=float, default=None, help="mean prompt length (default: measured)")
    p.add_argument("--completion-tokens", type=float, default=None,
                   help="expected mean completion length (default: rollout.max_new_tokens, an upper bound)")  # fmt: skip
    p.add_argument("--eval-problems", type=int, default=None, help="held-out problems per evaluation")
    p.add_argument("--model-config", default=None, help="a config.json giving the model's shape")
    p.add_argument("--r1-zero", action="store_true",
                   help="DeepSeek-R1-Zero's settings on DeepSeek-V3, beside the paper's 101K H800 GPU-hours")  # fmt: skip
    p.set_defaults(func=cmd_estimate)
