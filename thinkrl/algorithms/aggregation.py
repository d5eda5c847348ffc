"""Reduce a per-token loss (N, T) to the scalar that is back-propagated: a setting separate from the loss.

The three modes differ in how much weight a long completion gets:

* ``token_mean``: ``sum(l * m) / num_tokens``. Every token weighs the same, so long completions weigh
  more (DAPO's token-level loss; TRL ``loss_type="dapo"``/``"bnpo"``; verl ``"token-mean"``).
* ``seq_mean_token_mean``: ``sum_i (sum_t l_it m_it / len_i) / num_seqs``. Every completion weighs the
  same, so a token of a long completion weighs less: the length bias Dr. GRPO points out (original GRPO,
  DeepSeekMath eq. 3; TRL ``"grpo"``; verl ``"seq-mean-token-mean"``).
* ``seq_mean_token_sum_norm``: ``sum(l * m) / (num_seqs * max_len)``. A constant normaliser, so neither
  the length nor the batch's token count rescales a token's gradient (Dr. GRPO; TRL ``"dr_grpo"`` with
  ``max_completion_length``; verl ``"seq-mean-token-sum-norm"`` with ``loss_scale_factor``).

Gradient accumulation: pass ``num_seqs`` / ``num_tokens`` of the whole minibatch (or of the global batch
across ranks) when calling this on each micro-batch; the sum of the micro-batch losses then equals the
loss of the whole minibatch exactly, whatever the split. Defaults are this batch's own counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._registry import lookup

AggregationFn = Callable[..., torch.Tensor]


def _masked_sums(per_token: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row sums of the masked loss and row lengths, both (N,). ``where`` keeps NaN on padding out."""
    if per_token.dim() != 2 or per_token.shape != mask.shape:
        raise ValueError(
            f"per_token and mask must both be (N, T); got {tuple(per_token.shape)} and {tuple(mask.shape)}"
        )
    m = mask.bool()
    row_sum = torch.where(m, per_token, torch.zeros_like(per_token)).sum(-1)  # (N,)
    return row_sum, m.sum(-1).to(per_token.dtype)  # (N,), (N,)


def _count(value: float | torch.Tensor | None, default: torch.Tensor | float) -> torch.Tensor | float:
    """The caller's count if given, else this batch's; clamped to >= 1 so an empty batch gives 0, not NaN."""
    v = default if value is None else value
    return v.clamp(min=1) if isinstance(v, torch.Tensor) else max(float(v), 1.0)


def token_mean(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """``sum(l * m) / num_tokens`` (default: this batch's masked-token count). (N, T), (N, T) -> 0-dim.

    >>> token_mean(torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]]))
    tensor(2.5000)
    """
    row_sum, lengths = _masked_sums(per_token, mask)
    return row_sum.sum() / _count(num_tokens, lengths.sum())


def seq_mean_token_mean(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """``sum_i (sum_t l m / len_i) / num_seqs`` (default: N rows). Empty rows add 0. (N, T) -> 0-dim.

    >>> seq_mean_token_mean(torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]),
    ...                     torch.tensor([[1, 1, 1], [1, 0, 0]]))  # (6/3 + 4/1) / 2
    tensor(3.)
    """
    row_sum, lengths = _masked_sums(per_token, mask)
    per_seq = row_sum / lengths.clamp(min=1)  # (N,)
    return per_seq.sum() / _count(num_seqs, float(per_token.shape[0]))


def seq_mean_token_sum_norm(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """``sum(l * m) / (num_seqs * max_len)``; ``max_len`` (generation budget) is required. (N, T) -> 0-dim.

    >>> seq_mean_token_sum_norm(torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]),
    ...                         torch.tensor([[1, 1, 1], [1, 0, 0]]), max_len=5)  # 10 / (2 * 5)
    tensor(1.)
    """
    if max_len is None or max_len <= 0:
        raise ValueError(
            "seq_mean_token_sum_norm needs max_len > 0: pass the generation budget (max new tokens), "
            f"a constant over training, not the padded width of this batch; got {max_len!r}"
        )
    row_sum, _ = _masked_sums(per_token, mask)
    return row_sum.sum() / (_count(num_seqs, float(per_token.shape[0])) * max_len)


AGGREGATIONS: dict[str, AggregationFn] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


def get_aggregation(name: str) -> AggregationFn:
    """The aggregation registered as ``name``; ``ValueError`` listing ``AGGREGATIONS`` otherwise."""
    return lookup(AGGREGATIONS, name, "loss aggregation")


def aggregate_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Scalar (0-dim) loss from ``per_token`` (N, T) under ``mask`` (N, T) with aggregation ``mode``.

    ``num_seqs`` / ``num_tokens``: counts of the whole minibatch when this is one micro-batch of it.
    ``max_len``: required by ``seq_mean_token_sum_norm``.

    >>> aggregate_loss(torch.ones(2, 3), torch.tensor([[1, 1, 0], [1, 0, 0]]), "token_mean", num_tokens=6)
    tensor(0.5000)
    """
    return get_aggregation(mode)(per_token, mask, num_seqs=num_seqs, num_tokens=num_tokens, max_len=max_len)
