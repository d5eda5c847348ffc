"""The config tree of ``thinkrl train`` (and the sections other commands share): typed dataclasses, every field
documented with why and the paper's default.

Defaults are the DeepSeek-R1 paper's where it gives one (Nature 2025, supplementary "Training details of
DeepSeek-R1-Zero": lr 3e-6, KL coefficient 0.001, temperature 1.0, 16 samples per question, 32 questions per
step, the 512 samples split into 16 minibatches for one inner epoch, reference replaced every 400 steps).

The reward, monitoring and critic sections live in ``grading.py``, ``monitoring.py`` and ``critic.py``
(re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from thinkrl.config.asynchronous import AsyncConfig
from thinkrl.config.critic import CriticConfig
from thinkrl.config.grading import GradingConfig, RewardSpec, SandboxConfig
from thinkrl.config.monitoring import DoctorConfig, LogConfig
from thinkrl.config.tools import ToolsConfig


@dataclass
class ModelConfig:
    path: str = ""
    """A Hugging Face model folder or hub name; ``demo`` is thinkrl's built-in tiny base model."""
    tokenizer_path: str | None = None
    """Tokenizer folder or name when it differs from ``path``."""
    dtype: str = "float32"
    """Parameter dtype: float32, bfloat16 or float16. fp32 on CPU; bf16 on GPUs that have it."""
    trust_remote_code: bool = False
    """Passed to ``from_pretrained`` for models whose code lives on the hub."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% more compute."""
    attn_implementation: str | None = None
    """``eager``, ``sdpa`` or ``flash_attention_2``; None lets transformers choose."""
    disable_dropout: bool = True
    """Zero every dropout in the policy: dropout would make the trainer's log-probs differ from the sampler's
    for the same weights (TRL's ``disable_dropout``)."""
    lora_r: int = 0
    """LoRA rank; 0 trains every weight. > 0 trains PEFT adapters only (``pip install thinkrl[peft]``) and
    uses the base model with adapters disabled as the KL reference, so no second copy is held in memory."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the adapter's update is scaled by lora_alpha / lora_r."""
    lora_dropout: float = 0.0
    """Dropout on the adapter input. Keep 0 in RL: dropout makes trainer and sampler log-probs differ."""
    lora_target_modules: list[str] = field(default_factory=list)
    """Module names that get adapters (e.g. [q_proj, v_proj]); empty = every linear layer but the lm-head."""


@dataclass
class DataConfig:
    train: str = ""
    """Training prompts: a .jsonl/.json/.parquet/.csv file, a folder saved by ``datasets``, a hub dataset name
    (``name`` or ``name:config``), or ``builtin:demo`` for the demo's arithmetic task."""
    eval: str | None = None
    """Held-out prompts in the same forms (evaluated every ``eval.every_steps``)."""
    split: str = "train"
    """Split to read when ``train`` is a ``datasets`` folder or hub name."""
    question_key: str = "question"
    """Column that holds the problem text."""
    answer_key: str = "answer"
    """Column that holds the gold answer; passed to rewards as ``answer``."""
    template: str = "r1"
    """``r1`` (the R1-Zero template, paper Table 1), ``chat`` (the tokenizer's chat template), ``plain``, or any
    string containing ``{question}``."""
    system_prompt: str | None = None
    """System message for the ``chat`` template."""
    max_prompt_tokens: int = 1024
    """Prompts longer than this are rejected at load time with the row named (never silently cut)."""
    max_rows: int | None = None
    """Use only the first N rows (after shuffling with the run seed)."""


