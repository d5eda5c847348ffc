"""Structural validation: types are OmegaConf's; ranges and combinations are checked here, each failure a
:class:`ConfigError` that names the field and the fix."""

from __future__ import annotations

from typing import Any

from thinkrl.config.asynchronous import check_async
from thinkrl.config.loading import ConfigError
from thinkrl.config.schema import Config, EvalSampling
from thinkrl.config.tools import check_tools_fields
from thinkrl.core import DTYPES


def check(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond``."""
    if not cond:
        raise ConfigError(message)


def check_train_fields(t: Any) -> None:
    """The optimizer, schedule, checkpoint and device fields that the RL and SFT ``train`` sections share."""
    check(t.lr > 0, f"train.lr={t.lr} must be > 0")
    check(t.micro_batch_size >= 1, "train.micro_batch_size must be >= 1")
    check(
        t.lr_schedule in ("constant", "cosine"),
        f"train.lr_schedule={t.lr_schedule!r}; valid: constant, cosine",
    )
    check(len(t.adam_betas) == 2, "train.adam_betas must be two numbers, e.g. [0.9, 0.999]")
    check(t.keep_last >= 1, "train.keep_last must be >= 1")
    check(
        not (t.resume and t.overwrite),
        "train.resume=true and train.overwrite=true: --resume continues the run in output_dir, --overwrite moves "
        "it aside to start over; choose one",
    )
    check(t.device in ("auto", "cpu", "cuda"), f"train.device={t.device!r}; valid: auto, cpu, cuda")


def check_model_dtype(m: Any) -> None:
    """``model.dtype`` is one the loader knows (:data:`thinkrl.core.DTYPES`)."""
    check(m.dtype in DTYPES, f"model.dtype={m.dtype!r}; valid: {', '.join(DTYPES)}")


def check_eval_sampling(s: EvalSampling, prefix: str = "") -> None:
    """The ranges of :class:`EvalSampling` fields (``prefix`` names the section in messages, e.g. ``eval.``).

    >>> check_eval_sampling(EvalSampling(top_p=0))
    Traceback (most recent call last):
    ...
    thinkrl.config.loading.ConfigError: top_p=0 must be in (0, 1]
    """
    check(s.k >= 1, f"{prefix}k={s.k} must be >= 1")
    check(s.temperature >= 0, f"{prefix}temperature={s.temperature} must be >= 0 (0 = greedy)")
    check(0 < s.top_p <= 1, f"{prefix}top_p={s.top_p} must be in (0, 1]")
    check(s.top_k >= 0, f"{prefix}top_k={s.top_k} must be >= 0 (0 disables)")
    check(
        s.max_new_tokens is None or s.max_new_tokens >= 1,
        f"{prefix}max_new_tokens={s.max_new_tokens} must be >= 1",
    )
    check(s.batch_size >= 1, f"{prefix}batch_size={s.batch_size} must be >= 1")


def check_doctor_fields(cfg: Any) -> None:
    """The completion-log and doctor fields (``log.completions_*``, ``doctor.*``)."""
    lg, d = cfg.log, cfg.doctor
    check(
        lg.completions_every >= 0, f"log.completions_every={lg.completions_every} must be >= 0 (0 disables)"
    )
    check(lg.completions_per_step >= 0, "log.completions_per_step must be >= 0 (0 keeps every completion)")
    check(lg.completions_max_mb > 0.01, f"log.completions_max_mb={lg.completions_max_mb} must be > 0.01")
    check(d.window >= 1, f"doctor.window={d.window} must be >= 1")
    for name in ("entropy_collapse_ratio", "length_collapse_ratio", "truncation_max", "zero_spread_max",
                 "clip_fraction_max", "format_saturated", "reward_failure_max"):  # fmt: skip
        v = getattr(d, name)
        check(0 <= v <= 1, f"doctor.{name}={v} is a fraction; use a value in [0, 1]")
    for name in ("entropy_explosion_ratio", "length_growth_max", "logprob_mismatch_growth"):
        v = getattr(d, name)
        check(v > 1, f"doctor.{name}={v} is a growth factor; use a value > 1")
    for name in ("logprob_mismatch_max", "kl_max", "eval_drop", "min_accuracy_gain"):
        v = getattr(d, name)
        check(v > 0, f"doctor.{name}={v} must be > 0")


def check_algorithm_extras(cfg: Config) -> None:
    """Ranges of the entropy controller, the off-policy correction, GAE and the critic. (Names, loss options
    and IS bounds are checked against the functions themselves by ``thinkrl.train.checks``.)"""
    a, c = cfg.algorithm, cfg.critic
    if a.entropy_target is not None:
        check(a.entropy_target > 0, f"algorithm.entropy_target={a.entropy_target} must be > 0 nats or null")
        check(a.entropy_coef_delta >= 0, f"algorithm.entropy_coef_delta={a.entropy_coef_delta} must be >= 0")
        check(
            0 <= a.entropy_coef_min <= a.entropy_coef_max,
            f"algorithm.entropy_coef_min={a.entropy_coef_min}, entropy_coef_max={a.entropy_coef_max}: need "
            "0 <= entropy_coef_min <= entropy_coef_max",
        )
    check(
        a.is_correction is not None or (a.is_low is None and a.is_high is None),
        "algorithm.is_low/is_high are set but algorithm.is_correction is null, so they would do nothing; set "
        "algorithm.is_correction (token_tis, seq_tis, token_mask, seq_mask) or remove the bounds",
    )
    check(
        a.is_correction is None or a.tis_cap is None,
        f"algorithm.tis_cap={a.tis_cap} and algorithm.is_correction={a.is_correction!r} are both set; tis_cap=c is "
        "is_correction=token_tis with is_high=c: keep one",
    )
    check(0 <= a.gamma <= 1 and 0 <= a.lam <= 1, f"algorithm.gamma={a.gamma}, lam={a.lam} must be in [0, 1]")
    check(c.lr > 0, f"critic.lr={c.lr} must be > 0")
    check(c.value_clip is None or c.value_clip > 0, f"critic.value_clip={c.value_clip} must be > 0 or null")
    check(c.vf_coef > 0, f"critic.vf_coef={c.vf_coef} must be > 0 (0 would never train the critic)")
    check(c.warmup_steps >= 0, f"critic.warmup_steps={c.warmup_steps} must be >= 0")
    check(bool(c.model), "critic.model is empty; use head, policy, or a model folder or name")


def validate(cfg: Config) -> None:
    """Reject bad values and bad combinations at start, with a message naming the field and the fix.

    Structural checks only: names looked up in thinkrl's registries (algorithms, rewards, templates) are
    checked by ``thinkrl.train.checks.check_config``, which sits above those registries.
    """
    r, a, t, ev = cfg.rollout, cfg.algorithm, cfg.train, cfg.eval
    check(r.group_size >= 1, f"rollout.group_size={r.group_size} must be >= 1")
    check(r.prompts_per_step >= 1, f"rollout.prompts_per_step={r.prompts_per_step} must be >= 1")
    check(
        r.temperature > 0,
        f"rollout.temperature={r.temperature}: RL needs sampling; use a value > 0 (R1: 1.0)",
    )
    check(0 < r.top_p <= 1, f"rollout.top_p={r.top_p} must be in (0, 1]")
    check(r.top_k >= 0, f"rollout.top_k={r.top_k} must be >= 0 (0 disables)")
    check(r.max_new_tokens >= 1, f"rollout.max_new_tokens={r.max_new_tokens} must be >= 1")
    check(t.autocast in ("none", "bf16"), f"train.autocast={t.autocast!r}; valid: none, bf16")
    check(
        0 < r.vllm_gpu_memory_utilization <= 1,
        f"rollout.vllm_gpu_memory_utilization={r.vllm_gpu_memory_utilization} must be in (0, 1]",
    )
    check(r.vllm_kv_cache_gib > 0, f"rollout.vllm_kv_cache_gib={r.vllm_kv_cache_gib} must be > 0")
    check(
        r.vllm_dtype in ("auto", "float32", "bfloat16", "float16"),
        f"rollout.vllm_dtype={r.vllm_dtype!r}; valid: auto, float32, bfloat16, float16",
    )
    check(
        r.vllm_max_model_len is None or r.vllm_max_model_len > r.max_new_tokens,
        f"rollout.vllm_max_model_len={r.vllm_max_model_len} must exceed rollout.max_new_tokens="
        f"{r.max_new_tokens} (it holds prompt + completion); raise it or set null",
    )
    check(
        a.ratio_level in ("token", "sequence"),
        f"algorithm.ratio_level={a.ratio_level!r}; valid: token, sequence",
    )
    check(a.beta >= 0, f"algorithm.beta={a.beta} must be >= 0 (0 disables the KL term)")
    check(a.clip_low >= 0 and a.clip_high >= 0, "algorithm.clip_low and clip_high must be >= 0")
    check(a.dual_clip is None or a.dual_clip > 1, f"algorithm.dual_clip={a.dual_clip} must be > 1 or null")
    check(a.ppo_epochs >= 1, f"algorithm.ppo_epochs={a.ppo_epochs} must be >= 1")
    n_samples = r.prompts_per_step * r.group_size
    check(
        a.num_minibatches >= 1 and n_samples % a.num_minibatches == 0,
        f"algorithm.num_minibatches={a.num_minibatches} must divide prompts_per_step x group_size = {n_samples}",
    )
    check(a.max_sampling_rounds >= 1, "algorithm.max_sampling_rounds must be >= 1")
    check(a.tis_cap is None or a.tis_cap > 0, "algorithm.tis_cap must be > 0 or null")
    check_algorithm_extras(cfg)
    check(a.ref_refresh_steps >= 0, "algorithm.ref_refresh_steps must be >= 0")
    check(t.steps >= 0, "train.steps must be >= 0")
    check_train_fields(t)
    m = cfg.model
    check(m.lora_r >= 0, f"model.lora_r={m.lora_r} must be >= 0 (0 disables LoRA)")
    check(0 <= m.lora_dropout < 1, f"model.lora_dropout={m.lora_dropout} must be in [0, 1)")
    check(
        m.lora_r == 0 or a.ref_refresh_steps == 0 or a.beta == 0,
        f"algorithm.ref_refresh_steps={a.ref_refresh_steps} with model.lora_r={m.lora_r}: the LoRA reference "
        "is the base model with adapters disabled and cannot be refreshed; set algorithm.ref_refresh_steps=0",
    )
    check(
        not t.fsdp or m.lora_r == 0,
        f"train.fsdp=true with model.lora_r={m.lora_r}: FSDP is not supported with LoRA (the frozen base "
        "and the adapters would share FSDP units); set model.lora_r=0, or train.fsdp=false to replicate "
        "the base and train the adapters data-parallel",
    )
    check(
        not t.fsdp or r.engine == "builtin",
        f"train.fsdp=true with rollout.engine={r.engine!r}: only the builtin engine samples from sharded "
        "weights; set rollout.engine=builtin or train.fsdp=false",
    )
    check_model_dtype(cfg.model)
    check_eval_sampling(ev, "eval.")
    check(ev.every_steps >= 0, "eval.every_steps must be >= 0")
    check(
        len(cfg.rewards) >= 1,
        "rewards is empty; list at least one, e.g. rewards=[{name: accuracy, weight: 1.0}]",
    )
    check(cfg.data.max_prompt_tokens >= 1, "data.max_prompt_tokens must be >= 1")
    check_doctor_fields(cfg)
    check_tools_fields(cfg.tools, check)
    check_async(cfg)
