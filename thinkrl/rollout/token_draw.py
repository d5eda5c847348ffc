"""Logits → token: temperature, top-k, top-p and greedy, with reproducible per-row randomness.

Randomness is keyed by (call seed, step, row), never by batch layout: at decode step ``t`` every row of a
``generate`` call owns the uniform ``step_uniforms(seed, t, N)[row]``, and the token is drawn by inverse-CDF
sampling with it. So how prompts are chunked (``max_batch_size``) and when finished rows leave the batch
cannot change which random number a row uses.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One round of SplitMix64: a cheap bijective mix so nearby (seed, step) pairs get unrelated seeds."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_uniforms(seed: int, step: int, num_rows: int, first_row: int = 0) -> torch.Tensor:
    """Uniforms in [0, 1) for every row of a call at one decode step.

    Args:
        seed: the call's seed.
        step: decode step (0 = first completion token).
        num_rows: N, rows in the whole call (not the chunk), so row ``i`` always gets element ``i``.
        first_row: the call's first row within a larger logical batch (a data-parallel rank's share): the
            result is rows ``first_row .. first_row + N - 1`` of that batch's stream.

    Returns:
        (N,) float64 on the CPU, a pure function of (seed, step, first_row, num_rows).

    >>> bool((step_uniforms(1, 3, 4) == step_uniforms(1, 3, 4)).all())
    True
    >>> bool((step_uniforms(1, 3, 2, first_row=2) == step_uniforms(1, 3, 4)[2:]).all())
    True
    """
    gen = torch.Generator().manual_seed(_splitmix64(_splitmix64(seed) ^ step) >> 1)
    # The CPU generator fills a float64 tensor element by element, so a longer draw extends a shorter one:
    # drawing first_row + N and dropping the head gives the rows one process would use (tested).
    return torch.rand(first_row + num_rows, generator=gen, dtype=torch.float64)[first_row:]


def truncate_probs(
    probs: torch.Tensor, top_k: int = 0, top_p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero the probabilities outside the top-k, then outside the top-p nucleus (vLLM/HF order).

    Args:
        probs: (B, V) probabilities (rows sum to 1).
        top_k: keep the k most likely tokens; 0 or >= V disables.
        top_p: keep the smallest set of most likely tokens whose mass (after top-k) reaches top_p; 1 disables.

    Returns:
        (kept, index): ``kept`` is (B, K) unnormalised probabilities; ``index`` is (B, K) long mapping column
        -> token id, or None when ``kept`` is indexed by token id itself (no truncation, K = V).

    >>> kept, idx = truncate_probs(torch.tensor([[0.1, 0.6, 0.3]]), top_p=0.5)
    >>> kept.tolist(), idx.tolist()
    ([[0.6000000238418579, 0.0, 0.0]], [[1, 2, 0]])
    """
    vocab = probs.shape[-1]
    use_k = 0 < top_k < vocab
    use_p = top_p < 1.0
    if not use_k and not use_p:
        return probs, None
    if use_k:
        kept, index = probs.topk(top_k, dim=-1)  # (B, k), sorted descending
    else:
        kept, index = probs.sort(dim=-1, descending=True)  # (B, V)
    if use_p:
        cum = kept.cumsum(-1)  # (B, K)
        # Drop a token when the mass strictly before it already reaches top_p; the first token always stays.
        drop = (cum - kept) >= top_p * cum[:, -1:]
        kept = kept.masked_fill(drop, 0.0)
    return kept, index


def inverse_cdf_sample(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one column per row with probability proportional to ``weights``, using a given uniform.

    Args:
        weights: (B, K) non-negative, each row with positive sum.
        u: (B,) uniforms in [0, 1).

    Returns:
        (B,) long column indices; a zero-weight column is never chosen.

    >>> inverse_cdf_sample(torch.tensor([[0.2, 0.0, 0.8]]), torch.tensor([0.5])).tolist()
    [2]
    """
    # float64 so that the tail of a 150k-token vocabulary is not lost to cumsum rounding.
    cdf = weights.double().cumsum(-1)  # (B, K)
    target = u.to(cdf.device, torch.float64) * cdf[:, -1]  # (B,)
    # right=True: first column whose cdf exceeds target, which skips zero-weight columns.
    idx = torch.searchsorted(cdf, target.unsqueeze(-1), right=True).squeeze(-1)  # (B,)
    return idx.clamp_(max=weights.shape[-1] - 1)


def sample_tokens(
    logits: torch.Tensor,
    u: torch.Tensor | None,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token of each row and its log-prob under the distribution it was drawn from.

    Args:
        logits: (B, V) next-token logits, any float dtype.
        u: (B,) uniforms in [0, 1), one per row; unused (may be None) when temperature == 0.
        temperature: 0 means greedy (argmax).
        top_k, top_p: truncation, see ``truncate_probs``.

    Returns:
        tokens: (B,) long.
        logprobs: (B,) float32, log_softmax(logits / temperature) at the token (log_softmax(logits) when
        greedy); with top-k / top-p, the log-prob under the truncated, renormalised distribution (vLLM's
        ``processed_logprobs``), which the trainer recomputes with ``truncated_token_logprobs``.

    >>> tok, lp = sample_tokens(torch.tensor([[0.0, 2.0, 1.0]]), None, temperature=0.0)
    >>> tok.tolist()
    [1]
    """
    logits = logits.float()
    if temperature == 0.0:
        logp = torch.log_softmax(logits, dim=-1)  # (B, V)
        tokens = logits.argmax(dim=-1)  # (B,)
    else:
        assert u is not None, "sampling with temperature > 0 needs uniforms"
        logp = torch.log_softmax(logits / temperature, dim=-1)  # (B, V)
        kept, index = truncate_probs(logp.exp(), top_k, top_p)
        col = inverse_cdf_sample(kept, u)  # (B,)
        if index is not None:  # truncated: the drawn token's share of the kept mass
            chosen = kept.gather(-1, col.unsqueeze(-1)).squeeze(-1)
            return index.gather(-1, col.unsqueeze(-1)).squeeze(-1), (chosen / kept.sum(-1)).log()
        tokens = col
    return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
