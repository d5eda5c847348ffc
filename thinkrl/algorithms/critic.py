"""PPO with a learned critic, the pure parts: outcome reward placement, GAE, whitening, clipped value loss.

The critic (a value head on the policy or a separate small model) predicts ``V(s_t)`` for every completion
token; the learner gathers those values once per rollout (``old_values``, no grad) and again in every
minibatch (``values``, with grad). With an outcome reward at the last token, ``gamma = lam = 1`` makes GAE's
advantage ``R - V(s_t)``: a per-token baseline learned instead of GRPO's group mean (verl's defaults for
``adv_estimator=gae``).

Registry ``CRITIC_ADVANTAGES`` holds the estimators that need values (signature
``fn(token_rewards (N,T), values (N,T), mask (N,T), *, gamma, lam, whiten) -> (advantages, returns)``),
kept apart from ``ADVANTAGES`` (``fn(rewards (N,), group_ids (N,))``) so each registry has one signature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._registry import lookup, masked_mean

CriticAdvantageFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def outcome_token_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, T) token rewards: ``rewards`` (N,) at each row's last masked token, 0 elsewhere (verl puts the
    score at ``response_length - 1``; TRL's PPO at the last non-padding token). An empty row gets nothing.

    >>> outcome_token_rewards(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]]))
    tensor([[0., 1., 0.],
            [0., 0., 2.],
            [0., 0., 0.]])
    """
    if rewards.dim() != 1 or mask.dim() != 2 or rewards.shape[0] != mask.shape[0]:
        raise ValueError(
            "rewards must be (N,) and mask (N, T) with the same N; "
            f"got {tuple(rewards.shape)}, {tuple(mask.shape)}"
        )
    m = mask.bool()
    t = mask.shape[1]
    position = torch.arange(t, device=mask.device).expand_as(m)  # (N, T)
    # (N, 1) index of each row's last masked token; -1 for an empty row, which then matches nothing
    last = torch.where(m, position, torch.full_like(position, -1)).amax(-1, keepdim=True)
    at_last = (position == last) & m  # (N, T)
    return torch.where(at_last, rewards.unsqueeze(-1).to(torch.float32), torch.zeros((), dtype=torch.float32))


