"""What the collector hands the learner: scored trajectories, a plain value (tensors and lists, picklable).

A row is one sampled episode of one prompt (G rows per prompt form a group). Its tokens are the prompt
(``prompt_ids``, unpadded) followed by T completion columns, right-padded. In a single-turn task every
completion token is the model's; in a multi-turn episode the environment's tokens (a tool's output) sit
between the model's turns: ``attention_mask`` marks every real token, ``loss_mask`` only those the policy is
trained on. So the learner needs no knowledge of turns, tools or engines.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass
class Trajectories:
    """N scored trajectories, on the CPU, in the global order of the step's rows (one rank's share of them
    under data parallelism)."""

    prompt_ids: list[list[int]]
    """(N,) each row's prompt tokens, unpadded (the rows of a group share one list)."""
    group_ids: torch.Tensor
    """(N,) long: the row's group, numbered over the whole step (unique across data-parallel ranks)."""
    completion_ids: torch.Tensor
    """(N, T) long: completion tokens, right-padded with the pad id; T = the longest completion."""
    attention_mask: torch.Tensor
    """(N, T) bool: True on real completion tokens (model and environment tokens)."""
    loss_mask: torch.Tensor
    """(N, T) bool: True on the tokens that carry loss (the model's tokens, unless the row was left out)."""
    sampler_logp: torch.Tensor
    """(N, T) float32: the sampler's log-prob of each sampled token (0 on padding and environment tokens)."""
    policy_version: torch.Tensor
    """(N,) long: the learner step whose weights sampled the row (the engine's last weight sync). A
    per-token (N, T) version fits the same field when weights change within an episode."""
    finish_reasons: list[str]
    """(N,) ``stop`` or ``length`` (the completion hit max_new_tokens)."""
    texts: list[str]
    """(N,) decoded completions."""
    rows: list[dict[str, Any]]
    """(N,) the data row each trajectory answers (question, answer and every other column)."""
    rewards: torch.Tensor
    """(N,) float32: the weighted sum of the reward functions."""
    reward_parts: dict[str, torch.Tensor]
    """name -> (N,) float32 score of each reward function, NaN where it does not apply."""

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) long: real completion tokens per row."""
        return self.attention_mask.sum(-1)

    @property
    def truncated(self) -> torch.Tensor:
        """(N,) bool: rows cut at max_new_tokens."""
        return torch.tensor([f == "length" for f in self.finish_reasons], dtype=torch.bool)

    def select(self, rows: torch.Tensor) -> Trajectories:
        """The trajectories at ``rows`` (N',) in that order, padding columns no chosen row uses cut off.

        >>> t = _example()
        >>> sub = t.select(torch.tensor([1]))
        >>> sub.texts, sub.completion_ids.tolist(), sub.group_ids.tolist()
        (['a'], [[5]], [7])
        """
        rows = rows.long()
        idx = rows.tolist()
        mask = self.attention_mask[rows]
        t = max(int(mask.sum(-1).max()), 1) if rows.numel() else 1

        def cols(x: torch.Tensor) -> torch.Tensor:
            return x[rows][:, :t]

        return Trajectories(
            prompt_ids=[self.prompt_ids[i] for i in idx],
            group_ids=self.group_ids[rows],
            completion_ids=cols(self.completion_ids),
            attention_mask=mask[:, :t],
            loss_mask=cols(self.loss_mask),
            sampler_logp=cols(self.sampler_logp),
            policy_version=self.policy_version[rows],
            finish_reasons=[self.finish_reasons[i] for i in idx],
            texts=[self.texts[i] for i in idx],
            rows=[self.rows[i] for i in idx],
            rewards=self.rewards[rows],
            reward_parts={k: v[rows] for k, v in self.reward_parts.items()},
        )

    def renumber_groups(self, first: int) -> Trajectories:
        """The same rows with their groups numbered ``first, first + 1, ...`` in the order of their old ids.

        >>> _example().renumber_groups(4).group_ids.tolist()
        [4, 4, 5]
        """
        _, dense = torch.unique(self.group_ids, sorted=True, return_inverse=True)
        return replace(self, group_ids=dense + first)

    @staticmethod
    def cat(parts: list[Trajectories], pad_id: int) -> Trajectories:
        """The rows of ``parts`` one after the other, re-padded to the longest completion (group ids kept).

        >>> t = _example()
        >>> both = Trajectories.cat([t, t.select(torch.tensor([2]))], pad_id=0)
        >>> len(both), both.completion_ids.shape
        (4, torch.Size([4, 2]))
        """
        if len(parts) == 1:
            return parts[0]
        t = max(p.completion_ids.shape[1] for p in parts)

        def cat(name: str, value: float | int | bool) -> torch.Tensor:
            xs = [getattr(p, name) for p in parts]
            return torch.cat([torch.nn.functional.pad(x, (0, t - x.shape[1]), value=value) for x in xs])

        return Trajectories(
            prompt_ids=[ids for p in parts for ids in p.prompt_ids],
            group_ids=torch.cat([p.group_ids for p in parts]),
            completion_ids=cat("completion_ids", pad_id),
            attention_mask=cat("attention_mask", False),
            loss_mask=cat("loss_mask", False),
            sampler_logp=cat("sampler_logp", 0.0),
            policy_version=torch.cat([p.policy_version for p in parts]),
            finish_reasons=[r for p in parts for r in p.finish_reasons],
            texts=[s for p in parts for s in p.texts],
            rows=[r for p in parts for r in p.rows],
            rewards=torch.cat([p.rewards for p in parts]),
            reward_parts={k: torch.cat([p.reward_parts[k] for p in parts]) for k in parts[0].reward_parts},
        )


def _example() -> Trajectories:
    """Three rows of two groups (docstring examples)."""
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    return Trajectories(
        prompt_ids=[[1], [1], [2]], group_ids=torch.tensor([7, 7, 9]),
        completion_ids=torch.tensor([[4, 5], [5, 0], [6, 0]]), attention_mask=mask, loss_mask=mask.clone(),
        sampler_logp=torch.zeros(3, 2), policy_version=torch.zeros(3, dtype=torch.long),
        finish_reasons=["length", "stop", "stop"], texts=["ab", "a", "b"], rows=[{}, {}, {}],
        rewards=torch.tensor([1.0, 0.0, 0.5]), reward_parts={"accuracy": torch.tensor([1.0, 0.0, 0.5])},
    )  # fmt: skip
