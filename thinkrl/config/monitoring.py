"""The ``log`` and ``doctor`` sections: where metrics and completions go, and the run doctor's thresholds."""

from __future__ import annotations

from dataclasses import dataclass


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
