"""DAPO's dynamic-sampling filter: which groups carry no learning signal.

(Token sampling lives in ``thinkrl.rollout.token_draw``; importance weights between sampler and trainer in
``offpolicy``.)
"""

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
