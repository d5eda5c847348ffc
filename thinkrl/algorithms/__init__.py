"""Pure tensor functions of GRPO-style RL: advantages, policy losses, KL estimators, loss aggregation,
entropy, token log-probs and batch shaping. Registries are plain dicts keyed by name; ``get_*(name)`` and
the ``compute_*``/``policy_loss``/``kl_penalty``/``aggregate_loss`` entry points raise ``ValueError``
listing the valid names. See docs/algorithms.md for formulas and how they map to TRL and verl settings.
"""

from .advantages import (
    ADVANTAGES,
    compute_advantages,
    dense_group_index,
    dr_grpo_advantages,
    get_advantage_fn,
    group_stats,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from .aggregation import (
    AGGREGATIONS,
    aggregate_loss,
    get_aggregation,
    seq_mean_token_mean,
    seq_mean_token_sum_norm,
    token_mean,
)
from .entropy import entropy_from_logits
from .kl import KL_ESTIMATORS, get_kl_estimator, kl_k1, kl_k2, kl_k3, kl_penalty
from .lm_head import lm_head_logprobs
from .logprobs import token_logprobs
from .losses import (
    POLICY_LOSSES,
    get_policy_loss_fn,
    importance_ratio,
    policy_loss,
    ppo_clip_loss,
    reinforce_loss,
)
from .sampling import truncated_is_weights, zero_spread_groups

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "aggregate_loss",
    "compute_advantages",
    "dense_group_index",
    "dr_grpo_advantages",
    "entropy_from_logits",
    "get_advantage_fn",
    "get_aggregation",
    "get_kl_estimator",
    "get_policy_loss_fn",
    "group_stats",
    "grpo_advantages",
    "importance_ratio",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalty",
    "lm_head_logprobs",
    "policy_loss",
    "ppo_clip_loss",
    "reinforce_loss",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "seq_mean_token_mean",
    "seq_mean_token_sum_norm",
    "token_logprobs",
    "token_mean",
    "truncated_is_weights",
    "zero_spread_groups",
]
