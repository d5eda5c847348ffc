"""One step's statistics: the per-completion values of every rank in one view, and the logged metrics.

Metrics stay tensors until :func:`step_metrics` turns them into numbers with one host sync per step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from thinkrl.algorithms import zero_spread_groups
from thinkrl.analysis.dynamics import reflection_rate
from thinkrl.rollout.trajectories import Trajectories


@dataclass
class StepView:
    """One step's per-completion values over all ranks, in global row order (N_global,)."""

    rewards: torch.Tensor
    group_ids: torch.Tensor  # long, unique across ranks
    lengths: torch.Tensor
    truncated: torch.Tensor  # bool
    reflection: torch.Tensor  # each row carries its rank's reflection rate (ranks hold equal row counts)
    per_fn: dict[str, torch.Tensor]
    mine: slice  # this rank's rows in the global order

    @property
    def first_row(self) -> int:
        return self.mine.start


def step_view(traj: Trajectories, parallel: Any) -> StepView:
    """The step's per-completion values of every rank, in global row order (one collective)."""
    n = len(traj)
    columns = {
        "rewards": traj.rewards,
        "group_ids": traj.group_ids,
        "lengths": traj.lengths,
        "truncated": traj.truncated,
        "reflection": torch.full((n,), reflection_rate(traj.texts), dtype=torch.float64),
        **{f"reward/{k}": v for k, v in traj.reward_parts.items()},
    }
    rows, first = parallel.gather_rows(columns)
    return StepView(
        rewards=rows["rewards"], group_ids=rows["group_ids"], lengths=rows["lengths"],
        truncated=rows["truncated"], reflection=rows["reflection"],
        per_fn={k: rows[f"reward/{k}"] for k in traj.reward_parts}, mine=slice(first, first + n),
    )  # fmt: skip


def step_metrics(
    view: StepView,
    update: dict[str, torch.Tensor],
    timings: dict[str, float],
    step_start: float,
    lr: float,
    accuracy_name: str | None,
) -> dict[str, float]:
    """The step's metrics over every rank's completions (``view``) and the reduced update statistics."""
    rewards, per_fn = view.rewards, view.per_fn
    lengths = view.lengths.float()
    spread = ~zero_spread_groups(rewards, view.group_ids)
    n_groups = torch.unique(view.group_ids).numel()
    m: dict[str, Any] = {
        "reward/mean": rewards.mean(),
        "reward/std": rewards.std() if len(rewards) > 1 else torch.zeros(()),
        "groups/zero_spread_frac": torch.tensor(
            1 - torch.unique(view.group_ids[spread]).numel() / max(n_groups, 1)
        ),
        "completion/len_mean": lengths.mean(),
        "completion/len_max": lengths.max(),
        "completion/truncated_frac": view.truncated.float().mean(),
        "completion/reflection_rate": view.reflection.float().mean(),
        "lr": torch.tensor(lr),
    }
    for name, scores in per_fn.items():
        valid = ~torch.isnan(scores)
        m[f"reward/{name}"] = scores[valid].mean() if valid.any() else torch.tensor(float("nan"))
    if accuracy_name is not None:
        m["accuracy"] = m[f"reward/{accuracy_name}"]
    if "format" in per_fn:
        m["format_rate"] = m["reward/format"]
    m.update({f"train/{k}": v for k, v in update.items()})
    # one host sync per step: every metric above is still a tensor
    values = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(()) for v in m.values()]).tolist()
    out = dict(zip(m.keys(), values))
    total = time.perf_counter() - step_start
    out.update({f"time/{k}": v for k, v in timings.items()})
    out["time/step"] = total
    gen_tokens = float(lengths.sum())
    out["throughput/gen_tokens_per_s"] = gen_tokens / max(timings.get("generate", 0.0), 1e-9)
    out["throughput/tokens_per_s"] = gen_tokens / total
    out["completions"] = float(len(rewards))
    return out
