"""PPO's critic: a linear value head on the policy's trunk, or a separate model with one (``critic`` section).

``V(s_t)`` is read at the position whose logits give the log-prob of completion token ``t`` (the state
before the token, verl's ``values[:, -T - 1:-1]``), so values line up with log-probs column for column. The
head starts at zero: the first step's values are 0, so its GAE advantages are the whitened returns, and no
random number is drawn (the policy's runs keep their random streams).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from thinkrl.algorithms import (
    CRITIC_ADVANTAGES,
    compute_critic_advantages,
    masked_whiten,
    outcome_token_rewards,
)
from thinkrl.config import AlgorithmConfig, Config
from thinkrl.core import disable_dropout, load_model_and_tokenizer
from thinkrl.train.batch import TrainBatch, autocast_context, hidden_states, split_lm_head


class Critic(torch.nn.Module):
    """A value head on a backbone's last hidden state. ``body`` None: the head sits on the policy's own trunk
    (the learner runs one forward for both, :func:`thinkrl.train.batch.forward_with_values`); else ``body`` is
    a separate backbone that this module owns and trains."""

    def __init__(self, head: torch.nn.Linear, body: torch.nn.Module | None = None):
        super().__init__()
        self.head = head
        self.body = body

    @property
    def shared(self) -> bool:
        """Whether the head sits on the policy's trunk (no body of its own)."""
        return self.body is None

    def head_values(self, states: torch.Tensor) -> torch.Tensor:
        """(N, T, D) hidden states -> (N, T) float32 values."""
        return self.head(states.to(self.head.weight.dtype)).squeeze(-1).float()

    def values(
        self, batch: TrainBatch, *, share_prompt: bool = False, autocast: str = "none"
    ) -> torch.Tensor:
        """(N, T) values of a separate critic for ``batch``'s completion tokens (with grad when enabled)."""
        if self.body is None:
            raise RuntimeError("a shared value head has no trunk of its own: use forward_with_values")
        with autocast_context(self.head.weight.device, autocast):
            return self.head_values(hidden_states(self.body, batch, share_prompt=share_prompt))


def build_critic(cfg: Config, model: torch.nn.Module, tokenizer: Any, parallel: Any) -> Critic | None:
    """The critic ``cfg.critic`` describes, on the policy's device; None when ``algorithm.advantage`` needs
    no values (the group-relative estimators). Every rank starts from rank 0's critic."""
    if cfg.algorithm.advantage not in CRITIC_ADVANTAGES:
        return None
    name = cfg.critic.model
    device = next(model.parameters()).device
    if name == "head":
        parts = split_lm_head(model)
        if parts is None:
            raise ValueError(
                f"critic.model=head needs the policy's logits to be lm_head(last hidden state); "
                f"{type(model).__name__} is not such a model (softcapping, logit scaling, a wrapped head): set "
                "critic.model=policy (a separate critic)"
            )
        critic = Critic(_zero_head(parts[1].in_features, parts[1].weight.dtype))
    else:
        source = model
        if name != "policy":
            source, own_tokenizer = load_model_and_tokenizer(name, dtype=cfg.model.dtype)
            if own_tokenizer.get_vocab() != tokenizer.get_vocab():
                raise ValueError(
                    f"critic.model={name!r} has another tokenizer than the policy ({len(own_tokenizer)} vs "
                    f"{len(tokenizer)} tokens, or other ids): the critic reads the policy's token ids; use a "
                    "model with the policy's tokenizer, or critic.model=policy"
                )
        body = getattr(source, "base_model", None)
        if body is None or body is source:
            raise ValueError(f"critic.model={name!r}: cannot find the backbone of {type(source).__name__}")
        body = copy.deepcopy(body) if name == "policy" else body
        disable_dropout(body)
        width = source.get_output_embeddings().in_features
        critic = Critic(_zero_head(width, next(body.parameters()).dtype), body.train())
    critic = critic.to(device)
    parallel.broadcast(critic)
    return critic


def gae_targets(batch: TrainBatch, a: AlgorithmConfig, total: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """GAE over ``batch``'s completion tokens from its critic values (``batch.old_values``), with each row's
    total reward on its last loss token: sets ``batch.returns`` and ``batch.advantages`` (N, T), the latter
    whitened over the tokens of every rank (``total`` sums over ranks)."""
    token_rewards = outcome_token_rewards(batch.rewards, batch.mask)
    adv, batch.returns = compute_critic_advantages(
        a.advantage, token_rewards, batch.old_values, batch.mask, gamma=a.gamma, lam=a.lam, whiten=False
    )
    batch.advantages = masked_whiten(adv, batch.mask, total=total)


def _zero_head(width: int, dtype: torch.dtype) -> torch.nn.Linear:
    head = torch.nn.utils.skip_init(torch.nn.Linear, width, 1, dtype=dtype)  # no draw from the global RNG
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head


def value_sums(
    v_loss: torch.Tensor,
    v_metrics: dict[str, torch.Tensor],
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """A micro-batch's critic statistics as sums over its tokens (the loss as it is: already normalised), so
    :func:`explained_variance` can combine every micro-batch and rank exactly."""
    m = mask.bool()
    n_tok = mask.sum()
    err = torch.where(m, returns - values.detach(), torch.zeros_like(values))
    ret = torch.where(m, returns, torch.zeros_like(returns))
    return {
        "value_loss": v_loss.detach(),
        "value_clip_fraction": v_metrics["value_clip_fraction"] * n_tok,
        "value_mean": v_metrics["value_mean"] * n_tok,
        "returns_mean": v_metrics["returns_mean"] * n_tok,
        "_err": err.sum(), "_err_sq": err.square().sum(), "_ret_sq": ret.square().sum(),
    }  # fmt: skip


def explained_variance(out: dict[str, torch.Tensor]) -> None:
    """Replace the token means of :func:`value_sums`' helpers in ``out`` by ``explained_variance`` =
    1 - Var(R - V) / Var(R) over every token the update saw (0 when the returns are constant)."""
    var_err = out.pop("_err_sq") - out.pop("_err").square()
    var_ret = out.pop("_ret_sq") - out["returns_mean"].square()
    out["explained_variance"] = torch.where(var_ret > 0, 1 - var_err / var_ret.clamp(min=1e-30), 0.0)
