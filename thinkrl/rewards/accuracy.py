"""Answer-checking rewards: math accuracy (math-verify) and exact match.

Both read only the answer region (``extract.answer_region``: after the last ``</think>``; nothing while a
think block is open), with the prompt's pre-filled ``<think>`` taken into account.

>>> accuracy_reward(["q", "q"], ["<answer>\\\\frac{1}{2}</answer>", "<answer>0.4</answer>"], answer=["0.5", "0.5"])
[1.0, 0.0]
>>> exact_match_reward(["q"], ["<answer> B </answer>"], answer=["B"])
[1.0]
>>> accuracy_reward(["q"], ["<think>\\\\boxed{14}</think>"], answer=["14"])
[0.0]
"""

from __future__ import annotations

from typing import Any

from thinkrl.rewards.extract import answer_region, extract_answer, extract_answer_tag, with_prefill
from thinkrl.rewards.math_grader import verify_math_batch

MATH_TIMEOUT_S = 5.0
"""Default wall-clock limit of one math-verify check."""


def _rows(prompts: list[Any], n: int) -> list[Any]:
    # A single prompt may stand for all rows (doctests, quick use); otherwise one prompt per completion.
    return list(prompts) * n if len(prompts) == 1 else list(prompts)


def accuracy_reward(
    prompts: list[Any],
    completions: list[Any],
    answer: list[Any] | None = None,
    *,
    math_timeout_s: float = MATH_TIMEOUT_S,
    math_workers: int | None = None,
    **columns: Any,
) -> list[float | None]:
    """1.0 iff the answer (``<answer>`` content, else the last ``\\\\boxed{}``) equals the gold ``answer``.

    Checked with math-verify (LaTeX, fractions, intervals, sets, percentages, units) under the answer policy
    (``math_grader``), with a wall-clock limit per check (``math_timeout_s``); a missing answer, a parse error
    or a timeout scores 0.0. Rows whose gold is None score None.
    """
    if answer is None:
        raise ValueError("accuracy reward needs a column 'answer' with the gold answers")
    texts = [with_prefill(p, c) for p, c in zip(_rows(prompts, len(completions)), completions)]
    preds = [extract_answer(t) for t in texts]
    idx = [i for i, (p, g) in enumerate(zip(preds, answer)) if p is not None and g is not None]
    ok = verify_math_batch(
        [preds[i] for i in idx], [answer[i] for i in idx], math_timeout_s, workers=math_workers
    )
    out: list[float | None] = [None if g is None else 0.0 for g in answer]
    for i, r in zip(idx, ok):
        out[i] = float(r)
    return out


def exact_match_reward(
    prompts: list[Any], completions: list[Any], answer: list[Any] | None = None, **columns: Any
) -> list[float | None]:
    """1.0 iff the stripped ``<answer>`` content equals ``str(answer).strip()``; None where the gold is None."""
    if answer is None:
        raise ValueError("exact_match reward needs a column 'answer' with the gold answers")
    out: list[float | None] = []
    for p, c, g in zip(_rows(prompts, len(completions)), completions, answer):
        if g is None:
            out.append(None)
            continue
        region = answer_region(with_prefill(p, c))
        pred = extract_answer_tag(region) if region is not None else None
        out.append(float(pred is not None and pred == str(g).strip()))
    return out
