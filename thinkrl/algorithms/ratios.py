"""Importance ratios and the input checks and metrics that every policy loss shares.

The loss modules (``losses``, ``entropy_control``) build on these, so a shape mistake gets the same message
whichever loss is selected, and every loss reports its ratio statistics under the same keys.
"""

from __future__ import annotations

import torch

from ._registry import masked_mean

# exp(20) ~ 4.9e8: far past any clip range, and far from float32 overflow (exp(88)); verl clamps the same.
LOG_RATIO_CLAMP = 20.0

RATIO_LEVELS = ("sequence", "token")


def importance_ratio(
    logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, ratio_level: str = "token"
) -> torch.Tensor:
    """Importance ratio pi_theta / pi_old per token, (N, T) -> (N, T).

    ``"token"`` (PPO/GRPO): ``r_t = exp(logp_t - old_logp_t)``.
    ``"sequence"`` (GSPO, arXiv 2507.18071 eq. 7 and the GSPO-token variant eq. 13):
    ``s_i = exp(mean_t over the masked tokens of (logp - old_logp))`` (length-normalised sequence ratio) and
    ``s_{i,t} = sg(s_i) * exp(logp_t - sg(logp_t))``: its value is ``s_i`` on every token, its gradient
    w.r.t. ``logp_t`` is ``s_i``. Averaged over the sequence's tokens this is exactly the gradient of
    ``s_i`` itself (``s_i * mean_t grad logp_t``), while clipping acts on the whole sequence at once.
    Log-ratios are clamped to [-20, 20] before ``exp``; padded positions (``mask == 0``) get ratio 1.

    >>> lp, old, m = torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1, 1]])
    >>> importance_ratio(lp, old, m, "sequence")  # exp((0 - 1) / 2) on both tokens
    tensor([[0.6065, 0.6065]])
    """
    m = mask.bool()
    # padding may hold anything (-inf, NaN from a sampler): ratio 1 there, so no NaN reaches the gradient
    log_ratio = torch.where(m, logp - old_logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
    if ratio_level == "token":
        return torch.exp(log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    if ratio_level == "sequence":
        lengths = m.sum(-1).clamp(min=1)  # (N,)  empty rows: ratio 1, contribute nothing anyway
        seq_log_ratio = log_ratio.sum(-1) / lengths  # (N,)
        seq_log_ratio = seq_log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).detach()
        lp = torch.where(m, logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
        return torch.exp(seq_log_ratio.unsqueeze(-1) + lp - lp.detach())  # (N, T)
    raise ValueError(f"unknown ratio_level {ratio_level!r}; valid names: {list(RATIO_LEVELS)}")


def check_loss_inputs(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> None:
    """``ValueError`` naming the shapes unless logp, old_logp, mask are (N, T), advantages (N,) or (N, T)."""
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            f"logp, old_logp and mask must all be (N, T); got {tuple(logp.shape)}, {tuple(old_logp.shape)}, "
            f"{tuple(mask.shape)}"
        )
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(
            f"advantages must be (N,) or (N, T) with N={logp.shape[0]}; got {tuple(advantages.shape)}"
        )


def check_clip_range(clip_low: float, clip_high: float) -> None:
    """Both clip widths must be >= 0 (a negative width would invert the trust region)."""
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"clip_low and clip_high must be >= 0, got {clip_low}, {clip_high}")


def refuse(name: str, *, dual_clip: float | None = None, ratio_level: str | None = None) -> None:
    """Raise for a shared-signature argument that loss ``name`` cannot honour, rather than ignore it.

    ``dual_clip`` is only defined for the hard PPO clip; a loss built on per-token statistics (GMPO's
    geometric mean, the covariance selection) has no sequence-ratio form.
    """
    if dual_clip is not None:
        raise ValueError(
            f"policy loss {name!r} has no dual clip (it applies to ppo_clip only); "
            "set algorithm.dual_clip=null"
        )
    if ratio_level is not None and ratio_level != "token":
        if ratio_level not in RATIO_LEVELS:
            raise ValueError(f"unknown ratio_level {ratio_level!r}; valid names: {list(RATIO_LEVELS)}")
        raise ValueError(
            f"policy loss {name!r} works on token ratios only; set algorithm.ratio_level=token "
            "(GSPO's sequence ratio goes with ppo_clip, cispo, sapo or reinforce)"
        )


def token_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1) so it broadcasts over tokens; (N, T) unchanged. Always detached."""
    adv = advantages.detach()
    return adv.unsqueeze(-1) if adv.dim() == 1 else adv


def masked_loss(loss: torch.Tensor, mask: torch.Tensor, is_weights: torch.Tensor | None) -> torch.Tensor:
    """Multiply by the detached ``is_weights`` (if any), then put exact zeros on padding (NaN-safe)."""
    if is_weights is not None:
        loss = loss * is_weights.detach()
    return torch.where(mask.bool(), loss, torch.zeros_like(loss))


@torch.no_grad()
def ratio_metrics(
    ratio: torch.Tensor, logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """ratio_mean / ratio_max over masked tokens and ppo_kl = masked mean of (old_logp - logp)."""
    m = mask.bool()
    r = ratio.detach().float()
    ratio_max = torch.where(m, r, torch.zeros_like(r)).amax() if r.numel() else r.new_zeros(())
    return {
        "ratio_mean": masked_mean(r, m),
        "ratio_max": ratio_max,
        "ppo_kl": masked_mean((old_logp - logp.detach()).float(), m),
    }


@torch.no_grad()
def clip_metrics(low: torch.Tensor, high: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """clip_fraction (= low + high), low_clip_fraction, high_clip_fraction: masked means of (N, T) bools."""
    m = mask.bool()
    return {
        "clip_fraction": masked_mean((low | high).float(), m),
        "low_clip_fraction": masked_mean(low.float(), m),
        "high_clip_fraction": masked_mean(high.float(), m),
    }


@torch.no_grad()
def ppo_clip_metrics(
    ratio: torch.Tensor,
    adv: torch.Tensor,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> dict[str, torch.Tensor]:
    """The clip fractions of PPO's hard clip (low: r < 1 - clip_low with A < 0; high: r > 1 + clip_high with
    A > 0, TRL's definitions) and the ratio statistics."""
    r = ratio.detach()
    return {
        **clip_metrics((r < 1.0 - clip_low) & (adv < 0), (r > 1.0 + clip_high) & (adv > 0), mask),
        **ratio_metrics(r, logp, old_logp, mask),
    }
