"""thinkrl's GRPOTrainer vs TRL's GRPOTrainer on the same work, side by side, on CPU.

    .venv/bin/python benchmarks/bench_trl.py --quick            # 4M params, 64-token completions
    .venv/bin/python benchmarks/bench_trl.py                    # 4M and 30M x 64 and 256 tokens
    .venv/bin/python benchmarks/bench_trl.py --configs 30M/256 --steps 5 --warmup 1 --json-out r.json
    .venv/bin/python benchmarks/bench_trl.py --configs 4M/64 --vocab 32768   # a real-size LM head (memory)
    python benchmarks/bench_trl.py --device cuda --autocast bf16              # on a GPU: benchmarks/gpu.sh

The driver builds one tiny random Qwen2 per model size (``build_model``), saves it once with
``save_pretrained`` into a temporary folder, then runs each framework in its own process from that folder:
thinkrl from ``.venv`` and TRL 1.16 from ``.venv-trl`` (``bash benchmarks/setup_trl.sh`` creates it; the TRL
side is skipped with a note if it is missing). Each worker prints one ``BENCH_RESULT {json}`` line.

Same work on both sides: 8 prompts x G=8 completions of exactly L tokens, temperature 1, no top-p/top-k;
one generation per optimizer step, mu=1 (on-policy: neither computes old log-probs), micro-batches of 8
completions, beta=0.04 with the k3 KL estimator (so both run a reference forward), token-mean loss
aggregation (thinkrl ``algorithm.loss_agg=token_mean`` <-> TRL ``loss_type="dapo"``), clip 0.2, group-scaled
advantages, AdamW (``torch.optim.AdamW``, lr 1e-6, betas 0.9/0.999, no weight decay, constant lr),
grad-norm clip 1.0, fp32, no gradient checkpointing, the same number of torch threads.

Exactly L tokens per completion: the tokenizer's EOS id (the last id) lies outside the model's output
vocabulary (``vocab_size = len(tokenizer) - 1``), so neither sampler can ever draw it and every completion
runs to ``max_new_tokens``. Both frameworks still treat it as their stop token; nothing is patched. The reward
(the fraction of vowels in the completion) is cheap and varies within each group, so advantages and
gradients are real.

Reported per framework (median over the measured steps, after the warm-up steps):
  s/step      wall time of one step: generate, reward, reference forward, update (thinkrl: around
              ``train_step()``; TRL: ``on_step_begin`` -> ``on_step_end`` of a ``TrainerCallback``)
  gen tok/s   completion tokens / time inside generation (thinkrl ``time/generate``; TRL ``_generate_single_turn``)
  train tok/s completion tokens / (step time - generation time): reference forward + update throughput
  RSS         peak resident memory of the worker process (``getrusage`` maxrss); with ``--device cuda``
              the peak GPU memory torch allocated (``torch.cuda.max_memory_allocated``)
  floor       the step's FLOP floor at the measured matmul peak: 2*params*(prompt + completion tokens
              generated) + 6*params*N*(Lp + L) for the update + 2*params*N*(Lp + L) for the reference, divided
              by the best FLOP/s of a 1024x1024 fp32 matmul loop timed in the same run (at the start, before
              every worker and at the end: on a shared machine the rate moves with the load); attention ignored
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Each side's interpreter; benchmarks/gpu.sh points both at one CUDA venv.
THINKRL_PY = Path(os.environ.get("THINKRL_PYTHON", ROOT / ".venv" / "bin" / "python"))
TRL_PY = Path(os.environ.get("TRL_PYTHON", ROOT / ".venv-trl" / "bin" / "python"))
MARK = "BENCH_RESULT "

MODELS = {"4M": (256, 4), "30M": (512, 8)}  # name -> (hidden, layers); intermediate 4 x hidden, head dim 64
PROMPT_CHARS = 32  # every prompt is exactly this many tokens, so padding is identical on both sides
QUESTIONS = [
    "What is 7 + 5? Think step by step",
    "Solve: 12 * 3 = ?",
    "Reverse the word reasoning.",
    "Is 91 a prime number? Explain.",
    "Count the letters in banana.",
    "Compute 2 + 2 * 2 carefully.",
    "Name three colors of the sky.",
    "Sort 5 3 9 1 in ascending order",
]


# ---------------------------------------------------------------------------------------------- shared set-up
def build_tokenizer(vocab_size: int = 0) -> Any:
    """A character-level tokenizer: ``<pad>``=0, ``<bos>``=1, 95 printable characters, then ``<eos>`` last.

    ``vocab_size`` > 98 adds filler tokens ``<k>`` before ``<eos>`` until the model's output vocabulary (every
    id but EOS) has ``vocab_size`` entries: a real-size LM head (e.g. 32,768) for the memory comparison. Input
    text never produces them (one token per character); sampled, they decode to ``<k>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1}
    for c in string.printable[:95]:
        vocab.setdefault(c, len(vocab))
    while len(vocab) < vocab_size:
        vocab[f"<{len(vocab)}>"] = len(vocab)
    vocab["<eos>"] = len(vocab)  # the last id: outside the model's output vocabulary (see build_model)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )


