"""Log-probabilities of the sampled tokens, from logits, without a full float32 (N, T, V) log-softmax."""

from __future__ import annotations

import torch

from ._chunks import rows_per_chunk


def _logprob_chunk(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, T, V), (n, T) -> (n, T) float32."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    return torch.log_softmax(z, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, *, chunk_size: int | None = None
) -> torch.Tensor:
    """``log_softmax(logits / temperature)`` at ``tokens``: (N, T, V) logits, (N, T) tokens -> (N, T) float32.

    ``logits[:, t]`` must be the prediction for ``tokens[:, t]`` (shift before calling). ``temperature``
    must be the sampling temperature, so that these log-probs match the sampler's and the importance ratio
    is 1 on-policy. Rows are processed ``chunk_size`` at a time (default: 256 MiB of float32 per chunk), in
    float32 even for bf16 logits. Differentiable w.r.t. ``logits``.

    >>> token_logprobs(torch.zeros(1, 2, 4), torch.tensor([[0, 3]]))  # uniform over 4: ln(1/4)
    tensor([[-1.3863, -1.3863]])
    """
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (N, T, V) and tokens (N, T); got {tuple(logits.shape)} and {tuple(tokens.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, t, v = logits.shape
    tokens = tokens.long()
    step = rows_per_chunk(n, t * v, chunk_size)
    if n <= step:
        return _logprob_chunk(logits, tokens, temperature)
    return torch.cat(
        [_logprob_chunk(logits[i : i + step], tokens[i : i + step], temperature) for i in range(0, n, step)],
        dim=0,
    )
