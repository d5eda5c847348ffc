"""Log-probabilities of the sampled tokens, from logits, without a full float32 (N, T, V) log-softmax; also
under the top-k/top-p truncated distribution a sampler drew from."""

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


def _truncated_chunk(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, T, V), (n, T) -> log-probs (n, T) float32 under the truncated distribution, in_support (n, T)."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    vocab = z.shape[-1]
    with torch.no_grad():  # which tokens survive is a discrete choice: no gradient through it
        sorted_z, order = z.sort(dim=-1, descending=True, stable=True)  # (n, T, V)
        keep_sorted = torch.ones_like(sorted_z, dtype=torch.bool)
        if 0 < top_k < vocab:
            keep_sorted[..., top_k:] = False
        if top_p < 1.0:
            p = torch.where(keep_sorted, torch.softmax(sorted_z, dim=-1), torch.zeros_like(sorted_z))
            cum = p.cumsum(-1)
            # the sampler's rule: drop a token when the kept mass strictly before it reaches top_p
            keep_sorted &= (cum - p) < top_p * cum[..., -1:]
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # (n, T, V) by token id
        idx = tokens.unsqueeze(-1)
        in_support = keep.gather(-1, idx).squeeze(-1)  # (n, T)
        # the sampled token always stays in the support: at a float boundary the trainer's truncation can
        # differ from the sampler's by one token, and -inf there would make the ratio 0 or NaN
        keep.scatter_(-1, idx, True)
    log_norm = torch.logsumexp(torch.where(keep, z, torch.full_like(z, -torch.inf)), dim=-1)  # (n, T)
    return z.gather(-1, idx).squeeze(-1) - log_norm, in_support


def truncated_token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (N, T) of ``tokens`` under the distribution the sampler drew from when top-k/top-p are on:
    ``softmax(logits / temperature)`` restricted to the top-k tokens, then to the top-p nucleus of what is
    left, renormalised. Also returns ``in_support`` (N, T) bool: False where the token fell outside this
    truncation (a float boundary case; its log-prob is then taken over the support plus the token itself).

    The truncation is thinkrl's sampler's (``rollout.token_draw.truncate_probs``, the vLLM/HF order): keep the
    k most likely tokens (ties by token id), then drop a token once the kept mass strictly before it reaches
    ``top_p`` of the kept total. Engines that return log-probs of the truncated distribution (vLLM
    ``logprobs_mode="processed_logprobs"``) must be compared with these, not with ``token_logprobs``: the
    full-vocabulary log-prob is lower by ``-log(kept mass)`` on every token, which biases the importance
    ratio by the kept mass (trl #6789; prime-rl #2601 replays the truncation on the trainer the same way).
    ``top_k = 0`` and ``top_p = 1`` disable each; with both off this equals ``token_logprobs``.
    Differentiable w.r.t. ``logits`` (the support is chosen without gradient). Chunked like
    ``token_logprobs``; a sort of the vocabulary per position makes it a few times slower.

    >>> logits = torch.log(torch.tensor([[[0.1, 0.6, 0.3]]]))  # p = 0.1, 0.6, 0.3
    >>> lp, ok = truncated_token_logprobs(logits, torch.tensor([[2]]), top_p=0.8)  # nucleus {0.6, 0.3}
    >>> lp, ok  # ln(0.3 / 0.9)
    (tensor([[-1.0986]]), tensor([[True]]))
    """
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (N, T, V) and tokens (N, T); got {tuple(logits.shape)} and {tuple(tokens.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need top_k >= 0 (0 disables) and 0 < top_p <= 1; got top_k={top_k}, top_p={top_p}")
    n, t, v = logits.shape
    tokens = tokens.long()
    if not 0 < top_k < v and top_p == 1.0:  # no truncation: the plain log-softmax, without the sort
        logp = token_logprobs(logits, tokens, temperature, chunk_size=chunk_size)
        return logp, torch.ones_like(tokens, dtype=torch.bool)
    # the sort's values and indices and the masks are about 4 float32 copies of a chunk: budget for them
    step = rows_per_chunk(n, 4 * t * v, chunk_size)
    parts = [
        _truncated_chunk(logits[i : i + step], tokens[i : i + step], temperature, top_k, top_p)
        for i in range(0, n, step)
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts], dim=0), torch.cat([p[1] for p in parts], dim=0)
