"""What a run will cost, from its config alone: tokens, FLOPs and GPU-hours (``thinkrl estimate CONFIG``).

The formula (docs/visibility.md has the derivation and every assumption):

* A forward pass costs ``2 N`` FLOPs per token (N = matmul parameters a token passes through: every linear
  layer and the LM head; for a mixture of experts only the routed top-k and shared experts) plus attention
  ``2 L h (d_qk + d_v) c`` for a token that attends to ``c`` earlier tokens (L layers, h heads).
* Backward costs twice the forward, so a training pass is 3x a forward pass (4x with activation checkpointing).
* One step = generate G completions for each of P prompts (forward per token, each prompt prefilled once per
  group) -> old log-prob pass when the update is off-policy -> reference pass when beta > 0 ->
  ``ppo_epochs`` training passes; the prompt is counted once per group in the scoring passes when
  ``train.share_prompt`` is on, else once per completion. Periodic evaluation adds k samples per problem.
* GPU-hours = FLOPs / (peak dense BF16 FLOP/s x utilisation) / 3600.

>>> shape = ModelShape("toy", matmul_params=1e6, layers=2, heads=2, qk_dim=8, v_dim=8)
>>> forward_flops(shape, tokens=10, context=0)  # 2 N per token, no attention without context
20000000.0
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkrl.core import resolve_model_path

# Dense BF16 tensor-core peaks (without 2:4 sparsity, which NVIDIA's headline numbers double).
GPUS: dict[str, tuple[float, str]] = {
    "H100": (
        989.4e12,
        "H100 SXM5: NVIDIA H100 datasheet, BF16 tensor 1,979 TFLOPS with sparsity -> 989 dense",
    ),
    "H200": (
        989.4e12,
        "H200 SXM: NVIDIA H200 datasheet, BF16 tensor 1,979 TFLOPS with sparsity -> 989 dense",
    ),
    "H800": (989.4e12, "H800 SXM5: the H100's GH100 die with NVLink cut to 400 GB/s; same tensor throughput"),
    "A100": (312e12, "A100 SXM4: NVIDIA A100 datasheet, BF16 tensor 312 TFLOPS dense (624 with sparsity)"),
}
# thinkrl's built-in tiny base model (``model.path: demo``); the bottom layer's alias points at the same folder.
# DeepSeek-V3's published shape (its config.json; 671B total, 37B activated per token, arXiv 2412.19437).
DEEPSEEK_V3 = {
    "model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "intermediate_size": 18432, "moe_intermediate_size": 2048, "n_routed_experts": 256,
    "num_experts_per_tok": 8, "n_shared_experts": 1, "first_k_dense_replace": 3, "vocab_size": 129280,
    "tie_word_embeddings": False,
}  # fmt: skip
NAMED_SHAPES = {"deepseek-v3": DEEPSEEK_V3}


class EstimateError(ValueError):
    """The model's shape cannot be found or the inputs are inconsistent; the message names the fix."""


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs from a model."""

    name: str
    matmul_params: float
    """Parameters each token multiplies through (linear layers + LM head; activated experts only)."""
    layers: int
    heads: int
    qk_dim: int
    """Per-head query/key width (MLA: nope + rope part)."""
    v_dim: int
    total_params: float = 0.0
    """Every parameter (all experts, embeddings): what must be held in memory."""


def shape_from_config(c: dict[str, Any], name: str = "model") -> ModelShape:
    """Count parameters from a Hugging Face ``config.json`` (Llama/Qwen/Mistral-style dense, GPT-2, Mixtral /
    Qwen-MoE, DeepSeek-V2/V3 MLA + MoE).

    >>> s = shape_from_config({"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    ...                        "intermediate_size": 16, "vocab_size": 10, "tie_word_embeddings": True})
    >>> s.matmul_params  # attention 4*8*8 + gated MLP 3*8*16 + LM head 10*8
    720.0
    """
    try:
        h, n_layers = c.get("hidden_size", c.get("n_embd")), c.get("num_hidden_layers", c.get("n_layer"))
        heads = c.get("num_attention_heads", c.get("n_head"))
        vocab = c["vocab_size"]
    except KeyError as e:
        raise EstimateError(
            f"config of {name!r} has no {e.args[0]!r}; is it a causal LM's config.json?"
        ) from None
    if None in (h, n_layers, heads):
        raise EstimateError(f"config of {name!r} lacks hidden_size / num_hidden_layers / num_attention_heads")
    if "kv_lora_rank" in c:  # multi-head latent attention (DeepSeek-V2/V3)
        qk, v = c["qk_nope_head_dim"] + c["qk_rope_head_dim"], c["v_head_dim"]
        q = (
            h * heads * qk
            if not c.get("q_lora_rank")
            else h * c["q_lora_rank"] + c["q_lora_rank"] * heads * qk
        )
        kv = h * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) + c["kv_lora_rank"] * heads * (
            c["qk_nope_head_dim"] + v
        )
        attn = q + kv + heads * v * h
    else:
        qk = v = c.get("head_dim") or h // heads
        kv_heads = c.get("num_key_value_heads") or heads
        attn = h * heads * qk + 2 * h * kv_heads * qk + heads * qk * h
    gated = c.get("model_type") != "gpt2" and "n_inner" not in c
    ffn = c.get("intermediate_size") or c.get("n_inner") or 4 * h
    mlp_dense = (3 if gated else 2) * h * ffn
    n_experts = c.get("n_routed_experts") or c.get("num_local_experts") or c.get("num_experts") or 0
    if n_experts:
        e_ffn = c.get("moe_intermediate_size") or ffn
        active = c.get("num_experts_per_tok", 2) + (c.get("n_shared_experts") or 0)
        dense_layers = c.get("first_k_dense_replace", 0)
        moe_layers = n_layers - dense_layers
        router = h * n_experts
        mlp_active = dense_layers * mlp_dense + moe_layers * (active * 3 * h * e_ffn + router)
        mlp_total = dense_layers * mlp_dense + moe_layers * (
            (n_experts + (c.get("n_shared_experts") or 0)) * 3 * h * e_ffn + router
        )
    else:
        mlp_active = mlp_total = n_layers * mlp_dense
    head = vocab * h
    tied = c.get("tie_word_embeddings", True)
    matmul = n_layers * attn + mlp_active + head
    total = n_layers * attn + mlp_total + head + (0 if tied else vocab * h)
    return ModelShape(name, float(matmul), n_layers, heads, qk, v, float(total))


def load_shape(path: str, model_config: str | None = None) -> ModelShape:
    """The shape of ``model.path``: a folder with config.json, ``demo`` (the built-in model), a name in
    :data:`NAMED_SHAPES`, a config.json given as ``model_config``, or a hub model already in the local cache."""
    if model_config:
        p = Path(model_config)
        if not p.is_file():
            raise EstimateError(f"--model-config {model_config!r} is not a file; pass a model's config.json")
        return shape_from_config(json.loads(p.read_text()), p.parent.name or model_config)
    if path in NAMED_SHAPES:
        return shape_from_config(NAMED_SHAPES[path], path)
    folder = Path(resolve_model_path(path))
    if (folder / "config.json").is_file():
        return shape_from_config(json.loads((folder / "config.json").read_text()), path)
    try:  # a hub name already downloaded: read its config from the cache, never the network
        from transformers import AutoConfig

        return shape_from_config(AutoConfig.from_pretrained(path, local_files_only=True).to_dict(), path)
    except Exception:  # any failure means the same thing to the user: the shape is not on this machine
        raise EstimateError(
            f"cannot find the shape of model.path={path!r} on this machine; pass --model-config "
            f"path/to/config.json (or a known name: {', '.join(NAMED_SHAPES)})"
        ) from None


def forward_flops(shape: ModelShape, tokens: float, context: float) -> float:
    """Forward FLOPs of ``tokens`` tokens whose attention contexts sum to ``context`` (tokens attended)."""
    return (
        2 * shape.matmul_params * tokens
        + 2 * shape.layers * shape.heads * (shape.qk_dim + shape.v_dim) * context
    )


@dataclass
class Workload:
    """One step's shape, from the config (lengths are means per sequence)."""

    prompts: int
    group: int
    prompt_tokens: float
    completion_tokens: float
    steps: int
    ppo_epochs: int = 1
    num_minibatches: int = 1
    reference: bool = True
    share_prompt: bool = True
    checkpointing: bool = False
    eval_runs: int = 0
    eval_problems: int = 0
    eval_k: int = 0
    eval_completion_tokens: float = 0.0
    notes: list[str] = field(default_factory=list)


def step_costs(shape: ModelShape, w: Workload) -> dict[str, float]:
    """FLOPs per step by phase (generate, old_logp, ref_logp, train), and the step's token counts."""
    P, B, Lp, Lc = w.prompts, w.prompts * w.group, w.prompt_tokens, w.completion_tokens
    # generation: each prompt prefilled once (causal: sum of contexts Lp^2/2), then B completions of Lc tokens
    # that each see the prompt and the completion so far
    gen = forward_flops(shape, P * Lp, P * Lp * Lp / 2) + forward_flops(
        shape, B * Lc, B * (Lc * Lp + Lc * Lc / 2)
    )
    prompt_rows = P if w.share_prompt else B
    score = forward_flops(shape, prompt_rows * Lp, prompt_rows * Lp * Lp / 2) + forward_flops(
        shape, B * Lc, B * (Lc * Lp + Lc * Lc / 2)
    )
    on_policy = w.ppo_epochs == 1 and w.num_minibatches == 1
    return {
        "generate": gen,
        "old_logp": 0.0 if on_policy else score,
        "ref_logp": score if w.reference else 0.0,
        "train": w.ppo_epochs * (4 if w.checkpointing else 3) * score,
        "tokens_generated": B * Lc,
        "tokens_trained": w.ppo_epochs * (prompt_rows * Lp + B * Lc),
    }


def run_costs(shape: ModelShape, w: Workload) -> dict[str, float]:
    """Per-run totals: the steps' phases times ``steps``, plus evaluation."""
    step = step_costs(shape, w)
    out = {k: v * w.steps for k, v in step.items()}
    n = w.eval_problems * w.eval_k
    Lp, Le = w.prompt_tokens, w.eval_completion_tokens
    one_eval = forward_flops(shape, w.eval_problems * Lp, w.eval_problems * Lp * Lp / 2) + forward_flops(
        shape, n * Le, n * (Le * Lp + Le * Le / 2)
    )
    out["eval"] = w.eval_runs * one_eval
    out["total"] = sum(out[k] for k in ("generate", "old_logp", "ref_logp", "train", "eval"))
    out["step_total"] = sum(step[k] for k in ("generate", "old_logp", "ref_logp", "train"))
    return out


def gpu_hours(flops: float, gpu: str, utilisation: float) -> float:
    """Hours of one GPU at ``utilisation`` of its dense BF16 peak."""
    if gpu not in GPUS:
        raise EstimateError(f"unknown GPU {gpu!r}; valid: {', '.join(GPUS)}")
    if not 0 < utilisation <= 1:
        raise EstimateError(f"utilisation={utilisation} must be in (0, 1], e.g. 0.3 for 30% of peak")
    return flops / (GPUS[gpu][0] * utilisation) / 3600


def eval_runs(steps: int, every: int) -> int:
    """Evaluations the trainer runs: before step 1, every ``every`` steps, and after the last step."""
    if every <= 0:
        return 0
    return 1 + steps // every + (1 if steps % every else 0)


def measure_prompt_tokens(cfg: Any, n: int = 256) -> float:
    """Mean tokens of the first ``n`` training prompts, rendered with the run's template and tokenizer."""
    from transformers import AutoTokenizer

    from thinkrl.data.datasets import load_prompts
    from thinkrl.data.templates import render_prompt

    d, m = cfg.data, cfg.model
    path = m.tokenizer_path or m.path
    tok = AutoTokenizer.from_pretrained(resolve_model_path(path), local_files_only=True)
    rows = load_prompts(
        d.train, split=d.split, question_key=d.question_key, answer_key=d.answer_key, max_rows=n
    )
    lengths = [
        len(tok(render_prompt(d.template, r["question"], tok, d.system_prompt))["input_ids"]) for r in rows
    ]
    return sum(lengths) / len(lengths)


def workload_from_config(
    cfg: Any,
    *,
    prompt_tokens: float | None = None,
    completion_tokens: float | None = None,
    eval_problems: int | None = None,
) -> Workload:
    """The step shape of a resolved config. Unset lengths: prompts are measured on the training data when it
    and the tokenizer can be read here (else ``data.max_prompt_tokens``, an upper bound); completions default
    to ``rollout.max_new_tokens`` (an upper bound: every completion reaching the cap)."""
    r, a, ev, notes = cfg.rollout, cfg.algorithm, cfg.eval, []
    if prompt_tokens is None:
        try:
            prompt_tokens = measure_prompt_tokens(cfg)
            notes.append(
                f"prompt length: {prompt_tokens:.0f} tokens, measured on the first 256 training prompts"
            )
        except Exception as e:  # data or tokenizer not on this machine: fall back to the bound, and say why
            prompt_tokens = float(cfg.data.max_prompt_tokens)
            notes.append(f"prompt length: data.max_prompt_tokens={prompt_tokens:.0f} (upper bound; could not "
                         f"measure: {type(e).__name__}: {str(e)[:120]}); set --prompt-tokens")  # fmt: skip
    else:
        notes.append(f"prompt length: {prompt_tokens:.0f} tokens (given)")
    if completion_tokens is None:
        completion_tokens = float(r.max_new_tokens)
        notes.append(f"completion length: rollout.max_new_tokens={r.max_new_tokens} (upper bound: every "
                     "completion reaches the cap); set --completion-tokens to your expected mean")  # fmt: skip
    else:
        notes.append(f"completion length: {completion_tokens:.0f} tokens mean (given)")
    runs = eval_runs(cfg.train.steps, ev.every_steps) if cfg.data.eval or eval_problems else 0
    if runs and eval_problems is None:
        eval_problems = ev.max_problems
        if eval_problems is None and cfg.data.eval and Path(cfg.data.eval).is_file():
            from thinkrl.data.datasets import read_rows

            eval_problems = len(read_rows(cfg.data.eval, "test"))
        if eval_problems is None:
            runs = 0
            notes.append("evaluation not counted: set eval.max_problems or --eval-problems")
    eval_tokens = float(ev.max_new_tokens or r.max_new_tokens)
    # the same expected mean for held-out samples, under the evaluation's own cap
    if completion_tokens < r.max_new_tokens:
        eval_tokens = min(eval_tokens, completion_tokens)
    return Workload(
        prompts=r.prompts_per_step, group=r.group_size, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, steps=cfg.train.steps, ppo_epochs=a.ppo_epochs,
        num_minibatches=a.num_minibatches, reference=a.beta > 0, share_prompt=cfg.train.share_prompt,
        checkpointing=cfg.model.gradient_checkpointing, eval_runs=runs, eval_problems=eval_problems or 0,
        eval_k=ev.k, eval_completion_tokens=eval_tokens, notes=notes,
    )  # fmt: skip


_UNITS = (("Y", 1e24), ("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3))


def _si(x: float) -> str:
    for unit, div in _UNITS:
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.3g}"


def format_estimate(shape: ModelShape, w: Workload, gpu: str = "H100", utilisation: float = 0.3) -> str:
    """The estimate as text: the shape, per-step and per-run tokens and FLOPs by phase, and GPU-hours."""
    step, run = step_costs(shape, w), run_costs(shape, w)
    phases = ("generate", "old_logp", "ref_logp", "train")
    lines = [
        f"model {shape.name}: {_si(shape.matmul_params)} matmul parameters per token "
        f"({_si(shape.total_params)} in total), {shape.layers} layers x {shape.heads} heads",
        f"step: {w.prompts} prompts x G={w.group} = {w.prompts * w.group} completions, "
        f"{w.prompt_tokens:.0f} prompt + {w.completion_tokens:.0f} completion tokens each; "
        f"{w.ppo_epochs} epoch(s) x {w.num_minibatches} minibatch(es); reference pass: "
        f"{'yes' if w.reference else 'no (beta = 0)'}",
        f"tokens per step: {_si(step['tokens_generated'])} generated, {_si(step['tokens_trained'])} trained",
        "FLOPs per step: "
        + ", ".join(f"{k} {_si(step[k])}" for k in phases)
        + f" = {_si(run['step_total'])}",
        f"run: {w.steps} steps -> {_si(run['tokens_generated'])} tokens generated; FLOPs "
        + ", ".join(f"{k} {_si(run[k])}" for k in (*phases, "eval"))
        + f" = {_si(run['total'])}",
        f"GPU-hours on {gpu} ({_si(GPUS[gpu][0])}FLOP/s dense BF16): {_hours(gpu_hours(run['total'], gpu, utilisation))} "
        f"at {utilisation:.0%} utilisation"
        + (f" (floor at 100%: {_hours(gpu_hours(run['total'], gpu, 1.0))})" if utilisation < 1 else ""),
        "assumptions: " + "; ".join(w.notes) if w.notes else "",
    ]
    return "\n".join(x for x in lines if x)


# ------------------------------------------------------------------------------------------ R1-Zero
R1_ZERO_GPU_HOURS = 101_000
"""DeepSeek-R1 (Nature 2025) supplementary, training cost table: R1-Zero took 101K H800 GPU-hours (512 GPUs
for ~198 hours); R1 147K in all (about $294K at $2 per GPU-hour)."""


def r1_zero_workload(completion_tokens: float = 8000, prompt_tokens: float = 256) -> Workload:
    """R1-Zero's published settings in thinkrl's terms: each rollout samples 16 outputs for 512 questions
    (8,192 outputs) and trains on them as 16 minibatches of 32 questions for one epoch; the paper counts the
    10,400 minibatch updates as steps, i.e. 650 rollouts. Reference model (beta = 0.001), replaced every 400
    updates. The mean lengths are assumptions (docs/visibility.md)."""
    return Workload(
        prompts=512, group=16, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, steps=650,
        ppo_epochs=1, num_minibatches=16, reference=True, share_prompt=True,
        notes=[f"mean completion {completion_tokens:.0f} tokens and prompt {prompt_tokens:.0f} tokens over the "
               "run (assumed; the cap was 32,768 then 65,536 tokens)"],
    )  # fmt: skip


def format_r1_zero(
    completion_tokens: float = 8000, prompt_tokens: float = 256, train_utilisation: float = 0.4
) -> str:
    """The estimate for R1-Zero on DeepSeek-V3's shape beside the paper's 101K H800 GPU-hours, and the
    generation utilisation that would close the gap if the other passes ran at ``train_utilisation``."""
    shape = load_shape("deepseek-v3")
    w = r1_zero_workload(completion_tokens, prompt_tokens)
    run = run_costs(shape, w)
    ideal = gpu_hours(run["total"], "H800", 1.0)
    dense = run["total"] - run["generate"]
    dense_hours = gpu_hours(dense, "H800", train_utilisation)
    left = R1_ZERO_GPU_HOURS - dense_hours
    gen_util = gpu_hours(run["generate"], "H800", 1.0) / left if left > 0 else float("nan")
    return "\n".join([
        "DeepSeek-R1-Zero on DeepSeek-V3 (paper settings; see docs/visibility.md)",
        format_estimate(shape, w, "H800", 1.0),
        f"paper: {R1_ZERO_GPU_HOURS:,} H800 GPU-hours. The FLOP count at 100% of peak needs {ideal:,.0f}, "
        f"{ideal / R1_ZERO_GPU_HOURS:.1%} of that: the run averaged about {ideal / R1_ZERO_GPU_HOURS:.1%} of dense "
        f"BF16 peak. Generation is {run['generate'] / run['total']:.0%} of the FLOPs but decodes one token at a "
        f"time per sequence (memory-bound: each step reads the weights and the KV cache for little arithmetic). "
        f"If the scoring and training passes ran at {train_utilisation:.0%} of peak ({dense_hours:,.0f} "
        f"GPU-hours), generation would have run at {gen_util:.1%} of peak to fill the other {left:,.0f}.",
    ])  # fmt: skip