def build_model(hidden: int, layers: int, tokenizer: Any, seed: int = 0) -> Any:
    """A random fp32 Qwen2 whose output vocabulary excludes the tokenizer's EOS, so no completion ever stops."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    heads = max(hidden // 64, 1)
    config = Qwen2Config(
        vocab_size=len(tokenizer) - 1,  # ids 0 .. eos-1: the EOS logit does not exist
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen2ForCausalLM(config).float()


def prompts(k: int) -> list[str]:
    """``k`` prompts, cycling through QUESTIONS, each exactly PROMPT_CHARS characters (= tokens)."""
    return [QUESTIONS[i % len(QUESTIONS)].ljust(PROMPT_CHARS)[:PROMPT_CHARS] for i in range(k)]


def vowel_fraction(prompts: list[str], completions: list, **kwargs: Any) -> list[float]:
    """Reward: the fraction of vowels in the completion (cheap, and it varies within a group)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(ch in "aeiouAEIOU" for ch in t) / max(len(t), 1) for t in texts]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def matmul_peak_flops(
    threads: int, seconds: float = 1.0, rounds: int = 3, device: str = "cpu", dtype: str = "float32"
) -> float:
    """Best FLOP/s of back-to-back square matmuls (``torch.mm`` into a preallocated output): 1024² on CPU,
    8192² on CUDA (a GPU needs a bigger problem to reach its peak); ``dtype`` the benchmark's compute dtype."""
    import torch

    torch.set_num_threads(threads)
    size = 8192 if device == "cuda" else 1024
    kw = {"device": device, "dtype": getattr(torch, dtype)}
    a, b, out = torch.randn(size, size, **kw), torch.randn(size, size, **kw), torch.empty(size, size, **kw)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(rounds):
        sync()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b, out=out)
            n += 1
            if n % 8 == 0:
                sync()
        sync()
        best = max(best, 2 * size**3 * n / (time.perf_counter() - start))
    return best


def sync(device: str) -> None:
    """Wait for queued GPU work, so a wall-clock time covers it (a no-op on CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    """Peak memory of this process, MiB: resident (CPU) or allocated by torch on the GPU (CUDA)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mib()


def step_flops(params: int, num_prompts: int, group: int, prompt_len: int, length: int, beta: float) -> float:
    """FLOPs of the tokens one step must process (dense matmuls only): see the module docstring."""
    n = num_prompts * group
    gen = 2 * params * (num_prompts * prompt_len + n * length)
    seq = n * (prompt_len + length)
    return gen + 6 * params * seq + (2 * params * seq if beta > 0 else 0)


def summarize(
    step_times: list[float], gen_times: list[float], gen_tokens: list[int], warmup: int, device: str = "cpu"
) -> dict:
    """Medians over the steps after ``warmup``."""
    s, g, tok = step_times[warmup:], gen_times[warmup:], gen_tokens[warmup:]
    return {
        "s_per_step": statistics.median(s),
        "gen_s": statistics.median(g),
        "gen_tok_per_s": statistics.median(t / x for t, x in zip(tok, g)),
        "train_tok_per_s": statistics.median(t / (a - b) for t, a, b in zip(tok, s, g)),
        "tokens_per_step": statistics.median(tok),
        "step_times": step_times,
        "peak_rss_mib": peak_memory_mib(device),
    }


