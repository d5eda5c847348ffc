"""Extractors (pure functions), format rewards and their adversarial cases, registry, doctests."""

from __future__ import annotations

import doctest
import importlib
import time

import pytest

from thinkrl.rewards import REWARDS, get_reward
from thinkrl.rewards.extract import (
    extract_answer,
    extract_answer_tag,
    extract_boxed,
    extract_code,
    extract_gsm8k,
    extract_last_number,
)
from thinkrl.rewards.format import format_reward, format_think_reward, tag_count_reward

MODULES = [
    "extract",
    "format",
    "countdown",
    "language",
    "shaping",
    "accuracy",
    "routing",
    "math_grader",
    "code",
    "code_tests",
    "named",
    "registry",
    "settings",
    "stats",
    "pool",
    "scorer",
    "sandbox",
    "__init__",
]


@pytest.mark.parametrize("mod", MODULES)
def test_doctests(mod: str) -> None:
    m = importlib.import_module("thinkrl.rewards" + ("" if mod == "__init__" else "." + mod))
    res = doctest.testmod(m)
    assert res.attempted > 0 and res.failed == 0


def test_answer_tag() -> None:
    assert extract_answer_tag("<answer> 42 </answer>") == "42"
    assert extract_answer_tag("<answer>1</answer><answer>2</answer>") == "2"
    assert extract_answer_tag("<answer>open") is None
    assert extract_answer_tag("no tags") is None
    assert extract_answer_tag("<answer>\n</answer>") == ""


def test_boxed_nested_and_last() -> None:
    assert extract_boxed(r"\boxed{\frac{1}{\sqrt{2}}}") == r"\frac{1}{\sqrt{2}}"
    assert extract_boxed(r"\boxed{1} then \boxed{2}") == "2"
    assert extract_boxed(r"\boxed{\{1,2\}}") == r"\{1,2\}"
    assert extract_boxed(r"\boxed 7") == "7"
    assert extract_boxed(r"\fbox{3}") == "3"
    assert extract_boxed(r"\boxed{unclosed {") is None
    assert extract_boxed("nothing") is None


def test_gsm8k_and_last_number() -> None:
    assert extract_gsm8k("work\n#### 1,234") == "1234"
    assert extract_gsm8k("#### -5.") == "-5"
    assert extract_gsm8k("no marker") is None
    assert extract_last_number("a 3 b -4.5 c") == "-4.5"
    assert extract_last_number("1,000,000 dollars") == "1000000"
    assert extract_last_number("none") is None


def test_extract_answer_modes() -> None:
    assert extract_answer(r"<answer>\boxed{5}</answer>") == "5"
    assert extract_answer(r"blah \boxed{6}") == "6"
    assert extract_answer("the answer is 7") is None  # last-number fallback is off by default
    assert extract_answer("the answer is 7", mode="auto_number") == "7"
    assert extract_answer("x\n#### 8", mode="gsm8k") == "8"
    with pytest.raises(ValueError, match="valid modes"):
        extract_answer("x", mode="nope")


def test_extract_code() -> None:
    text = "```python\nprint(1)\n```\nmore\n```python\nprint(2)\n```"
    assert extract_code(text) == "print(2)\n"
    assert extract_code("no code") is None


R1_CASES = [  # (completion, format, format_think, tag_count)
    ("<think>reason</think>\n<answer>4</answer>\n", 1.0, 1.0, 1.0),
    ("<think>reason</think><answer>4</answer>", 1.0, 1.0, 1.0),
    ("<think>r</think><answer>4</answer> trailing", 0.0, 1.0, 1.0),  # text after </answer>
    ("<answer>4</answer><think>r</think>", 0.0, 0.0, 1.0),  # out of order
    ("<think>a</think><think>b</think><answer>4</answer>", 0.0, 0.0, 0.5),  # repeated
    ("<think>a<think>b</think></think><answer>4</answer>", 0.0, 0.0, 0.5),  # nested
    ("<think></think><answer>4</answer>", 0.0, 0.0, 1.0),  # empty think
    ("<think>r</think><answer> </answer>", 0.0, 1.0, 1.0),  # empty answer
    ("<think>r</think> 4", 0.0, 1.0, 0.5),  # answer outside tags
    ("4", 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("text,fmt,think,tags", R1_CASES)
def test_format_rewards(text: str, fmt: float, think: float, tags: float) -> None:
    assert format_reward(["q"], [text]) == [fmt]
    assert format_think_reward(["q"], [text]) == [think]
    assert tag_count_reward(["q"], [text]) == [tags]


def test_format_prefilled_think() -> None:
    assert format_reward(["... Assistant: <think>"], ["reason</think><answer>4</answer>"]) == [1.0]


def test_one_megabyte_completions_score_fast() -> None:
    big = [
        "<think>" + "x" * (1 << 20) + "</think><answer>1</answer>",
        "<think>" * (1 << 17),
        "\\boxed{" * 100_000,
    ]
    t = time.perf_counter()
    for name in ("format", "format_think", "tag_count", "language_consistency", "exact_match"):
        scores = get_reward(name)(["q"] * 3, big, answer=["1"] * 3)
        assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert extract_answer(big[2]) is None
    assert time.perf_counter() - t < 20


def test_registry() -> None:
    need = {"format", "format_think", "tag_count", "accuracy", "exact_match", "countdown", "code"}
    need |= {"language_consistency", "routed"}
    assert need <= set(REWARDS)
    for name, fn in REWARDS.items():
        assert fn.__name__ == name and get_reward(name) is fn
    with pytest.raises(ValueError, match="valid names: .*accuracy"):
        get_reward("acuracy")
