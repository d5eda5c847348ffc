"""Memory of one GRPO step: full fine-tuning vs LoRA (r=16, every linear layer) on a ~48M-parameter Llama.

    .venv/bin/python benchmarks/bench_lora_memory.py [--beta 0.001] [--rank 16]

Each mode runs in its own fresh process (peak RSS is per process): build the model locally (no download),
construct ``GRPOTrainer`` and run one ``train_step`` (2 prompts x 4 completions of 16 tokens, beta > 0, so full
fine-tuning also holds the frozen reference copy that LoRA replaces by the adapters-off base). Printed per
mode: peak RSS of the process, its growth from before the trainer was built, and the bytes held by the
parameters, gradients, AdamW state and reference model after the step; then the LoRA / full ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile

# ~48M parameters: 9 layers of hidden 768 (MLP 1536, 12 heads, 6 KV heads), a 14-token character vocabulary
MODEL = dict(hidden=768, layers=9, heads=12)


def rss_mib() -> float:
    """Resident set size of this process now, in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def tensor_mib(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def child(mode: str, beta: float, rank: int) -> dict:
    """One GRPO step in this process; returns the memory figures (MiB)."""
    import torch

    from thinkrl.config import load_config
    from thinkrl.testing import char_tokenizer, tiny_model
    from thinkrl.train import GRPOTrainer

    tok = char_tokenizer("0123456789=")
    model = tiny_model("llama", len(tok), **MODEL)
    n_params = sum(p.numel() for p in model.parameters())
    before = rss_mib()
    rows = [{"question": str(i), "answer": str(i)} for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [
            "data.template='{question}='", "rollout.group_size=4", "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=16", "rollout.stop_strings=[]", "log.progress=false", "train.num_threads=1",
            f"train.output_dir={tmp}", f"algorithm.beta={beta}", "train.micro_batch_size=8",
            f"model.lora_r={rank if mode == 'lora' else 0}", f"model.lora_alpha={2 * rank}",
        ])  # fmt: skip
        trainer = GRPOTrainer(
            cfg, model=model, tokenizer=tok, train_rows=rows,
            reward_funcs=[lambda prompts, completions, **kw: [c.count("7") / 16 for c in completions]],
        )  # fmt: skip
        trainer.train_step()
    params = list(trainer.model.parameters())
    state = [v for s in trainer.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "mode": mode,
        "params_M": n_params / 1e6,
        "trainable_M": sum(p.numel() for p in trainer.trainable) / 1e6,
        "peak_rss_mib": peak,
        "rss_growth_mib": peak - before,
        "params_mib": tensor_mib(params),
        "grads_mib": tensor_mib([p.grad for p in params if p.grad is not None]),
        "adam_state_mib": tensor_mib(state),
        "reference_mib": tensor_mib(trainer.reference.parameters()) if trainer.reference is not None else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--beta", type=float, default=0.001, help="KL weight (> 0: full FT keeps a reference copy)"
    )
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank")
    ap.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.beta, args.rank)))
        return
    results = {}
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, "--child", mode, "--beta", str(args.beta), "--rank", str(args.rank)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    keys = ["params_M", "trainable_M", "peak_rss_mib", "rss_growth_mib", "params_mib", "grads_mib",
            "adam_state_mib", "reference_mib"]  # fmt: skip
    print(f"{'':16}{'full':>12}{'lora r=' + str(args.rank):>12}{'lora/full':>11}")
    for k in keys:
        f, lo = results["full"][k], results["lora"][k]
        ratio = f"{lo / f:10.3f}" if f else f"{'-':>10}"
        print(f"{k:16}{f:12.2f}{lo:12.2f} {ratio}")


if __name__ == "__main__":
    main()
