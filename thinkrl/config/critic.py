"""The ``critic`` section: PPO's value model, used when ``algorithm.advantage`` needs values (``gae``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CriticConfig:
    """PPO with a learned critic (docs/algorithms.md, "PPO with a critic"). Read only when
    ``algorithm.advantage=gae``; GRPO and the other group-relative estimators need no critic."""

    model: str = "head"
    """``head``: a linear value head on the policy's last hidden state. The trunk is shared, so the value loss
    (scaled by ``vf_coef``) also trains the policy's body; no second model is held or run. ``policy``: a
    separate copy of the initial policy with a value head, as verl and TRL's PPO initialise their critic
    from the actor. A model folder or name (``demo`` included): a separate critic with the policy's
    vocabulary."""
    lr: float = 1e-5
    """The critic's own AdamW learning rate (its own optimizer, no schedule). verl: 1e-5 for the critic
    against 1e-6 for the actor; small models need far larger values (see configs/)."""
    value_clip: float | None = 0.5
    """PPO's value clipping: a new value may move at most this far from the value the rollout was scored
    with before its loss stops growing (verl ``cliprange_value`` 0.5; TRL 0.2); null disables."""
    vf_coef: float = 0.1
    """The loss is ``policy + vf_coef * value`` (TRL's PPO: 0.1). With a shared head it weighs how much the
    value loss moves the policy's trunk; a separate critic has its own optimizer, so for it this only
    scales the gradient before clipping."""
    warmup_steps: int = 0
    """Train only the critic for the first N steps (verl ``critic_warmup``): the policy starts learning
    from advantages of a critic that already predicts something; 0 disables."""
