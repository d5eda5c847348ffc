"""Log-probs and entropy straight from the last hidden states, through the LM head in tiles of positions.

The plain path asks the model for (N, T, V) logits, keeps them (and their gradient) for the backward, then
takes a log-softmax. Here a custom autograd function projects ``tile`` positions at a time, keeps only one
float per position (the log-sum-exp, plus the entropy), and recomputes each tile's logits in the backward:
peak memory falls from ~2·N·T·V floats to one tile, for one extra ``h @ Wᵀ`` per tile in the backward
(the same trade as TRL 1.16's fused LM head and Liger's fused linear cross-entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._chunks import rows_per_chunk

# float32 logits per tile: a tile's forward and backward hold ~4 tensors of this size. 32 MiB is 256 positions
# at a 32k vocabulary and 55 at Qwen2.5's 152k, rows enough to keep the head's matmul efficient.
_TILE_BYTES = 32 << 20


def _tile_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float):
    """(n, D) -> (n, V) float32 logits / temperature from a head already in the compute dtype (autocast off)."""
    z = F.linear(h.to(weight.dtype), weight, bias).float()
    return z if temperature == 1.0 else z / temperature


def _compute_head(
    weight: torch.Tensor, bias: torch.Tensor | None, autocast: tuple[str, bool, torch.dtype]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head in the dtype the plain path's matmul would use: the autocast dtype if autocast is on, else its
    own. Cast once per call: autocast would re-cast it per tile (its cache keeps only trainable leaves, and is
    cleared whenever the outermost autocast region exits, i.e. per tile in the backward)."""
    _, enabled, dtype = autocast
    if not enabled:
        return weight, bias
    return weight.to(dtype), None if bias is None else bias.to(dtype)


class _LinearLogprobs(torch.autograd.Function):
    """(P, D) hidden, (V, D) weight, (V,) bias or None, (P,) tokens -> (P,) log-probs, (P,) entropy."""

    @staticmethod
    def forward(ctx, h, weight, bias, tokens, temperature, tile):  # type: ignore[override]
        p = h.shape[0]
        logp = torch.empty(p, dtype=torch.float32, device=h.device)
        entropy = torch.empty_like(logp)
        lse = torch.empty_like(logp)
        # the backward recomputes the logits under the forward's autocast state, so they match exactly
        dev = h.device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        w, b = _compute_head(weight, bias, ctx.autocast)
        with torch.autocast(dev, enabled=False):
            for i in range(0, p, tile):
                z = _tile_logits(h[i : i + tile], w, b, temperature)  # (tile, V)
                lse[i : i + tile] = s = torch.logsumexp(z, dim=-1)
                logp[i : i + tile] = z.gather(-1, tokens[i : i + tile, None]).squeeze(-1) - s
                # H = lse - sum_v p_v z_v; the logits of a linear head are finite, so no 0 * -inf here
                entropy[i : i + tile] = s - (torch.softmax(z, dim=-1) * z).sum(-1)
        ctx.save_for_backward(h, weight, bias, tokens, lse, entropy)
        ctx.temperature, ctx.tile = temperature, tile
        ctx.set_materialize_grads(False)  # the entropy is often only logged: no all-zero gradient pass then
        return logp, entropy

    @staticmethod
    def backward(ctx, g_logp, g_ent):  # type: ignore[override]
        h, weight, bias, tokens, lse, entropy = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        w, b = _compute_head(weight, bias, ctx.autocast)
        # The gradient matmuls run in the compute dtype too, as autocast's backward of the plain path's
        # linear would (bf16 tensor cores on GPU); gradients are accumulated in float32.
        with torch.autocast(ctx.autocast[0], enabled=False):
            for i in range(0, h.shape[0], ctx.tile):
                sl = slice(i, i + ctx.tile)
                z = _tile_logits(h[sl], w, b, ctx.temperature)  # recomputed: (tile, V)
                prob = torch.exp(z - lse[sl, None])
                gz = torch.zeros_like(z)
                if g_logp is not None:  # d logp_y / dz = onehot(y) - softmax(z)
                    gz -= prob * g_logp[sl, None]
                    gz.scatter_add_(-1, tokens[sl, None], g_logp[sl, None])
                if g_ent is not None:  # dH / dz_v = -p_v (z_v - sum_u p_u z_u), and sum_u p_u z_u = lse - H
                    gz -= g_ent[sl, None] * prob * (z - (lse[sl] - entropy[sl])[:, None])
                if ctx.temperature != 1.0:
                    gz /= ctx.temperature
                if need_b:
                    grad_b += gz.sum(0)
                gz = gz.to(w.dtype)
                if need_h:
                    grad_h[sl] = gz @ w
                if need_w:
                    grad_w += (gz.T @ h[sl].to(w.dtype)).float()
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
            None,
        )


def lm_head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax((h Wᵀ + b) / temperature)`` at ``tokens`` and the entropy of that distribution, in tiles.

    Args:
        hidden: (N, T, D) last hidden states; ``hidden[:, t]`` predicts ``tokens[:, t]`` (shift before calling).
        weight, bias: the LM head, (V, D) and (V,) or None.
        tokens: (N, T) token ids.
        temperature: the sampling temperature (> 0), as in :func:`token_logprobs`.
        chunk_size: positions per tile; default as many as fit 32 MiB of float32 logits.

    Returns:
        (N, T) float32 log-probs and (N, T) float32 entropy, both differentiable w.r.t. ``hidden``, ``weight``
        and ``bias``; values equal ``token_logprobs`` / ``entropy_from_logits`` on the full logits.

    >>> h, w = torch.zeros(1, 2, 3), torch.zeros(4, 3)  # uniform over 4 tokens
    >>> lm_head_logprobs(h, w, torch.tensor([[0, 3]]))[0]
    tensor([[-1.3863, -1.3863]])
    """
    if hidden.dim() != 3 or tokens.shape != hidden.shape[:2] or weight.dim() != 2:
        raise ValueError(
            f"hidden must be (N, T, D), tokens (N, T) and weight (V, D); got {tuple(hidden.shape)}, "
            f"{tuple(tokens.shape)} and {tuple(weight.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, t, d = hidden.shape
    tile = rows_per_chunk(n * t, weight.shape[0], chunk_size, _TILE_BYTES)
    logp, entropy = _LinearLogprobs.apply(
        hidden.reshape(n * t, d), weight, bias, tokens.reshape(-1).long(), temperature, tile
    )
    return logp.view(n, t), entropy.view(n, t)
