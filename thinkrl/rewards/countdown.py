"""Countdown (TinyZero's task): combine the given numbers with + - * / to reach the target.

The answer is the content of ``<answer>…</answer>`` (an equation such as ``(100 - 93) + 30`` or
``(100 - 93) + 30 = 37``; a trailing ``= target`` is allowed). It scores 1.0 iff every given number is used
exactly once (as a multiset), only binary + - * / and parentheses appear, and the value equals the target
exactly (rational arithmetic, so ``7/2*2`` is exactly 7). Anything else, including division by zero, is 0.0.
The expression is parsed with ``ast`` and walked by hand: model text is never passed to ``eval``.

>>> countdown_reward(["q"], ["<answer>(100 - 93) + 30</answer>"], numbers=[[30, 100, 93]], target=[37])
[1.0]
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from thinkrl.rewards.extract import answer_region, extract_answer_tag, with_prefill

_MAX_EXPR_CHARS = 300  # a Countdown equation is short; a longer one is not an answer (and bounds parse cost)
_ALLOWED_CHARS = re.compile(r"[\d+\-*/().\s×÷]+")
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def _value(node: ast.AST, used: list[int]) -> Fraction:
    """Exact value of an expression node made only of int literals and binary + - * /; records numbers used."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        a, b = _value(node.left, used), _value(node.right, used)
        if isinstance(node.op, ast.Div):
            if b == 0:
                raise ZeroDivisionError
            return a / b
        op = _OPS.get(type(node.op))
        if op is not None:
            return op(a, b)
    raise ValueError(f"not allowed in a Countdown equation: {type(node).__name__}")


def evaluate_equation(expr: str) -> tuple[Fraction, list[int]] | None:
    """``(value, numbers used)`` of a Countdown expression, or None if it is not one.

    >>> evaluate_equation("(6 + 4) * 2 / 5")
    (Fraction(4, 1), [6, 4, 2, 5])
    >>> evaluate_equation("__import__('os')") is None, evaluate_equation("-3 + 5") is None
    (True, True)
    """
    expr = expr.strip().replace("×", "*").replace("÷", "/")
    if not expr or len(expr) > _MAX_EXPR_CHARS or not _ALLOWED_CHARS.fullmatch(expr):
        return None
    try:
        tree = ast.parse(expr, mode="eval")
        used: list[int] = []
        return _value(tree.body, used), used
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError):
        return None


def _as_numbers(x: Any) -> list[int] | None:
    # d1's data stores "30,100,93"; TinyZero's stores a list.
    if isinstance(x, str):
        x = [p for p in re.split(r"[,\s]+", x.strip(" []")) if p]
    try:
        return [int(v) for v in x]
    except (TypeError, ValueError):
        return None


def countdown_score(answer: str | None, numbers: Any, target: Any) -> float:
    """1.0 iff ``answer`` is an equation using each of ``numbers`` once and equal to ``target``.

    >>> countdown_score("30 + 100 - 93 = 37", [30, 100, 93], 37), countdown_score("30 + 7", [30, 100, 93], 37)
    (1.0, 0.0)
    """
    nums = _as_numbers(numbers)
    try:
        tgt = Fraction(str(target).strip())
    except (ValueError, ZeroDivisionError):
        return 0.0
    if answer is None or nums is None:
        return 0.0
    lhs, _, rhs = answer.partition("=")
    if rhs.strip():  # "expr = 37" is fine if the right side is the target itself
        try:
            if Fraction(rhs.strip()) != tgt:
                return 0.0
        except (ValueError, ZeroDivisionError):
            return 0.0
    res = evaluate_equation(lhs)
    if res is None:
        return 0.0
    value, used = res
    return float(value == tgt and Counter(used) == Counter(nums))


def countdown_reward(
    prompts: list[str], completions: list[str], numbers: list[Any], target: list[Any], **kwargs: Any
) -> list[float | None]:
    """Countdown reward per row (columns ``numbers``: list[int] or "a,b,c"; ``target``: int); None when unset.

    The answer is the last ``<answer>`` tag of the answer region (nothing inside ``<think>`` counts).
    """
    out: list[float | None] = []
    rows = list(prompts) * len(completions) if len(prompts) == 1 else list(prompts)
    for p, c, nums, tgt in zip(rows, completions, numbers, target):
        if nums is None or tgt is None:
            out.append(None)
            continue
        region = answer_region(with_prefill(p, c))
        out.append(countdown_score(extract_answer_tag(region) if region is not None else None, nums, tgt))
    return out
