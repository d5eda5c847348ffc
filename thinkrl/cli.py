"""``thinkrl`` command line: train, eval, demo, report, pretrain, config.

thinkrl train configs/gsm8k-small.yaml algorithm.beta=0.0 rollout.group_size=16
thinkrl train configs/gsm8k-small.yaml --resume
thinkrl config configs/gsm8k-small.yaml train.lr=1e-5        # print the resolved config
"""

from __future__ import annotations

import argparse
import sys

from thinkrl import __version__

TRAIN_EPILOG = """\
Overrides are dotted key=value pairs applied over the YAML file, e.g.
  algorithm.beta=0.0 rollout.group_size=16 train.lr=1e-5 'rollout.stop_strings=[</answer>]'
Every field is documented in thinkrl/config.py and in `thinkrl config --help`.
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "config", nargs="?", help="YAML config file (see configs/); omit to start from the defaults"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. algorithm.beta=0.0")


def _split_config_and_overrides(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    # `thinkrl train a=b c=d` (no YAML) is allowed: a first positional with '=' is an override.
    if args.config is not None and "=" in args.config:
        return None, [args.config, *args.overrides]
    return args.config, list(args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from thinkrl.config import load_config
    from thinkrl.train import GRPOTrainer
    from thinkrl.train.runs import check_run_dir, run_flags

    path, overrides = _split_config_and_overrides(args)
    overrides += run_flags(args)
    cfg = load_config(path, overrides)
    check_run_dir(cfg.train)  # before a model loads: a refused folder costs nothing
    trainer = GRPOTrainer(cfg)
    history = trainer.train()
    if history:
        last = history[-1]
        keys = [k for k in ("reward/mean", "accuracy", "format_rate", "completion/len_mean") if k in last]
        print("final step", last["step"], " ".join(f"{k}={last[k]:.4f}" for k in keys))
    print(f"run directory: {trainer.run_dir}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from thinkrl.config import config_to_yaml, load_config
    from thinkrl.train.checks import check_config

    path, overrides = _split_config_and_overrides(args)
    print(config_to_yaml(check_config(load_config(path, overrides))), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinkrl",
        description="Teach language models to reason with reinforcement learning, the DeepSeek-R1 way.",
    )
    parser.add_argument("--version", action="version", version=f"thinkrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train", help="GRPO training from a YAML config plus key=value overrides", epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _add_config_args(p)
    from thinkrl.train.runs import add_run_flags

    add_run_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "config", help="print the resolved config (defaults <- YAML <- overrides) and validate it"
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_config)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Commands whose modules register their own arguments (eval, sft, sample, pipeline, distill, demo, ...)."""
    from thinkrl.eval import add_eval_arguments, run_eval_cli

    p = sub.add_parser(
        "eval", help="evaluate a model with the R1 protocol (pass@1 over k samples, pass@k, cons@k)"
    )
    add_eval_arguments(p)
    p.set_defaults(func=run_eval_cli)

    from thinkrl.sft import add_sft_arguments, run_sft_cli

    p = sub.add_parser(
        "sft", help="supervised fine-tuning (R1 cold start, distillation): YAML + key=value overrides"
    )
    add_sft_arguments(p)
    p.set_defaults(func=run_sft_cli)

    from thinkrl.rejection import add_sample_arguments, run_sample_cli

    p = sub.add_parser(
        "sample", help="k samples per prompt, graded and filtered (rejection sampling) into SFT data"
    )
    add_sample_arguments(p)
    p.set_defaults(func=run_sample_cli)

    from thinkrl.pipeline import (
        add_distill_arguments,
        add_pipeline_arguments,
        run_distill_cli,
        run_pipeline_cli,
    )

    p = sub.add_parser(
        "pipeline", help="multi-stage run (sft, rl, sample, eval stages): resumable, finished stages skipped"
    )
    add_pipeline_arguments(p)
    p.set_defaults(func=run_pipeline_cli)
    p = sub.add_parser("distill", help="teacher samples -> student SFT (-> eval), as one resumable command")
    add_distill_arguments(p)
    p.set_defaults(func=run_distill_cli)

    from thinkrl.demo.cli import add_demo_commands

    add_demo_commands(sub)

    from thinkrl.rewards.check import add_check_reward_command

    add_check_reward_command(sub)

    from thinkrl.analysis.commands import add_analysis_commands

    add_analysis_commands(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except user_errors() as e:
        print(f"thinkrl: error: {e}", file=sys.stderr)
        return 2


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user causes (a path, a file, a config, a run folder): their message says what and how to fix
    it, so the command prints it as one line instead of a traceback."""
    from thinkrl.config import ConfigError
    from thinkrl.core import LengthError
    from thinkrl.core.models import ModelLoadError
    from thinkrl.data.datasets import DataError
    from thinkrl.eval.benchmarks import BenchmarkError
    from thinkrl.eval.files import EvalResumeError
    from thinkrl.rejection.runner import SampleError
    from thinkrl.train.checkpoint import CheckpointError
    from thinkrl.train.runs import RunFolderError

    return (ConfigError, DataError, ModelLoadError, LengthError, BenchmarkError, EvalResumeError, SampleError,
            CheckpointError, RunFolderError)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