@dataclass
class RolloutConfig:
    engine: str = "builtin"
    """Generation engine: ``builtin`` (transformers model, KV cache; CPU or GPU) or ``vllm`` (vLLM in the
    training process, weights pushed after every optimizer step; needs vLLM: ``make test-vllm`` /
    ``scripts/setup_vllm.sh`` builds ``.venv-vllm``, see docs/scaling.md for which engine to pick)."""
    group_size: int = 16
    """G, completions per prompt (R1: 16)."""
    prompts_per_step: int = 32
    """Unique prompts per step (R1: 32, so 512 completions a step)."""
    temperature: float = 1.0
    """Sampling temperature for rollouts (R1: 1.0). The trainer scores log-probs at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling for rollouts; 1.0 keeps the exact policy distribution."""
    top_k: int = 0
    """Top-k for rollouts; 0 disables."""
    max_new_tokens: int = 1024
    """Completion length cap (R1-Zero used 32,768, later 65,536)."""
    stop_strings: list[str] = field(default_factory=lambda: ["</answer>"])
    """Stop a completion right after any of these (saves compute after the answer closes)."""
    max_batch_size: int | None = None
    """Most prompts the engine decodes at once; None = all prompts of the step."""
    fast_decode: bool = True
    """Built-in engine: decode Llama / Qwen2 / Qwen3 / Mistral models with thinkrl's own decode step
    (``rollout/lean.py``: static KV buffers, no per-step mask building; a CUDA graph per step on GPU) instead of
    the model's forward; other models and LoRA-wrapped ones always use the forward. Same tokens up to float
    rounding (tested)."""
    cuda_graph: bool = False
    """Built-in engine on CUDA, ``fast_decode`` models: replay each decode step as one CUDA graph (removes the
    per-kernel launch cost that dominates small models; finished rows then stay in the batch, masked).
    Off by default until it has run on a GPU: its CPU-side logic is tested, the capture itself is not (no GPU
    was available; ``tests/test_lean.py`` checks it against the model's forward wherever CUDA is visible)."""
    vllm_dtype: str = "auto"
    """vLLM only: weight dtype inside vLLM (float32, bfloat16, float16); ``auto`` = the policy's dtype, so the
    sampler's log-probs match the trainer's up to kernel differences."""
    vllm_gpu_memory_utilization: float = 0.3
    """vLLM on GPU only: fraction of GPU memory vLLM may take (weights + KV cache); the rest is the trainer's."""
    vllm_kv_cache_gib: float = 1.0
    """vLLM on CPU only: KV-cache size in GiB (vLLM's ``VLLM_CPU_KVCACHE_SPACE``); bounds the tokens in flight."""
    vllm_enforce_eager: bool = True
    """vLLM only: skip torch.compile / CUDA graphs. Starts in seconds instead of minutes; False decodes faster
    on GPU for long runs."""
    vllm_max_model_len: int | None = None
    """vLLM only: longest prompt + completion it accepts; None = the model's ``max_position_embeddings``."""
    vllm_sleep: bool = True
    """vLLM on GPU only: sleep mode, which frees vLLM's weights and KV cache while the trainer updates
    and wakes it before the weight push (no effect on CPU, where vLLM has no sleep mode)."""
    vllm_kwargs: dict[str, Any] = field(default_factory=dict)
    """vLLM only: extra keyword arguments for ``vllm.LLM`` (e.g. ``{max_num_seqs: 256}``); they override ours."""
    max_staleness: int = 0
    """0: generate, then train (each batch sampled by the weights it trains). k >= 1: a generator process runs
    ahead and the learner trains on samples drawn by weights at most k updates old (section ``asynchronous``)."""