# -------------------------------------------------------------------------------------------------- workers
def thinkrl_overrides(args: argparse.Namespace) -> list[str]:
    """thinkrl's config for the benchmark's work (see the module docstring), as ``key=value`` overrides."""
    steps = args.warmup + args.steps
    return [
            f"rollout.group_size={args.group}",
            f"rollout.prompts_per_step={args.prompts}",
            f"rollout.max_new_tokens={args.length}",
            "rollout.temperature=1.0",
            "rollout.top_p=1.0",
            "rollout.top_k=0",
            "algorithm.advantage=grpo",
            "algorithm.loss=ppo_clip",
            "algorithm.clip_low=0.2",
            "algorithm.clip_high=0.2",
            "algorithm.loss_agg=token_mean",
            f"algorithm.beta={args.beta}",
            "algorithm.kl_estimator=k3",
            "algorithm.ppo_epochs=1",
            "algorithm.num_minibatches=1",
            f"train.steps={steps}",
            f"train.lr={args.lr}",
            "train.weight_decay=0.0",
            "train.max_grad_norm=1.0",
            f"train.micro_batch_size={args.micro_batch}",
            f"train.num_threads={args.threads}",
            f"train.device={args.device}",
            f"train.autocast={args.autocast}",
            f"train.output_dir={args.out_dir}",
            "model.dtype=float32",
            "model.gradient_checkpointing=false",
            "data.template=plain",
            "log.progress=false",
    ]  # fmt: skip


