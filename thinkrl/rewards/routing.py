"""Per-row routing: one dataset can mix tasks, each row naming its checker in the column ``verifier``.

>>> routed_reward(["q", "q"], ["<answer>4</answer>", "<answer>1+3</answer>"],
...               verifier=["math", "countdown"], answer=["4", None], numbers=[None, [1, 3]], target=[None, 4])
[1.0, 1.0]

Rows for a reward model carry ``verifier: reward_model`` (or ``reward_model:TAG``): ``routed`` scores them None
and a ``reward_model`` reward with ``route`` set to that value scores them (``thinkrl.rewards.reward_model``).

>>> routed_reward(["q", "q"], ["<answer>4</answer>", "Sure!"], verifier=["math", "reward_model"], answer=["4", None])
[1.0, None]
"""

from __future__ import annotations

from typing import Any

from thinkrl.rewards.accuracy import accuracy_reward, exact_match_reward
from thinkrl.rewards.code import code_partial_reward, code_reward
from thinkrl.rewards.countdown import countdown_reward

VERIFIERS = {
    "math": accuracy_reward,
    "accuracy": accuracy_reward,
    "exact": exact_match_reward,
    "exact_match": exact_match_reward,
    "countdown": countdown_reward,
    "code": code_reward,
    "code_partial": code_partial_reward,
}
"""verifier column value -> reward function. A row with verifier None/"" scores None (not applicable)."""

MODEL_ROUTE = "reward_model"
"""The verifier value of rows scored by a reward model (also ``reward_model:TAG`` for several models)."""


def route_key(value: Any) -> str | None:
    """A ``verifier`` cell as a routing key: stripped and lower-cased; None for an empty cell."""
    return None if value is None or value == "" else str(value).strip().lower()


def is_model_route(key: str) -> bool:
    """True for the verifier values left to reward models: ``reward_model`` and ``reward_model:TAG``."""
    return key == MODEL_ROUTE or key.startswith(MODEL_ROUTE + ":")


_SETTINGS = {  # grader settings each checker takes (bound by build_reward), never split by row
    "math": ("math_timeout_s", "math_workers"),
    "code": ("code_limits", "code_sandbox", "code_workers"),
}


def routed_reward(
    prompts: list[Any], completions: list[Any], verifier: list[Any] | None = None, **columns: Any
) -> list[float | None]:
    """Score each row with the reward its ``verifier`` column names; each checker is called once per batch.

    Rows whose verifier is empty or a reward-model route score None. Grader settings (``math_timeout_s``,
    ``code_sandbox``, ...) are passed to the checkers that take them.
    """
    settings = {k: columns.pop(k) for k in [*_SETTINGS["math"], *_SETTINGS["code"]] if k in columns}
    if verifier is None:
        raise ValueError(f"routed reward needs a column 'verifier' naming one of {sorted(VERIFIERS)} per row")
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(verifier):
        key = route_key(v)
        if key is None or is_model_route(key):  # not applicable here, or scored by a reward model
            continue
        if key not in VERIFIERS:
            raise ValueError(
                f"row {i}: unknown verifier {v!r}; valid: {', '.join(sorted(VERIFIERS))}, or {MODEL_ROUTE}[:TAG] "
                "for rows a reward model scores"
            )
        groups.setdefault(key, []).append(i)
    out: list[float | None] = [None] * len(completions)
    for key, rows in groups.items():
        sub = {k: [col[i] for i in rows] for k, col in columns.items()}
        fn = VERIFIERS[key]
        kind = "math" if fn is accuracy_reward else "code" if fn in (code_reward, code_partial_reward) else ""
        sub.update({k: settings[k] for k in _SETTINGS.get(kind, ()) if k in settings})
        rows_prompts = [prompts[i] for i in rows] if len(prompts) == len(completions) else list(prompts)
        scores = fn(rows_prompts, [completions[i] for i in rows], **sub)
        for i, s in zip(rows, scores):
            out[i] = s
    return out
