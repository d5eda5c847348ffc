"""Outcome-reward advantage estimators: one scalar reward per completion -> one advantage per completion.

Every estimator has the signature ``fn(rewards (N,), group_ids (N,), *, eps, std_unbiased) -> (N,) float32``
and is registered in ``ADVANTAGES``. A group is the G completions sampled for one prompt; ``group_ids``
names it. Ids may come in any order, need not be contiguous and need not be ``0..P-1`` (e.g. dataset row
ids after a DAPO filter dropped some rows): everything is computed with ``index_add_``/``scatter_reduce_``
over a dense re-indexing, never with a Python loop over groups.

Conventions shared by all estimators, and why:

* Groups whose rewards are all equal (this includes groups of one) get advantage **exactly 0**. There is
  no baseline to compare to, so there is no learning signal; computing ``r - mean`` in floating point
  would leave ~1e-17 residues that GRPO's ``/(std + eps)`` then blows up to ~1e-11 (or NaN with eps=0).
* ``std_unbiased=True`` (default) is Bessel's ``sqrt(sum (r - mean)^2 / (G - 1))``, i.e. ``torch.std``,
  which is what TRL (``rewards.view(-1, G).std(dim=1)``) and verl (``torch.std(scores)``) use, so GRPO
  advantages match theirs. ``False`` divides by G (the population std, ``np.std`` default).
* ``eps=1e-6`` as in verl (``epsilon=1e-6``); TRL hard-codes ``1e-4``. eps only matters for groups with a
  tiny but non-zero spread: it bounds ``|A| <= (r - mean) / eps``. Pass ``eps=1e-4`` to reproduce TRL.
* Statistics are computed in float64 (float32 on MPS, which lacks float64) and returned as float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._registry import lookup

AdvantageFn = Callable[..., torch.Tensor]

_TINY = 1e-30  # denominator floor: only reached when the numerator is exactly 0


@dataclass
class GroupStats:
    """Per-row group statistics of a reward vector (all tensors (N,), float64 unless noted)."""

    index: torch.Tensor
    """(N,) long: dense group index in ``0..P-1`` of each row."""
    size: torch.Tensor
    """(N,): number of rows in the row's group (G_i)."""
    deviation: torch.Tensor
    """(N,): ``r - mean_g``, forced to exactly 0 in groups whose rewards are all equal."""
    std: torch.Tensor
    """(N,): the group's standard deviation (Bessel-corrected when ``std_unbiased``)."""
    zero_spread: torch.Tensor
    """(N,) bool: the row's group has ``max == min`` (no learning signal)."""