@dataclass
class AlgorithmConfig:
    advantage: str = "grpo"
    """Advantage estimator: grpo (DeepSeekMath/R1), dr_grpo, rloo, reinforce_pp (group-relative: G >= 2), or
    gae (PPO with a learned critic, the ``critic`` section)."""
    adv_eps: float = 1e-6
    """Added to the group std in ``grpo`` so all-equal groups give 0, not NaN."""
    std_unbiased: bool = True
    """Bessel-corrected group std, as torch.std in TRL and verl."""
    loss: str = "ppo_clip"
    """Policy loss: ppo_clip (GRPO's clipped surrogate), reinforce, cispo, sapo, gmpo, clip_cov, kl_cov
    (formulas, sources and the TRL/verl settings they match: docs/algorithms.md)."""
    loss_options: dict[str, float] = field(default_factory=dict)
    """The selected loss's own hyper-parameters, e.g. ``{sapo_tau_pos: 1.0, sapo_tau_neg: 1.05}``; unset ones
    keep the source's default (``thinkrl.algorithms.loss_options(name)``); one the loss does not take fails."""
    clip_low: float = 0.2
    """PPO clip: the ratio is kept >= 1 - clip_low (DeepSeekMath uses 0.2)."""
    clip_high: float = 0.2
    """PPO clip: the ratio is kept <= 1 + clip_high; DAPO's clip-higher uses 0.28."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 bounding the loss of negative-advantage tokens; None disables."""
    ratio_level: str = "token"
    """``token`` (GRPO) or ``sequence`` (GSPO: one length-normalised ratio per completion)."""
    loss_agg: str = "seq_mean_token_mean"
    """How per-token losses become one number: seq_mean_token_mean (GRPO), token_mean (DAPO),
    seq_mean_token_sum_norm (Dr. GRPO, constant = rollout.max_new_tokens)."""
    beta: float = 0.001
    """KL coefficient to the reference policy (R1: 0.001). 0 loads no reference model."""
    kl_estimator: str = "k3"
    """KL estimator added to the loss: k1, k2 or k3 (the R1 paper's, unbiased and positive)."""
    ref_refresh_steps: int = 0
    """Replace the reference with the current policy every N steps (R1 Nature: 400); 0 never."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (0 = metric only); the starting value when ``entropy_target`` is set."""
    entropy_target: float | None = None
    """Adaptive entropy control (Skywork-OR1): while the mean token entropy (nats) is below this, the bonus is
    applied and its coefficient rises by ``entropy_coef_delta`` a step, else it falls and is not applied;
    counters entropy collapse only when it happens. null keeps ``entropy_coef`` constant (Skywork: 0.2)."""
    entropy_coef_delta: float = 1e-4
    """Adaptive entropy: change of the coefficient per step (Skywork-OR1's 1e-4)."""
    entropy_coef_min: float = 0.0
    """Adaptive entropy: lower bound of the coefficient."""
    entropy_coef_max: float = 0.005
    """Adaptive entropy: upper bound of the coefficient (Skywork-OR1's 0.005), so the bonus cannot explode."""
    ppo_epochs: int = 1
    """mu, passes over each step's samples (R1: 1)."""
    num_minibatches: int = 1
    """Optimizer steps per rollout batch (R1: 16). With 1 minibatch and 1 epoch the update is on-policy and
    the old log-probs equal the current ones, so no extra forward pass is spent on them."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more prompts until the batch is full."""
    max_sampling_rounds: int = 3
    """With dynamic sampling, the most generation rounds per step before training on what there is."""
    mask_truncated: bool = False
    """DAPO overlong filtering: completions cut at max_new_tokens get no loss."""
    tis_cap: float | None = None
    """Truncated importance sampling: weight tokens by min(pi_train/pi_sampler, cap) against engine mismatch
    (the same as is_correction=token_tis with is_high=cap)."""
    is_correction: str | None = None
    """Off-policy correction of the sampler/trainer gap: token_tis, seq_tis (truncate the ratio), token_mask,
    seq_mask (IcePop: zero tokens whose ratio leaves [is_low, is_high]); null disables."""
    is_low: float | None = None
    """Lower bound of the is_correction band; null = the correction's default (tis: none; mask: 0.5)."""
    is_high: float | None = None
    """Upper bound of the is_correction band; null = the correction's default (tis: 2; mask: 5); .inf drops it."""
    gamma: float = 1.0
    """GAE discount over completion tokens (advantage=gae; verl 1.0). 1 with an outcome reward: A_t = R - V_t."""
    lam: float = 1.0
    """GAE lambda (advantage=gae; verl 1.0, TRL's PPO 0.95): lower trades variance for the critic's bias."""


@dataclass
class TrainConfig:
    steps: int = 100
    """Optimizer-update rounds (each: one rollout batch, then ppo_epochs x num_minibatches updates)."""
    lr: float = 3e-6
    """AdamW learning rate (R1: 3e-6 for the 660B model; tiny models need ~1e-4, see configs/)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this; <= 0 disables."""
    warmup_steps: int = 0
    """Linear warm-up of the learning rate over this many optimizer steps."""
    lr_schedule: str = "constant"
    """``constant`` or ``cosine`` (to 10% of lr) after warm-up."""
    share_prompt: bool = True
    """Run each prompt forward once per micro-batch and reuse its KV cache for all its completions in the
    training, old and reference passes: the same values and gradients, far fewer FLOPs when prompts are long
    (G completions share one prompt). Off automatically with gradient checkpointing: transformers drops the
    KV cache inside checkpointed layers (a backward replay would write it a second time)."""
    fused_lm_head: bool = True
    """Compute log-probs and entropy from the last hidden states through the LM head in tiles of positions,
    recomputing each tile's logits in the backward, so no (N, T, V) logits tensor (nor its gradient) exists:
    the same values and gradients, far less memory at large vocabularies (TRL 1.16 does the same). Models whose
    logits are not exactly ``lm_head(hidden)`` (softcapping, logit scaling, LoRA on the head, FSDP) are
    detected once and use their own logits."""
    autocast: str = "none"
    """``none`` or ``bf16``: run the training and reference forwards under ``torch.autocast`` in bfloat16, with
    float32 weights, gradients and AdamW state (mixed precision, as TRL's ``bf16=True``). For GPUs with bf16;
    allowed on CPU but slower there unless the CPU has native bf16 (AVX512-BF16/AMX). Generation keeps
    ``model.dtype``."""
    micro_batch_size: int = 8
    """Completions per forward/backward; gradients accumulate to the minibatch. Memory knob only: the update
    does not depend on it."""
    seed: int = 0
    """Seeds data order, sampling and initialisation; with it a run is reproducible."""
    output_dir: str = "runs/grpo"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, report."""
    save_every: int = 0
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_last: int = 2
    """Keep the last K checkpoints."""
    resume: bool = False
    """Continue from the latest checkpoint in output_dir."""
    overwrite: bool = False
    """A fresh run into an output_dir that holds a run (``--overwrite``) first moves that run to
    ``OUTPUT_DIR.old-N``; without it such a run is refused. Nothing is ever deleted."""
    resume_force: bool = False
    """Resume from a checkpoint of another run or written with another config (e.g. a new lr after a
    divergence); the differences are printed. Off: such a resume is refused, naming them."""
    device: str = "auto"
    """``auto`` (cuda if present, else cpu), ``cpu`` or ``cuda``."""
    num_threads: int | None = None
    """torch intra-op threads on CPU; None keeps torch's default."""
    fsdp: bool = False
    """Shard parameters, gradients and AdamW state over the ``torchrun`` ranks (FSDP2, one unit per decoder
    layer) for models whose training state does not fit one device; same update as data parallelism. Needs
    more than one process, full fine-tuning (model.lora_r=0) and the builtin engine, which all-gathers the
    whole model while it generates. Checkpoints add ``sharded/`` (DCP) beside the plain HF folder.
    docs/scaling.md."""