def masked_whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps: float = 1e-8,
    total: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the masked entries (Bessel-corrected var, as TRL's and verl's
    ``masked_whiten``), 0 on padding. With fewer than two masked entries there is no variance: the result is
    ``x - mean`` (0), never NaN (verl raises there).

    ``total``: when the batch is split over processes, a function that sums a tensor over all of them (an
    all-reduce), so mean and variance are the whole batch's; None = ``values`` is the whole batch.

    >>> masked_whiten(torch.tensor([[1.0, 3.0, 99.0]]), torch.tensor([[1, 1, 0]]))  # mean 2, var 2
    tensor([[-0.7071,  0.7071,  0.0000]])
    """
    m = mask.bool()
    total = total or (lambda t: t)
    n = total(m.sum())
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    mean = total(torch.where(m, values, zero).sum()) / n.clamp(min=1).to(values.dtype)
    centred = torch.where(m, values - mean, torch.zeros_like(values))
    var = total(centred.square().sum()) / (n - 1).clamp(min=1)
    scale = torch.where(n > 1, torch.rsqrt(var + eps), torch.ones_like(var))
    return centred * scale


def gae_advantages(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438) over completion tokens.

    ``delta_t = r_t + gamma V_{t+1} - V_t``; ``A_t = delta_t + gamma lam A_{t+1}``, backwards from the last
    token with ``V`` and ``A`` beyond it 0; ``returns = A + V`` (before whitening, the critic's target).
    Masked-out positions inside a row (e.g. tool output in a multi-turn completion) are skipped: the next
    value and the running advantage pass over them unchanged (verl ``compute_gae_advantage_return``). With
    ``whiten`` the advantages are whitened over all masked tokens of the batch (TRL PPO and verl both do).
    Defaults ``gamma = lam = 1`` are verl's (TRL PPO: lam 0.95).

    Shapes: token_rewards, values, mask (N, T) -> (advantages (N, T), returns (N, T)), float32, detached,
    0 on padding.

    >>> r = torch.tensor([[0.0, 0.0, 1.0]])
    >>> v = torch.tensor([[0.5, 0.25, 0.75]])
    >>> adv, ret = gae_advantages(r, v, torch.ones(1, 3), whiten=False)  # gamma = lam = 1: A_t = R - V_t
    >>> adv, ret
    (tensor([[0.5000, 0.7500, 0.2500]]), tensor([[1., 1., 1.]]))
    """
    if token_rewards.dim() != 2 or values.shape != token_rewards.shape or mask.shape != token_rewards.shape:
        raise ValueError(
            f"token_rewards, values and mask must all be (N, T); got {tuple(token_rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    if not (0 <= gamma <= 1 and 0 <= lam <= 1):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    with torch.no_grad():
        m = mask.bool()
        zero = torch.zeros((), dtype=torch.float32, device=values.device)
        r = torch.where(m, token_rewards.float(), zero)  # (N, T) padding may hold anything
        v = torch.where(m, values.float(), zero)
        next_value = torch.zeros_like(v[:, 0])  # (N,)
        running = torch.zeros_like(v[:, 0])  # (N,)
        out = torch.zeros_like(v)
        for t in range(v.shape[1] - 1, -1, -1):
            delta = r[:, t] + gamma * next_value - v[:, t]
            keep = m[:, t]
            running = torch.where(keep, delta + gamma * lam * running, running)
            next_value = torch.where(keep, v[:, t], next_value)
            out[:, t] = running
        advantages = torch.where(m, out, zero)
        returns = torch.where(m, advantages + v, zero)
        if whiten:
            advantages = masked_whiten(advantages, m)
    return advantages, returns


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_range: float | None = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss per token: ``0.5 max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)``.

    The clip keeps the critic near the values it had when the rollout was scored, as PPO's ratio clip does
    for the policy (verl ``compute_value_loss``, ``cliprange_value`` 0.5; TRL PPO ``cliprange_value`` 0.2).
    ``clip_range=None`` is the plain ``0.5 (V - R)^2``. Reduce with ``aggregate_loss`` like the policy loss
    (both peers use token-mean) and scale by the learner's value coefficient.

    Shapes: values (N, T) with grad; old_values, returns, mask (N, T). Returns ((N, T) loss, 0 on padding;
    metrics ``value_clip_fraction`` (the clipped branch was larger, verl ``vf_clipfrac``), ``value_mean``,
    ``returns_mean``, ``explained_variance`` = 1 - Var(R - V) / Var(R) (1 is a perfect critic; 0 when R is
    constant)).

    >>> loss, m = value_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]),
    ...                      torch.ones(1, 1))
    >>> loss, m["value_clip_fraction"]  # clipped V = 0.5: max((2 - 1)^2, (0.5 - 1)^2) / 2
    (tensor([[0.5000]]), tensor(0.))
    """
    if values.dim() != 2 or not (values.shape == old_values.shape == returns.shape == mask.shape):
        raise ValueError(
            f"values, old_values, returns and mask must all be (N, T); got {tuple(values.shape)}, "
            f"{tuple(old_values.shape)}, {tuple(returns.shape)}, {tuple(mask.shape)}"
        )
    if clip_range is not None and clip_range <= 0:
        raise ValueError(f"clip_range must be > 0 or None (no clipping), got {clip_range}")
    m = mask.bool()
    ret = returns.detach()
    unclipped = (values - ret).square()
    if clip_range is None:
        loss = unclipped
        clipped_larger = torch.zeros_like(m)
    else:
        old = old_values.detach()
        clipped = (torch.clamp(values, old - clip_range, old + clip_range) - ret).square()
        loss = torch.maximum(unclipped, clipped)
        clipped_larger = clipped > unclipped
    loss = torch.where(m, 0.5 * loss, torch.zeros_like(loss))

    with torch.no_grad():
        v = values.detach().float()
        rf = ret.float()
        var_r = masked_mean((rf - masked_mean(rf, m)).square(), m)
        err = rf - v
        var_err = masked_mean((err - masked_mean(err, m)).square(), m)
        explained = torch.where(var_r > 0, 1.0 - var_err / var_r.clamp(min=1e-30), torch.zeros_like(var_r))
        metrics = {
            "value_clip_fraction": masked_mean(clipped_larger.float(), m),
            "value_mean": masked_mean(v, m),
            "returns_mean": masked_mean(rf, m),
            "explained_variance": explained,
        }
    return loss, metrics


CRITIC_ADVANTAGES: dict[str, CriticAdvantageFn] = {"gae": gae_advantages}


def compute_critic_advantages(
    name: str,
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, returns)`` (N, T) from the estimator registered as ``name`` in ``CRITIC_ADVANTAGES``.

    >>> compute_critic_advantages("gae", torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2),
    ...                           whiten=False)[0]
    tensor([[1., 1.]])
    """
    fn = lookup(CRITIC_ADVANTAGES, name, "critic advantage estimator")
    return fn(token_rewards, values, mask, gamma=gamma, lam=lam, whiten=whiten)