def _stat_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def dense_group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map arbitrary integer ids (N,) to dense indices (N,) in ``0..P-1``; returns ``(index, P)``.

    ``torch.unique`` costs one host sync (its output size is data-dependent); that is one per step.

    >>> dense_group_index(torch.tensor([7, 3, 7, 9]))
    (tensor([1, 0, 1, 2]), 3)
    """
    if group_ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D (N,), got shape {tuple(group_ids.shape)}")
    if group_ids.dtype.is_floating_point or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    uniq, index = torch.unique(group_ids, return_inverse=True)
    return index, uniq.numel()


def group_stats(rewards: torch.Tensor, group_ids: torch.Tensor, *, std_unbiased: bool = True) -> GroupStats:
    """Vectorised per-group mean/std/spread of ``rewards`` (N,) grouped by ``group_ids`` (N,).

    >>> s = group_stats(torch.tensor([1.0, 0.0, 5.0]), torch.tensor([4, 4, 2]))
    >>> s.deviation.tolist(), s.size.tolist(), s.zero_spread.tolist()
    ([0.5, -0.5, 0.0], [2.0, 2.0, 1.0], [False, False, True])
    """
    if rewards.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards and group_ids must both be (N,), got {tuple(rewards.shape)}, {tuple(group_ids.shape)}"
        )
    index, num_groups = dense_group_index(group_ids.to(rewards.device))
    r = rewards.detach().to(_stat_dtype(rewards.device))  # (N,)
    zeros = torch.zeros(num_groups, dtype=r.dtype, device=r.device)  # (P,)
    count = zeros.index_add(0, index, torch.ones_like(r))  # (P,)
    mean = zeros.index_add(0, index, r) / count.clamp(min=1)  # (P,)
    gmax = zeros.scatter_reduce(0, index, r, reduce="amax", include_self=False)  # (P,)
    gmin = zeros.scatter_reduce(0, index, r, reduce="amin", include_self=False)  # (P,)
    zero_spread = (gmax == gmin)[index]  # (N,)
    dev = torch.where(zero_spread, torch.zeros_like(r), r - mean[index])  # (N,)
    denom = (count - 1).clamp(min=1) if std_unbiased else count.clamp(min=1)  # (P,)
    std = (zeros.index_add(0, index, dev.square()) / denom).sqrt()  # (P,)
    return GroupStats(index=index, size=count[index], deviation=dev, std=std[index], zero_spread=zero_spread)


def grpo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, std_unbiased: bool = True
) -> torch.Tensor:
    """GRPO (DeepSeekMath §4.1.2 outcome supervision; DeepSeek-R1 eq. 3): ``(r - mean_g) / (std_g + eps)``.

    rewards (N,), group_ids (N,) -> (N,) float32.

    >>> grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 0]))
    tensor([ 0.8660, -0.8660, -0.8660,  0.8660])
    """
    s = group_stats(rewards, group_ids, std_unbiased=std_unbiased)
    # std = 0 only where deviation = 0 (zero-spread groups); the clamp keeps eps=0 from making 0/0 = NaN
    return (s.deviation / (s.std + eps).clamp(min=_TINY)).float()


def dr_grpo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, std_unbiased: bool = True
) -> torch.Tensor:
    """Dr. GRPO: ``r - mean_g`` (no std division, which up-weights too-easy/too-hard prompts). eps unused.

    >>> dr_grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 0]))
    tensor([ 0.5000, -0.5000, -0.5000,  0.5000])
    """
    return group_stats(rewards, group_ids, std_unbiased=std_unbiased).deviation.float()


def rloo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, std_unbiased: bool = True
) -> torch.Tensor:
    """RLOO: ``r_i - mean_{j != i} r_j`` = ``G / (G - 1) * (r_i - mean_g)``. 0 for groups of one. eps unused.

    >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 0]))
    tensor([ 0.6667, -0.6667, -0.6667,  0.6667])
    """
    s = group_stats(rewards, group_ids, std_unbiased=std_unbiased)
    # r - (sum - r)/(G-1) = (G r - sum)/(G-1) = G/(G-1) (r - sum/G); G=1 has deviation 0, clamp avoids 0/0.
    return (s.deviation * s.size / (s.size - 1).clamp(min=1)).float()


def reinforce_pp_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, eps: float = 1e-6, std_unbiased: bool = True
) -> torch.Tensor:
    """REINFORCE++ (group baseline): ``x = r - mean_g``, then ``(x - mean(x)) / (std(x) + eps)`` batch-wide.

    The batch mean of ``x`` is 0 in exact arithmetic (each group's deviations sum to 0); subtracting it
    only removes float residue. Groups with all-equal rewards keep advantage exactly 0 only up to that
    residue (|A| < 1e-12 in practice).

    >>> reinforce_pp_advantages(torch.tensor([1.0, 0.0, 3.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    tensor([ 0.5477, -0.5477,  1.0954, -1.0954])
    """
    x = group_stats(rewards, group_ids, std_unbiased=std_unbiased).deviation  # (N,)
    if x.numel() == 0:
        return x.float()
    x = x - x.mean()
    denom = max(x.numel() - 1, 1) if std_unbiased else x.numel()
    std = (x.square().sum() / denom).sqrt()
    return (x / (std + eps).clamp(min=_TINY)).float()


# Every estimator here is group-relative: it compares a completion with its group, so a group of one gets 0
# (train.checks requires G >= 2 for all of them). Estimators that need a critic's values instead live in
# critic.py's CRITIC_ADVANTAGES.
ADVANTAGES: dict[str, AdvantageFn] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
}


def get_advantage_fn(name: str) -> AdvantageFn:
    """The estimator registered as ``name``; ``ValueError`` listing ``ADVANTAGES`` otherwise."""
    return lookup(ADVANTAGES, name, "advantage estimator")


def compute_advantages(
    name: str,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    eps: float = 1e-6,
    std_unbiased: bool = True,
) -> torch.Tensor:
    """Advantages (N,) float32 of ``rewards`` (N,) under estimator ``name``, grouped by ``group_ids`` (N,).

    Detached: advantages are constants of the policy loss.

    >>> compute_advantages("grpo", torch.tensor([2.0, 0.0, 1.0, 1.0]), torch.tensor([5, 5, 8, 8]))
    tensor([ 0.7071, -0.7071,  0.0000,  0.0000])
    """
    return get_advantage_fn(name)(rewards, group_ids, eps=eps, std_unbiased=std_unbiased)
