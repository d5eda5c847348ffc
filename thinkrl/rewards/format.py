"""Format rewards: does the completion follow the R1-Zero layout?

Values (all in [0, 1]):

- ``format`` (R1-Zero): 1.0 iff the completion is ``<think>T</think> <answer>A</answer>`` — each of the four
  tags exactly once, in that order, only whitespace before ``<think>``, between ``</think>`` and ``<answer>``
  and after ``</answer>``, and both T and A non-empty after stripping. Else 0.0.
- ``format_think``: 1.0 iff ``<think>T</think>`` appears once each, in order, T non-empty, and non-empty text
  follows ``</think>`` (the distilled-R1 style, answer in plain text or ``\\boxed{}``). Else 0.0.
- ``tag_count``: 0.25 for each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` that occurs exactly once
  (partial credit that gives a gradient before the full format is ever sampled).

If the prompt ends with ``<think>`` (templates that pre-fill it), the completion is scored as if it began
with ``<think>``. Matching is linear in the text length; a completion over ``MAX_PARSE_CHARS`` (1M characters)
scores 0.0.

>>> format_reward(["q"], ["<think>2+2=4</think>\\n<answer>4</answer>", "<answer>4</answer>"])
[1.0, 0.0]
>>> tag_count_reward(["q"], ["<think>x</think> 4"])
[0.5]
"""

from __future__ import annotations

from typing import Any

from thinkrl.rewards.extract import MAX_PARSE_CHARS, with_prefill

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def r1_format_ok(text: str) -> bool:
    """The R1-Zero format check on one completion (see module docstring).

    >>> r1_format_ok("<think>a</think><answer>b</answer>  "), r1_format_ok("<think>a</think><answer>b</answer>.")
    (True, False)
    """
    if len(text) > MAX_PARSE_CHARS or any(text.count(t) != 1 for t in _TAGS):
        return False
    i0, i1, i2, i3 = (text.index(t) for t in _TAGS)
    if not i0 < i1 < i2 < i3:
        return False
    think = text[i0 + len("<think>") : i1]
    answer = text[i2 + len("<answer>") : i3]
    outside = text[:i0] + text[i1 + len("</think>") : i2] + text[i3 + len("</answer>") :]
    return bool(think.strip()) and bool(answer.strip()) and not outside.strip()


def think_format_ok(text: str) -> bool:
    """One ``<think>…</think>`` block at the start, non-empty, followed by a non-empty final answer.

    >>> think_format_ok("<think>a</think> The answer is 4."), think_format_ok("<think>a</think>")
    (True, False)
    """
    if len(text) > MAX_PARSE_CHARS or text.count("<think>") != 1 or text.count("</think>") != 1:
        return False
    i0, i1 = text.index("<think>"), text.index("</think>")
    if i1 < i0 or text[:i0].strip():
        return False
    return bool(text[i0 + len("<think>") : i1].strip()) and bool(text[i1 + len("</think>") :].strip())


def tag_count_score(text: str) -> float:
    """0.25 per tag that occurs exactly once.

    >>> tag_count_score("<think><think></think><answer>1</answer>")
    0.75
    """
    if len(text) > MAX_PARSE_CHARS:
        return 0.0
    return 0.25 * sum(text.count(t) == 1 for t in _TAGS)


def format_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """R1-Zero format reward: 1.0 or 0.0 per completion (see module docstring)."""
    return [
        float(r1_format_ok(with_prefill(p, c))) for p, c in zip(_prompts(prompts, completions), completions)
    ]


def format_think_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """Think-then-answer reward without answer tags: 1.0 or 0.0."""
    return [
        float(think_format_ok(with_prefill(p, c)))
        for p, c in zip(_prompts(prompts, completions), completions)
    ]


def tag_count_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """Partial format credit: 0.25 per tag present exactly once; 0.0 to 1.0."""
    return [tag_count_score(with_prefill(p, c)) for p, c in zip(_prompts(prompts, completions), completions)]


def _prompts(prompts: list[str], completions: list[str]) -> list[str]:
    # A single prompt may stand for all rows (doctests, quick use); otherwise one prompt per completion.
    return list(prompts) * len(completions) if len(prompts) == 1 else list(prompts)
