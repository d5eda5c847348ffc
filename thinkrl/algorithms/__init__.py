"""Pure tensor functions of GRPO-style RL: advantages (group and critic), policy losses, entropy control, KL
estimators, loss aggregation, entropy, token log-probs, off-policy corrections and batch shaping. Registries
are plain dicts keyed by name; ``get_*(name)`` and the ``compute_*``/``policy_loss``/``kl_penalty``/
``aggregate_loss``/``is_correction`` entry points raise ``ValueError`` listing the valid names. See
docs/algorithms.md for formulas and how they map to TRL and verl settings.
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
from .critic import (
    CRITIC_ADVANTAGES,
    compute_critic_advantages,
    gae_advantages,
    masked_whiten,
    outcome_token_rewards,
    value_loss,
)
from .dynamic_sampling import zero_spread_groups
from .entropy import entropy_from_logits
from .entropy_control import adaptive_entropy_coef, clip_cov_loss, kl_cov_loss
from .kl import KL_ESTIMATORS, get_kl_estimator, kl_k1, kl_k2, kl_k3, kl_penalty
from .lm_head import lm_head_logprobs
from .logprobs import token_logprobs, truncated_token_logprobs
from .losses import (
    POLICY_LOSSES,
    cispo_loss,
    get_policy_loss_fn,
    gmpo_loss,
    loss_options,
    policy_loss,
    ppo_clip_loss,
    reinforce_loss,
    sapo_loss,
)
from .offpolicy import (
    IS_CORRECTIONS,
    is_correction,
    seq_mask,
    seq_tis,
    token_mask,
    token_tis,
    truncated_is_weights,
)
from .ratios import importance_ratio

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "CRITIC_ADVANTAGES",
    "IS_CORRECTIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "adaptive_entropy_coef",
    "aggregate_loss",
    "cispo_loss",
    "clip_cov_loss",
    "compute_advantages",
    "compute_critic_advantages",
    "dense_group_index",
    "dr_grpo_advantages",
    "entropy_from_logits",
    "gae_advantages",
    "get_advantage_fn",
    "get_aggregation",
    "get_kl_estimator",
    "get_policy_loss_fn",
    "gmpo_loss",
    "group_stats",
    "grpo_advantages",
    "importance_ratio",
    "is_correction",
    "kl_cov_loss",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_penalty",
    "lm_head_logprobs",
    "loss_options",
    "masked_whiten",
    "outcome_token_rewards",
    "policy_loss",
    "ppo_clip_loss",
    "reinforce_loss",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "sapo_loss",
    "seq_mask",
    "seq_mean_token_mean",
    "seq_mean_token_sum_norm",
    "seq_tis",
    "token_logprobs",
    "token_mask",
    "token_mean",
    "token_tis",
    "truncated_is_weights",
    "truncated_token_logprobs",
    "value_loss",
    "zero_spread_groups",
]
