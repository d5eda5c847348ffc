"""Built-in engine (HFEngine) vs vLLM-CPU: generation tokens/s on the same model and batch, back to back.

    bash scripts/setup_vllm.sh                                 # once: creates .venv-vllm
    .venv-vllm/bin/python benchmarks/bench_vllm.py             # 8 prompts x G 8, 64 and 256 tokens, 1 thread
    .venv-vllm/bin/python benchmarks/bench_vllm.py --threads 2 --lengths 64 --repeats 5 --json-out r.json

Both engines run in this one process (vLLM's engine core and worker are its children) from ``.venv-vllm``, so
they share torch 2.13.0+cpu and transformers; the model is ``bench_trl.py``'s 4M Qwen2 (hidden 256, 4 layers,
head dim 64, fp32) with its character tokenizer, whose EOS lies outside the model's output vocabulary: every
completion runs to exactly L tokens on both sides. Sampling: temperature 1, no top-p/top-k, a fixed seed.

Each engine first generates once (warm-up: vLLM's first batch allocates and JITs kernels), then the two
alternate, ``--repeats`` calls each, so load changes on a shared machine hit both alike. Reported: the median
tokens/s (completion tokens / wall time of one ``generate`` call, log-probs included) and vLLM's start-up time
(``LLM(...)`` plus the first weight push). Threads: torch.set_num_threads(T) for the built-in engine; vLLM's
worker is pinned to cores 0..T-1 (``VLLM_CPU_OMP_THREADS_BIND``), one OpenMP thread per core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="4M", help="a bench_trl.MODELS size (default 4M)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256], help="completion lengths L")
    p.add_argument("--repeats", type=int, default=3, help="measured generate calls per engine and length")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--vllm-compile",
        action="store_true",
        help="let vLLM compile its model (enforce_eager=False; slower start) instead of running it eagerly",
    )
    p.add_argument(
        "--fast-decode",
        choices=("on", "off"),
        default="on",
        help="the built-in engine's own decode step (rollout.fast_decode); off: the model's forward per step",
    )
    p.add_argument("--json-out", default=None)
    return p.parse_args(argv)


def timed_generate(engine, prompt_ids: list[list[int]], params) -> tuple[float, int]:
    """(seconds, completion tokens) of one generate call."""
    start = time.perf_counter()
    out = engine.generate(prompt_ids, params)
    return time.perf_counter() - start, int(out.completion_mask.sum())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}" if args.threads > 1 else "0")
    import torch
    from bench_trl import MODELS, build_model, build_tokenizer, prompts

    from thinkrl.rollout import HFEngine, SamplingParams
    from thinkrl.rollout.vllm import VLLMEngine

    torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    hidden, layers = MODELS[args.model]
    model = build_model(hidden, layers, tok).eval()
    prompt_ids = [tok(p)["input_ids"] for p in prompts(args.prompts)]
    load = os.getloadavg()[0]

    start = time.perf_counter()
    vllm_engine = VLLMEngine(
        model,
        tok,
        seed=0,
        max_model_len=max(args.lengths) + 64,
        kv_cache_gib=1.0,
        enforce_eager=not args.vllm_compile,
    )
    startup = time.perf_counter() - start
    engines = {"builtin": HFEngine(model, tok, fast_decode=args.fast_decode == "on"), "vllm": vllm_engine}
    results = []
    for length in args.lengths:
        params = SamplingParams(n=args.group, max_new_tokens=length, seed=0)
        for engine in engines.values():  # warm-up
            engine.generate(prompt_ids, params)
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.repeats):
            for name, engine in engines.items():
                seconds, tokens = timed_generate(engine, prompt_ids, params)
                assert tokens == args.prompts * args.group * length, tokens
                rates[name].append(tokens / seconds)
        row = {
            "length": length,
            **{f"{name}_tok_per_s": statistics.median(r) for name, r in rates.items()},
            "rates": rates,
        }
        row["vllm_over_builtin"] = row["vllm_tok_per_s"] / row["builtin_tok_per_s"]
        results.append(row)
        print(
            f"L={length}: builtin {row['builtin_tok_per_s']:.0f} tok/s, vllm {row['vllm_tok_per_s']:.0f} tok/s, "
            f"vllm/builtin {row['vllm_over_builtin']:.2f}x",
            flush=True,
        )
    vllm_engine.close()
    load_end = os.getloadavg()[0]
    summary = {
        "model": args.model,
        "params": sum(p.numel() for p in model.parameters()),
        "batch": f"{args.prompts} prompts x G {args.group}",
        "threads": args.threads,
        "vllm_startup_s": startup,
        "load_start": load,
        "load_end": load_end,
        "results": results,
    }
    print(f"vLLM start-up {startup:.1f} s; load average {load:.1f} -> {load_end:.1f}")
    print("BENCH_RESULT " + json.dumps(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
