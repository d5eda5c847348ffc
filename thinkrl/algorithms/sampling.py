"""Batch shaping: DAPO's dynamic-sampling filter and truncated importance sampling (TIS)."""

from __future__ import annotations

import torch

from .advantages import dense_group_index


def zero_spread_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True for rows whose group's rewards are all equal (max == min), i.e. no learning signal.

    Such groups get advantage 0 under every group-relative estimator; DAPO (arXiv 2503.14476, "dynamic
    sampling") drops them and samples more prompts. Groups of one count as zero-spread.
    rewards (N,), group_ids (N,) integer (any ids, any order).

    >>> zero_spread_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0]), torch.tensor([3, 3, 8, 8, 5]))
    tensor([ True,  True, False, False,  True])
    """
    if rewards.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards and group_ids must both be (N,), got {tuple(rewards.shape)}, {tuple(group_ids.shape)}"
        )
    index, num_groups = dense_group_index(group_ids.to(rewards.device))
    r = rewards.detach()
    base = torch.zeros(num_groups, dtype=r.dtype, device=r.device)
    gmax = base.scatter_reduce(0, index, r, reduce="amax", include_self=False)  # (P,)
    gmin = base.scatter_reduce(0, index, r, reduce="amin", include_self=False)  # (P,)
    return (gmax == gmin)[index]


def truncated_is_weights(trainer_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Detached ``min(exp(trainer_logp - sampler_logp), cap)`` (N, T) from two (N, T) log-prob tensors.

    The sampler (e.g. vLLM, bf16 kernels) and the trainer compute slightly different probabilities for the
    same policy; weighting each token's loss by pi_trainer / pi_sampler corrects the off-policy gap, and
    truncating at ``cap`` bounds the variance (TIS, Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"; TRL ``vllm_importance_sampling_cap``, default 2).

    >>> trainer, sampler = torch.log(torch.tensor([[0.6, 0.9]])), torch.log(torch.tensor([[0.3, 0.9]]))
    >>> truncated_is_weights(trainer, sampler, cap=1.5)  # min(0.6 / 0.3, 1.5), min(1, 1.5)
    tensor([[1.5000, 1.0000]])
    """
    if trainer_logp.shape != sampler_logp.shape:
        raise ValueError(f"shapes differ: {tuple(trainer_logp.shape)} vs {tuple(sampler_logp.shape)}")
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    log_w = (trainer_logp.detach() - sampler_logp.detach()).clamp(max=20.0)  # exp stays finite in float32
    return torch.exp(log_w).clamp(max=cap)
