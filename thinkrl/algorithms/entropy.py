"""Per-token entropy of the policy's next-token distribution, from logits (logged; optionally a bonus)."""

from __future__ import annotations

import torch

from ._chunks import rows_per_chunk


def _entropy_chunk(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(n, T, V) -> (n, T) float32: H = logsumexp(z) - sum_v softmax(z)_v z_v, which needs no log(0)."""
    z = logits.float() if temperature == 1.0 else logits.float() / temperature
    p = torch.softmax(z, dim=-1)
    # a -inf logit (a vocabulary mask) has p = 0 and contributes 0, not 0 * -inf = NaN
    pz = torch.where(p > 0, p * z, torch.zeros_like(z))
    return torch.logsumexp(z, dim=-1) - pz.sum(-1)


def entropy_from_logits(
    logits: torch.Tensor, *, chunk_size: int | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Entropy (N, T) float32 of softmax(logits / temperature) for logits (N, T, V), ``chunk_size`` rows at a
    time (the temperature is applied per chunk, so no second full-size copy of the logits is made).

    Differentiable (for an entropy bonus). Default chunk: as many rows as fit 256 MiB of float32.

    >>> entropy_from_logits(torch.zeros(1, 1, 4))  # uniform over 4: ln 4
    tensor([[1.3863]])
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, T, V), got shape {tuple(logits.shape)}")
    n, t, v = logits.shape
    step = rows_per_chunk(n, t * v, chunk_size)
    if n <= step:
        return _entropy_chunk(logits, temperature)
    return torch.cat([_entropy_chunk(logits[i : i + step], temperature) for i in range(0, n, step)], dim=0)
