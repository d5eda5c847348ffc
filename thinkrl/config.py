"""One typed config tree for every command, loaded from YAML and overridable on the command line.

    cfg = load_config("configs/demo.yaml", ["algorithm.beta=0.0", "rollout.group_size=16"])

Defaults are the DeepSeek-R1 paper's where it gives one (Nature 2025, supplementary "Training details of
DeepSeek-R1-Zero": lr 3e-6, KL coefficient 0.001, temperature 1.0, 16 samples per question, 32 questions per
step, the 512 samples split into 16 minibatches for one inner epoch, reference replaced every 400 steps).
Small-model presets live in ``configs/``. Parsing and merging is OmegaConf's; validation with fix-it messages
is ours (:func:`validate`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


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


@dataclass
class RewardSpec:
    name: str = "accuracy"
    """A name from ``thinkrl.rewards.REWARDS`` (e.g. accuracy, format, countdown, code, language_consistency)
    or ``thinkrl.rewards.REWARD_FACTORIES`` (``reward_model``)."""
    weight: float = 1.0
    """Weight of this reward in the sum that forms each completion's reward."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Arguments of a reward that is built, e.g. ``{path: /models/rm, score_on: answer}`` for ``reward_model``
    (docs/rewards.md lists them); plain rewards take none and reject any."""


@dataclass
class AlgorithmConfig:
    advantage: str = "grpo"
    """Advantage estimator: grpo (DeepSeekMath/R1), dr_grpo, rloo, reinforce_pp."""
    adv_eps: float = 1e-6
    """Added to the group std in ``grpo`` so all-equal groups give 0, not NaN."""
    std_unbiased: bool = True
    """Bessel-corrected group std, as torch.std in TRL and verl."""
    loss: str = "ppo_clip"
    """Policy loss: ppo_clip (GRPO's clipped surrogate) or reinforce."""
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
    """Entropy bonus coefficient (0 = metric only)."""
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
    """Truncated importance sampling: weight tokens by min(pi_train/pi_sampler, cap) against engine mismatch."""


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
class EvalConfig:
    every_steps: int = 0
    """Evaluate data.eval every N steps (and before the first and after the last); 0 disables."""
    k: int = 4
    """Samples per problem; pass@1 is their mean correctness (R1: k in 4..64)."""
    temperature: float = 0.6
    """R1 evaluation protocol: temperature 0.6, top-p 0.95."""
    top_p: float = 0.95
    """R1 evaluation protocol: top-p 0.95."""
    max_new_tokens: int | None = None
    """Defaults to rollout.max_new_tokens."""
    max_problems: int | None = None
    """Evaluate only the first N eval problems."""


@dataclass
class LogConfig:
    progress: bool = True
    """Progress bar on the console."""
    tensorboard: bool = False
    """Also write TensorBoard events (pip install thinkrl[tensorboard])."""
    wandb: bool = False
    """Also log to Weights & Biases (pip install thinkrl[wandb])."""
    wandb_project: str = "thinkrl"
    """W&B project name."""
    completions_every: int = 1
    """Write sampled completions (prompt, completion, reward per function, advantage, length, finish reason,
    policy version) to ``RUN/completions.jsonl`` every N steps, so you can read what the model wrote at step N
    (``thinkrl report`` shows them as a filterable table); 0 disables."""
    completions_per_step: int = 64
    """Completions kept per logged step, as whole groups drawn at random; 0 keeps all (P x G a step)."""
    completions_max_mb: float = 200.0
    """Bound on the completion log's size on disk (MiB): it rotates into ``completions.1.jsonl`` and drops the
    oldest records beyond this."""


@dataclass
class DoctorConfig:
    """Thresholds of the run doctor (``thinkrl/analysis/doctor.py``, ``thinkrl doctor RUN_DIR``): each check
    compares the mean of the last ``window`` steps with a threshold (or with the mean of the first ``window``
    steps, the run's start). docs/visibility.md lists the checks, their causes and fixes."""

    enabled: bool = True
    """Print a warning line when a check starts firing (once per episode, not every step)."""
    window: int = 5
    """Steps averaged before comparing (sampling noise); also how many quiet steps end an episode."""
    entropy_collapse_ratio: float = 0.1
    """Entropy collapse: policy entropy below this fraction of its value at the start."""
    entropy_explosion_ratio: float = 3.0
    """Entropy explosion: policy entropy above this multiple of its value at the start."""
    length_growth_max: float = 4.0
    """Length runaway: mean response length above this multiple of the start while accuracy has not risen by
    ``min_accuracy_gain`` (growth with rising accuracy is R1-Zero's healthy signature)."""
    length_collapse_ratio: float = 0.3
    """Length collapse: mean response length below this fraction of the start."""
    truncation_max: float = 0.2
    """Truncation: share of completions cut at rollout.max_new_tokens above this."""
    zero_spread_max: float = 0.5
    """Share of groups whose G rewards are all equal (zero advantage, no gradient) above this."""
    logprob_mismatch_max: float = 0.1
    """Engine vs trainer: mean |log-prob difference| per token above this, or above a tenth of it and
    ``logprob_mismatch_growth`` times its start."""
    logprob_mismatch_growth: float = 3.0
    """Engine vs trainer: growth factor of the mismatch over its start that counts as growing."""
    kl_max: float = 1.0
    """KL blow-up: KL to the reference (per token) above this."""
    clip_fraction_max: float = 0.2
    """Share of tokens whose importance ratio is clipped above this (the update is mostly clipped away)."""
    eval_drop: float = 0.05
    """Reward hacking: held-out pass@1 this far below its best while the training reward rose."""
    format_saturated: float = 0.95
    """Reward hacking: format rate at or above this while accuracy rose less than ``min_accuracy_gain``."""
    min_accuracy_gain: float = 0.02
    """Gain in training accuracy over the start that counts as real progress (length runaway, hacking)."""
    reward_failure_max: float = 0.01
    """Share of completions whose reward timed out or raised (``reward/timeouts/*``, ``reward/errors/*``)."""


def check_doctor_fields(cfg: Any) -> None:
    """The completion-log and doctor fields (``log.completions_*``, ``doctor.*``)."""
    lg, d = cfg.log, cfg.doctor
    _check(
        lg.completions_every >= 0, f"log.completions_every={lg.completions_every} must be >= 0 (0 disables)"
    )
    _check(lg.completions_per_step >= 0, "log.completions_per_step must be >= 0 (0 keeps every completion)")
    _check(lg.completions_max_mb > 0.01, f"log.completions_max_mb={lg.completions_max_mb} must be > 0.01")
    _check(d.window >= 1, f"doctor.window={d.window} must be >= 1")
    for name in ("entropy_collapse_ratio", "length_collapse_ratio", "truncation_max", "zero_spread_max",
                 "clip_fraction_max", "format_saturated", "reward_failure_max"):  # fmt: skip
        v = getattr(d, name)
        _check(0 <= v <= 1, f"doctor.{name}={v} is a fraction; use a value in [0, 1]")
    for name in ("entropy_explosion_ratio", "length_growth_max", "logprob_mismatch_growth"):
        v = getattr(d, name)
        _check(v > 1, f"doctor.{name}={v} is a growth factor; use a value > 1")
    for name in ("logprob_mismatch_max", "kl_max", "eval_drop", "min_accuracy_gain"):
        v = getattr(d, name)
        _check(v > 0, f"doctor.{name}={v} must be > 0")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: list[RewardSpec] = field(
        default_factory=lambda: [RewardSpec("accuracy", 1.0), RewardSpec("format", 1.0)]
    )
    """Reward functions and weights; R1-Zero uses accuracy + format."""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    doctor: DoctorConfig = field(default_factory=DoctorConfig)
    """Run-doctor thresholds (docs/visibility.md)."""


T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or combination is invalid; the message names the field and the fix."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- ``key=value`` overrides, then :func:`validate`.

    >>> cfg = load_config(None, ["rollout.group_size=4", "algorithm.beta=0"])
    >>> cfg.rollout.group_size, cfg.algorithm.beta
    (4, 0.0)
    """
    cfg = load_structured(Config, path, overrides)
    validate(cfg)
    return cfg


def load_structured(schema: type[T], path: str | Path | None, overrides: list[str] | None) -> T:
    """Merge ``schema``'s defaults <- a YAML file <- dotted overrides with OmegaConf; any parse or type error
    becomes a :class:`ConfigError` that names the key (and, for an unknown key, the valid ones)."""
    layers = [OmegaConf.structured(schema)]
    try:
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {str(p)!r} does not exist; pass a YAML file (see configs/)")
            layers.append(OmegaConf.load(p))
        for o in overrides or []:
            if "=" not in o:
                raise ConfigError(f"override {o!r} is not key=value (e.g. train.lr=1e-5)")
        if overrides:
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(OmegaConf.merge(*layers))
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {_explain(e, schema)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"invalid YAML in the config or an override ({e}); quote values with braces or colons"
        ) from None
    assert isinstance(cfg, schema)
    return cfg


def _explain(e: OmegaConfBaseException, schema: type) -> str:
    key = getattr(e, "full_key", None) or ""
    msg = str(e).splitlines()[0]
    if "not in struct" in msg or ("Key '" in msg and "not" in msg):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        valid = _valid_keys(schema, parent)
        return f"unknown key {key!r}; valid keys under {parent or 'the top level'!r}: {', '.join(valid)}"
    return f"{key}: {msg}" if key else msg


def _valid_keys(schema: type, dotted: str) -> list[str]:
    obj: Any = schema
    for part in filter(None, dotted.split(".")):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            return [f.name for f in dataclasses.fields(schema)]
        factory = fields[part].default_factory
        value = factory() if factory is not dataclasses.MISSING else None
        obj = type(value) if dataclasses.is_dataclass(value) else None
        if obj is None:
            return []
    return [f.name for f in dataclasses.fields(obj)]


def config_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, as saved in every run directory."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(config_to_yaml(cfg))


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def check_train_fields(t: Any) -> None:
    """The optimizer, schedule, checkpoint and device fields that the RL and SFT ``train`` sections share."""
    _check(t.lr > 0, f"train.lr={t.lr} must be > 0")
    _check(t.micro_batch_size >= 1, "train.micro_batch_size must be >= 1")
    _check(
        t.lr_schedule in ("constant", "cosine"),
        f"train.lr_schedule={t.lr_schedule!r}; valid: constant, cosine",
    )
    _check(len(t.adam_betas) == 2, "train.adam_betas must be two numbers, e.g. [0.9, 0.999]")
    _check(t.keep_last >= 1, "train.keep_last must be >= 1")
    _check(t.device in ("auto", "cpu", "cuda"), f"train.device={t.device!r}; valid: auto, cpu, cuda")


def validate(cfg: Config) -> None:
    """Reject bad values and bad combinations at start, with a message naming the field and the fix."""
    from thinkrl.algorithms import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES
    from thinkrl.data.templates import check_template

    r, a, t, ev = cfg.rollout, cfg.algorithm, cfg.train, cfg.eval
    _check(r.group_size >= 1, f"rollout.group_size={r.group_size} must be >= 1")
    _check(
        r.group_size >= 2 or a.advantage not in ("grpo", "dr_grpo", "rloo"),
        f"rollout.group_size={r.group_size} with algorithm.advantage={a.advantage!r}: a group-relative advantage "
        "needs G >= 2 samples per prompt (every advantage would be 0); set rollout.group_size=2 or more",
    )
    _check(r.prompts_per_step >= 1, f"rollout.prompts_per_step={r.prompts_per_step} must be >= 1")
    _check(
        r.temperature > 0,
        f"rollout.temperature={r.temperature}: RL needs sampling; use a value > 0 (R1: 1.0)",
    )
    _check(0 < r.top_p <= 1, f"rollout.top_p={r.top_p} must be in (0, 1]")
    _check(r.top_k >= 0, f"rollout.top_k={r.top_k} must be >= 0 (0 disables)")
    _check(r.max_new_tokens >= 1, f"rollout.max_new_tokens={r.max_new_tokens} must be >= 1")
    _check(t.autocast in ("none", "bf16"), f"train.autocast={t.autocast!r}; valid: none, bf16")
    _check(r.engine in ("builtin", "vllm"), f"rollout.engine={r.engine!r}; valid: builtin, vllm")
    _check(
        0 < r.vllm_gpu_memory_utilization <= 1,
        f"rollout.vllm_gpu_memory_utilization={r.vllm_gpu_memory_utilization} must be in (0, 1]",
    )
    _check(r.vllm_kv_cache_gib > 0, f"rollout.vllm_kv_cache_gib={r.vllm_kv_cache_gib} must be > 0")
    _check(
        r.vllm_dtype in ("auto", "float32", "bfloat16", "float16"),
        f"rollout.vllm_dtype={r.vllm_dtype!r}; valid: auto, float32, bfloat16, float16",
    )
    _check(
        r.vllm_max_model_len is None or r.vllm_max_model_len > r.max_new_tokens,
        f"rollout.vllm_max_model_len={r.vllm_max_model_len} must exceed rollout.max_new_tokens="
        f"{r.max_new_tokens} (it holds prompt + completion); raise it or set null",
    )
    for name, registry, field_name in (
        (a.advantage, ADVANTAGES, "algorithm.advantage"),
        (a.loss, POLICY_LOSSES, "algorithm.loss"),
        (a.loss_agg, AGGREGATIONS, "algorithm.loss_agg"),
        (a.kl_estimator, KL_ESTIMATORS, "algorithm.kl_estimator"),
    ):
        _check(name in registry, f"{field_name}={name!r} is unknown; valid: {', '.join(sorted(registry))}")
    _check(
        a.ratio_level in ("token", "sequence"),
        f"algorithm.ratio_level={a.ratio_level!r}; valid: token, sequence",
    )
    _check(a.beta >= 0, f"algorithm.beta={a.beta} must be >= 0 (0 disables the KL term)")
    _check(a.clip_low >= 0 and a.clip_high >= 0, "algorithm.clip_low and clip_high must be >= 0")
    _check(a.dual_clip is None or a.dual_clip > 1, f"algorithm.dual_clip={a.dual_clip} must be > 1 or null")
    _check(a.ppo_epochs >= 1, f"algorithm.ppo_epochs={a.ppo_epochs} must be >= 1")
    n_samples = r.prompts_per_step * r.group_size
    _check(
        a.num_minibatches >= 1 and n_samples % a.num_minibatches == 0,
        f"algorithm.num_minibatches={a.num_minibatches} must divide prompts_per_step x group_size = {n_samples}",
    )
    _check(a.max_sampling_rounds >= 1, "algorithm.max_sampling_rounds must be >= 1")
    _check(a.tis_cap is None or a.tis_cap > 0, "algorithm.tis_cap must be > 0 or null")
    _check(a.ref_refresh_steps >= 0, "algorithm.ref_refresh_steps must be >= 0")
    _check(t.steps >= 0, "train.steps must be >= 0")
    check_train_fields(t)
    m = cfg.model
    _check(m.lora_r >= 0, f"model.lora_r={m.lora_r} must be >= 0 (0 disables LoRA)")
    _check(0 <= m.lora_dropout < 1, f"model.lora_dropout={m.lora_dropout} must be in [0, 1)")
    _check(
        m.lora_r == 0 or a.ref_refresh_steps == 0 or a.beta == 0,
        f"algorithm.ref_refresh_steps={a.ref_refresh_steps} with model.lora_r={m.lora_r}: the LoRA reference "
        "is the base model with adapters disabled and cannot be refreshed; set algorithm.ref_refresh_steps=0",
    )
    _check(
        not t.fsdp or m.lora_r == 0,
        f"train.fsdp=true with model.lora_r={m.lora_r}: FSDP is not supported with LoRA (the frozen base "
        "and the adapters would share FSDP units); set model.lora_r=0, or train.fsdp=false to replicate "
        "the base and train the adapters data-parallel",
    )
    _check(
        not t.fsdp or r.engine == "builtin",
        f"train.fsdp=true with rollout.engine={r.engine!r}: only the builtin engine samples from sharded "
        "weights; set rollout.engine=builtin or train.fsdp=false",
    )
    _check(
        cfg.model.dtype in ("float32", "bfloat16", "float16"),
        f"model.dtype={cfg.model.dtype!r}; valid: float32, bfloat16, float16",
    )
    _check(ev.k >= 1, "eval.k must be >= 1")
    _check(ev.every_steps >= 0, "eval.every_steps must be >= 0")
    _check(
        len(cfg.rewards) >= 1,
        "rewards is empty; list at least one, e.g. rewards=[{name: accuracy, weight: 1.0}]",
    )
    from thinkrl.rewards import check_reward_kwargs  # no torch: cheap at validation time

    for i, spec in enumerate(cfg.rewards):
        try:
            check_reward_kwargs(spec.name, spec.kwargs)
        except ValueError as e:
            raise ConfigError(f"rewards[{i}]: {e}") from None
    try:
        check_template(cfg.data.template)
    except ValueError as e:
        raise ConfigError(f"data.template: {e}") from None
    _check(cfg.data.max_prompt_tokens >= 1, "data.max_prompt_tokens must be >= 1")
    check_doctor_fields(cfg)
