"""Answer-checking rewards: math accuracy (math-verify) and exact match.

>>> accuracy_reward(["q", "q"], ["<answer>\\\\frac{1}{2}</answer>", "<answer>0.4</answer>"], answer=["0.5", "0.5"])
[1.0, 0.0]
>>> exact_match_reward(["q"], ["<answer> B </answer>"], answer=["B"])
[1.0]
"""

from __future__ import annotations

from typing import Any

from thinkrl.rewards.extract import as_text, extract_answer, extract_answer_tag
from thinkrl.rewards.math import verify_math_batch

MATH_TIMEOUT_S = 5.0


def accuracy_reward(
    prompts: list[Any], completions: list[Any], answer: list[Any] | None = None, **kwargs: Any
):
    """1.0 iff the answer (``<answer>`` content, else the last ``\\\\boxed{}``) equals the gold ``answer``.

    Checked with math-verify (LaTeX, fractions, intervals, sets, percentages, units) with a time limit per
    check; a missing answer, a parse error or a timeout scores 0.0. Rows whose gold is None score None.
    """
    if answer is None:
        raise ValueError("accuracy reward needs a column 'answer' with the gold answers")
    preds = [extract_answer(as_text(c)) for c in completions]
    idx = [i for i, (p, g) in enumerate(zip(preds, answer)) if p is not None and g is not None]
    ok = verify_math_batch([preds[i] for i in idx], [answer[i] for i in idx], MATH_TIMEOUT_S)
    out: list[float | None] = [None if g is None else 0.0 for g in answer]
    for i, r in zip(idx, ok):
        out[i] = float(r)
    return out


def exact_match_reward(
    prompts: list[Any], completions: list[Any], answer: list[Any] | None = None, **kwargs: Any
):
    """1.0 iff the stripped ``<answer>`` content equals ``str(answer).strip()``; None where the gold is None."""
    if answer is None:
        raise ValueError("exact_match reward needs a column 'answer' with the gold answers")
    out: list[float | None] = []
    for c, g in zip(completions, answer):
        if g is None:
            out.append(None)
            continue
        pred = extract_answer_tag(as_text(c))
        out.append(float(pred is not None and pred == str(g).strip()))
    return out


accuracy_reward.__name__ = "accuracy"
exact_match_reward.__name__ = "exact_match"
