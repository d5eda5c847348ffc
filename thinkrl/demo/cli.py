"""CLI wiring for ``thinkrl demo``, ``thinkrl pretrain`` and ``thinkrl report``."""

from __future__ import annotations

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    if args.tools or args.text_only or args.with_text_arm:
        from thinkrl.demo.tools_demo import run_tools_demo

        run_tools_demo(args.out or "runs/demo-tools", overrides=args.overrides, text_only=args.text_only,
                       with_text_arm=args.with_text_arm, eval_problems=args.eval_problems,
                       base_model=args.base_model)  # fmt: skip
        return 0
    from thinkrl.demo.run import run_demo

    run_demo(args.out or "runs/demo", overrides=args.overrides, no_think=args.no_think, eval_problems=args.eval_problems,
             base_model=args.base_model)  # fmt: skip
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from thinkrl.demo.pretrain import PRETRAIN_STEPS, pretrain

    sizes = {"hidden_size": args.hidden, "intermediate_size": args.ffn, "num_hidden_layers": args.layers,
             "num_attention_heads": args.heads, "num_key_value_heads": args.heads}  # fmt: skip
    overrides = {k: v for k, v in sizes.items() if v is not None}
    if args.tools:
        from thinkrl.demo.tools_corpus import TOOLS_PRETRAIN

        path = pretrain(args.out or "runs/tools-base", seed=args.seed, threads=args.threads, corpus="tools",
                        **{**TOOLS_PRETRAIN, **({"steps": args.steps} if args.steps else {})})  # fmt: skip
        print(f"base model written to {path}")
        return 0
    path = pretrain(args.out or "runs/demo-base", seed=args.seed, steps=args.steps or PRETRAIN_STEPS,
                    threads=args.threads, model_overrides=overrides or None)  # fmt: skip
    print(f"base model written to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from thinkrl.analysis.report import build_report

    print(build_report(args.run_dir))
    return 0


def add_demo_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="R1-Zero in miniature on CPU: base eval -> GRPO with rule rewards -> eval -> report",
        description="Runs the built-in demo end to end (~5-10 minutes on 2 CPU cores) and writes OUT/report.html.",
    )
    p.add_argument(
        "overrides", nargs="*", help="config overrides, e.g. train.steps=30 (see thinkrl/demo/demo.yaml)"
    )
    p.add_argument("--out", default=None, help="run directory (default: runs/demo, or runs/demo-tools)")
    p.add_argument("--no-think", action="store_true", help="ablation: the same RL with thinking forbidden")
    p.add_argument(
        "--tools",
        action="store_true",
        help="the tools demo: RL teaches the model to call Python (thinkrl/demo/tools_demo.yaml)",
    )
    p.add_argument(
        "--text-only",
        action="store_true",
        help="tools demo ablation: the same RL on the tools base with the tool switched off",
    )
    p.add_argument(
        "--with-text-arm",
        action="store_true",
        help="tools demo: also run the text-only arm (into OUT/text-only) and compare",
    )
    p.add_argument(
        "--eval-problems", type=int, default=200, help="held-out problems for the before/after table"
    )
    p.add_argument("--base-model", default=None, help="a base model folder (default: the shipped demo base)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "pretrain", help="pretrain the demo's tiny base model from scratch on the synthetic corpus"
    )
    p.add_argument(
        "--out", default=None, help="output folder, HF format (default: runs/demo-base or runs/tools-base)"
    )
    p.add_argument(
        "--tools",
        action="store_true",
        help="the tools demo's base (its corpus, tokenizer and recipe: thinkrl/assets/tools-base)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (0 reproduces the shipped checkpoint)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the shipped recipe's)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 reproduces the shipped weights bit for bit)"
    )
    size = p.add_argument_group("size (default: the demo 1M model: 128 / 512 / 4 layers / 4 heads)")
    size.add_argument("--hidden", type=int, default=None, help="hidden size, e.g. 64 for a smaller student")
    size.add_argument("--ffn", type=int, default=None, help="FFN (intermediate) size, e.g. 256")
    size.add_argument("--layers", type=int, default=None, help="transformer layers")
    size.add_argument("--heads", type=int, default=None, help="attention heads (hidden must divide by it)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "report", help="rebuild RUN_DIR/report.html and plots from metrics.jsonl (+ summary.json)"
    )
    p.add_argument("run_dir", help="a run directory written by thinkrl train or thinkrl demo")
    p.set_defaults(func=cmd_report)
