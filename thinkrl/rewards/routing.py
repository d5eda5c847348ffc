"""Per-row routing: one dataset can mix tasks, each row naming its checker in the column ``verifier``.

>>> routed_reward(["q", "q"], ["<answer>4</answer>", "<answer>1+3</answer>"],
...               verifier=["math", "countdown"], answer=["4", None], numbers=[None, [1, 3]], target=[None, 4])
[1.0, 1.0]
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


def routed_reward(
    prompts: list[Any], completions: list[Any], verifier: list[Any] | None = None, **columns: Any
):
    """Score each row with the reward its ``verifier`` column names; each checker is called once per batch."""
    if verifier is None:
        raise ValueError(f"routed reward needs a column 'verifier' naming one of {sorted(VERIFIERS)} per row")
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(verifier):
        if v is None or v == "":
            continue
        key = str(v).strip().lower()
        if key not in VERIFIERS:
            raise ValueError(f"row {i}: unknown verifier {v!r}; valid: {', '.join(sorted(VERIFIERS))}")
        groups.setdefault(key, []).append(i)
    out: list[float | None] = [None] * len(completions)
    for key, rows in groups.items():
        sub = {k: [col[i] for i in rows] for k, col in columns.items()}
        scores = VERIFIERS[key]([prompts[i] for i in rows], [completions[i] for i in rows], **sub)
        for i, s in zip(rows, scores):
            out[i] = s
    return out


routed_reward.__name__ = "routed"