@dataclass
class EvalSampling:
    """How an evaluation draws its completions, the one definition shared by ``thinkrl eval``, the trainer's
    periodic eval (``eval``), ``thinkrl sample`` and the pipeline's sample/eval stages. Defaults: the R1
    evaluation protocol (temperature 0.6, top-p 0.95, k samples per problem)."""

    k: int = 16
    """Samples per problem; pass@1 is their mean correctness (R1: k in 4..64)."""
    temperature: float = 0.6
    """R1 evaluation protocol: temperature 0.6; 0 is greedy decoding (then one sample per problem)."""
    top_p: float = 0.95
    """R1 evaluation protocol: top-p 0.95."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables (R1: none)."""
    max_new_tokens: int | None = 4096
    """Completion cap (R1 used 32,768); samples that hit it count as truncated (see truncation_rate)."""
    template: str | None = "r1"
    """``r1`` (the R1-Zero prompt), ``chat`` (the tokenizer's chat template), ``plain``, or a string with
    ``{question}``: the template the model was trained with."""
    system_prompt: str | None = None
    """System message for the ``chat`` template."""
    stop_strings: list[str] | None = None
    """Stop a completion right after any of these; None = ``</answer>`` with the r1 template, none otherwise."""
    seed: int = 0
    """Sampling seed: the same seed gives the same samples, and a resumed evaluation draws exactly what the
    uninterrupted one would."""
    batch_size: int = 8
    """Problems per generate call, and the resume granularity (samples are appended after each batch)."""


@dataclass
class EvalConfig(EvalSampling):
    """The trainer's periodic evaluation of ``data.eval``: the sampling settings of :class:`EvalSampling`
    (fields left null follow the training run), how often, and on how many problems."""

    k: int = 4
    """Samples per problem; pass@1 is their mean correctness (R1: k in 4..64)."""
    max_new_tokens: int | None = None
    """Completion cap; null = rollout.max_new_tokens."""
    template: str | None = None
    """Prompt template; null = data.template (as the policy is trained)."""
    system_prompt: str | None = None
    """System message of the chat template; null = data.system_prompt."""
    stop_strings: list[str] | None = None
    """Stop strings; null = rollout.stop_strings."""
    every_steps: int = 0
    """Evaluate data.eval every N steps (and before the first and after the last); 0 disables."""
    max_problems: int | None = None
    """Evaluate only the first N eval problems."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: list[RewardSpec] = field(
        default_factory=lambda: [RewardSpec("accuracy", 1.0), RewardSpec("format", 1.0)]
    )
    """Reward functions and weights; R1-Zero uses accuracy + format."""
    grading: GradingConfig = field(default_factory=GradingConfig)
    """Time limits, workers and the sandbox of the reward functions (thinkrl.rewards)."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    """PPO's value model (used with algorithm.advantage=gae)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    """Run-doctor thresholds (docs/visibility.md)."""
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    """Multi-turn tool use: the Python tool environment and its limits (docs/tools.md)."""
    asynchronous: AsyncConfig = field(default_factory=AsyncConfig)
    """The generator process of asynchronous RL (``rollout.max_staleness`` >= 1)."""


__all__ = [
    "AlgorithmConfig",
    "AsyncConfig",
    "Config",
    "CriticConfig",
    "DataConfig",
    "DoctorConfig",
    "EvalConfig",
    "EvalSampling",
    "GradingConfig",
    "LogConfig",
    "ModelConfig",
    "RewardSpec",
    "RolloutConfig",
    "SandboxConfig",
    "ToolsConfig",
    "TrainConfig",
]