def run_thinkrl(args: argparse.Namespace) -> dict:
    """thinkrl's GRPOTrainer, one ``train_step()`` at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinkrl.config import load_config
    from thinkrl.train.trainer import GRPOTrainer

    torch.set_num_threads(args.threads)
    steps = args.warmup + args.steps
    cfg = load_config(None, [*thinkrl_overrides(args), *args.thinkrl_set])
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    rows = [{"question": p, "answer": ""} for p in prompts(args.prompts)]
    trainer = GRPOTrainer(
        cfg, model=model, tokenizer=tokenizer, reward_funcs=[vowel_fraction], train_rows=rows
    )
    step_times, gen_times, gen_tokens, stages, rewards = [], [], [], [], []
    for _ in range(steps):
        start = time.perf_counter()
        m = trainer.train_step()
        sync(args.device)
        step_times.append(time.perf_counter() - start)
        gen_times.append(m["time/generate"])
        gen_tokens.append(round(m["completion/len_mean"] * m["completions"]))
        rewards.append(m["reward/mean"])
        stages.append({k: m[k] for k in m if k.startswith("time/")})
    out = summarize(step_times, gen_times, gen_tokens, args.warmup, args.device)
    keys = stages[0].keys()
    out["stages"] = {k: statistics.median(s[k] for s in stages[args.warmup :]) for k in keys}
    out["completion_len_mean"] = m["completion/len_mean"]
    out["rewards"] = rewards  # mean reward of each step's samples, warm-up included (curve_trl.py)
    out["params"] = sum(p.numel() for p in trainer.model.parameters())
    out["threads"] = torch.get_num_threads()
    return out


def run_trl(args: argparse.Namespace) -> dict:
    """TRL's GRPOTrainer with a TrainerCallback timing each optimizer step."""
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    steps = args.warmup + args.steps
    n = args.prompts * args.group
    config = GRPOConfig(
        output_dir=str(args.out_dir),
        use_cpu=args.device == "cpu",
        bf16=args.autocast == "bf16",  # accelerate's mixed precision: autocast, float32 weights, as thinkrl's
        fp16=False,
        gradient_checkpointing=False,
        max_steps=steps,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=n // args.micro_batch,
        generation_batch_size=n,  # one generation per optimizer step: steps_per_generation = accumulation
        num_generations=args.group,
        max_completion_length=args.length,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        num_iterations=1,
        beta=args.beta,
        epsilon=0.2,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        log_completions=False,
        use_vllm=False,
        dataloader_num_workers=0,
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    dataset = Dataset.from_dict({"prompt": prompts(args.prompts * steps)})

    step_times: list[float] = []
    gen_times: list[float] = []
    gen_tokens: list[int] = []
    prep_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.start = time.perf_counter()
            gen_times.append(0.0)
            prep_times.append(0.0)
            gen_tokens.append(0)

        def on_step_end(self, *a: Any, **k: Any) -> None:
            sync(args.device)
            step_times.append(time.perf_counter() - self.start)

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=vowel_fraction,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    torch.set_num_threads(args.threads)

    generate = trainer._generate_single_turn
    prepare = trainer._generate_and_score_completions

    def timed_generate(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        completion_ids, logprobs = generate(*a, **k)
        gen_times[-1] += time.perf_counter() - start
        gen_tokens[-1] += sum(len(c) for c in completion_ids)
        return completion_ids, logprobs

    def timed_prepare(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        out = prepare(*a, **k)
        prep_times[-1] += time.perf_counter() - start
        return out

    trainer._generate_single_turn = timed_generate  # timing wrappers only; the work is TRL's own
    trainer._generate_and_score_completions = timed_prepare
    trainer.train()
    out = summarize(step_times, gen_times, gen_tokens, args.warmup, args.device)
    w = args.warmup
    out["stages"] = {
        "generate": statistics.median(gen_times[w:]),
        "score_and_ref": statistics.median(p - g for p, g in zip(prep_times[w:], gen_times[w:])),
        "update": statistics.median(s - p for s, p in zip(step_times[w:], prep_times[w:])),
    }
    lengths = [
        h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h
    ]
    out["completion_len_mean"] = lengths[-1] if lengths else None
    out["rewards"] = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    out["params"] = sum(p.numel() for p in trainer.model.parameters())
    out["threads"] = torch.get_num_threads()
    out["trl_version"] = trl.__version__
    return out


# --------------------------------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The driver's flags, plus the hidden ones a worker process is started with."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="only the 4M/64 configuration")
    p.add_argument("--configs", default="4M/64,4M/256,30M/64,30M/256", help="MODEL/LENGTH, comma-separated")
    p.add_argument("--frameworks", default="thinkrl,trl", help="comma-separated subset of thinkrl,trl")
    p.add_argument("--steps", type=int, default=5, help="measured steps (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps, not measured")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in every process (1: stable under a shared, loaded machine; OpenMP barriers stall "
        "when other processes hold the cores)",
    )
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    p.add_argument("--micro-batch", type=int, default=8, help="completions per forward/backward")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (TRL's old default)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument(
        "--vocab",
        type=int,
        default=0,
        help="output vocabulary size (0: the 97 characters); e.g. 32768 for a real-size LM head (memory)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both frameworks run")
    p.add_argument(
        "--autocast",
        choices=("none", "bf16"),
        default="none",
        help="bf16: mixed precision on both sides (thinkrl train.autocast=bf16, TRL bf16=True); for GPUs",
    )
    p.add_argument(
        "--thinkrl-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra thinkrl config override, repeatable (A/B runs, e.g. train.fused_lm_head=false)",
    )
    p.add_argument("--timeout", type=int, default=1800, help="seconds per worker process")
    p.add_argument("--json-out", type=Path, default=None, help="also write all results as JSON here")
    # internal: one worker run
    p.add_argument("--worker", choices=("thinkrl", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker_command(
    python: Path, framework: str, model_dir: Path, length: int, args: argparse.Namespace, out_dir: Path
) -> list[str]:
    """The command line of one worker process: the driver's settings, passed on."""
    return [
        str(python), str(Path(__file__).resolve()), "--worker", framework, "--model-dir", str(model_dir),
        "--length", str(length), "--out-dir", str(out_dir), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads), "--prompts", str(args.prompts), "--group", str(args.group),
        "--micro-batch", str(args.micro_batch), "--beta", str(args.beta), "--lr", str(args.lr),
        "--device", args.device, "--autocast", args.autocast,
        *[f"--thinkrl-set={kv}" for kv in args.thinkrl_set],
    ]  # fmt: skip


def launch(
    python: Path, framework: str, model_dir: Path, length: int, args: argparse.Namespace, tmp: Path
) -> dict:
    """Run one worker process; return its JSON result, or ``{"error": ...}``."""
    out_dir = tmp / f"run-{framework}-{model_dir.name}-{length}"
    cmd = worker_command(python, framework, model_dir, length, args, out_dir)
    # ROOT first, then whatever PYTHONPATH already held (e.g. a folder of wheels installed with --target)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false", "WANDB_DISABLED": "true"}
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            result = json.loads(line[len(MARK) :])
            result["wall_s"] = time.perf_counter() - start
            return result
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"error": f"exit {proc.returncode}: {tail}"}


def main(argv: list[str] | None = None) -> int:
    """Driver: run every configuration x framework, print the table and ratios. Worker: run one, print JSON."""
    args = parse_args(argv)
    if args.worker:
        out = run_thinkrl(args) if args.worker == "thinkrl" else run_trl(args)
        print(MARK + json.dumps(out), flush=True)
        return 0

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but this torch sees no CUDA device (torch.cuda.is_available() is False)")
        return 2
    configs = ["4M/64"] if args.quick else [c.strip() for c in args.configs.split(",") if c.strip()]
    frameworks = [f.strip() for f in args.frameworks.split(",")]
    pythons = {"thinkrl": THINKRL_PY if THINKRL_PY.exists() else Path(sys.executable), "trl": TRL_PY}
    if "trl" in frameworks and not TRL_PY.exists():
        print("note: .venv-trl is missing (run `bash benchmarks/setup_trl.sh`); TRL is skipped", flush=True)
        frameworks.remove("trl")

    load = os.getloadavg()
    dtype = "bfloat16" if args.autocast == "bf16" else "float32"
    peak = matmul_peak_flops(args.threads, device=args.device, dtype=dtype)
    print(
        f"nproc {os.cpu_count()}, torch threads {args.threads}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s ({args.device}, {dtype}), vocabulary {args.vocab or 97}",
        flush=True,
    )
    results: list[dict] = []
    tokenizer = build_tokenizer(args.vocab)
    with tempfile.TemporaryDirectory(prefix="thinkrl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        saved: dict[str, Path] = {}
        for config in configs:
            name, length = config.split("/")
            if name not in saved:  # the same initial weights for both frameworks and every length
                hidden, layers = MODELS[name]
                saved[name] = tmp / f"model-{name}"
                build_model(hidden, layers, tokenizer).save_pretrained(saved[name])
                tokenizer.save_pretrained(saved[name])
            for framework in frameworks:
                # On a shared machine the matmul rate moves with the load: the "peak" is the best one seen.
                peak = max(peak, matmul_peak_flops(args.threads, 0.5, 2, args.device, dtype))
                load = os.getloadavg()[0]
                r = launch(pythons[framework], framework, saved[name], int(length), args, tmp)
                r.update(config=config, framework=framework, load_before=load, load_after=os.getloadavg()[0])
                if "error" not in r:
                    r["floor_flops"] = step_flops(
                        r["params"], args.prompts, args.group, PROMPT_CHARS, int(length), args.beta
                    )
                results.append(r)
                if args.json_out:  # after every worker: a run cut short keeps what it measured
                    args.json_out.write_text(json.dumps({"torch": torch.__version__, "results": results}))
                text = (
                    r.get("error")
                    or f"{r['s_per_step']:.2f} s/step, len {r['completion_len_mean']}, {r['stages']}"
                )
                print(
                    f"  {config:8s} {framework:8s} {text}  (load {load:.2f} -> {r['load_after']:.2f})",
                    flush=True,
                )
    peak = max(peak, matmul_peak_flops(args.threads, device=args.device, dtype=dtype))
    for r in results:  # every floor at the best matmul rate seen in the whole run
        if "floor_flops" in r:
            r["floor_s"] = r["floor_flops"] / peak
            r["over_floor"] = r["s_per_step"] / r["floor_s"]
    print_table(results, configs)
    print(f"matmul peak (best seen in this run) {peak / 1e9:.1f} GFLOP/s; load average now {os.getloadavg()}")
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"peak_flops": peak, "torch": torch.__version__, "results": results})
        )
    return 0 if all("error" not in r for r in results) else 1


def print_table(results: list[dict], configs: list[str]) -> None:
    """The per-framework table, then the thinkrl/TRL ratios per configuration."""
    head = f"| {'config':8s} | {'framework':9s} | params | s/step | gen tok/s | train tok/s | RSS MiB | floor s | step/floor | load |"
    print("\n" + head + "\n|" + "---|" * 10)
    for r in results:
        if "error" in r:
            print(f"| {r['config']:8s} | {r['framework']:9s} | error: {r['error'][:60]} |")
            continue
        print(
            f"| {r['config']:8s} | {r['framework']:9s} | {r['params'] / 1e6:.1f}M | {r['s_per_step']:.2f} | "
            f"{r['gen_tok_per_s']:.0f} | {r['train_tok_per_s']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['floor_s']:.2f} | {r['over_floor']:.1f}x | {r['load_before']:.1f} |"
        )
    print("\nthinkrl / TRL (step time < 1 and tok/s > 1 mean thinkrl is faster)\n")
    print("| config | step time | gen tok/s | train tok/s | peak RSS |\n|---|---|---|---|---|")
    for config in configs:
        by = {r["framework"]: r for r in results if r["config"] == config and "error" not in r}
        if "thinkrl" in by and "trl" in by:
            a, b = by["thinkrl"], by["trl"]
            print(
                f"| {config} | {a['s_per_step'] / b['s_per_step']:.2f} | {a['gen_tok_per_s'] / b['gen_tok_per_s']:.2f} | "
                f"{a['train_tok_per_s'] / b['train_tok_per_s']:.2f} | {a['peak_rss_mib'] / b['peak_rss_mib']:.2f} |"
            )


if __name__ == "__main__":
    sys.exit(main())
