"""Graders with hard bounds and the answer policy: hung math checks, linear extraction, custom-reward workers.

Timing assertions here are bounds with wide margins (a sequential or quadratic grader misses them by
seconds or minutes); the targets themselves are measured by ``benchmarks/bench_rewards.py``.
"""

from __future__ import annotations

import math
import os
import time

import pytest

from thinkrl.config import ConfigError, GradingConfig, RewardSpec
from thinkrl.rewards import (
    REWARDS,
    RewardScorer,
    build_reward_funcs,
    get_reward,
    in_process,
    validate_grading,
)
from thinkrl.rewards.base import RewardError
from thinkrl.rewards.extract import MAX_PARSE_CHARS, extract_answer, extract_code
from thinkrl.rewards.math_grader import math_verify_stats, verify_math, verify_math_batch, warm_up
from thinkrl.rewards.pool import BoundedPool
from thinkrl.rewards.workers import Zygote

HANG = "(x+1)^{2000}"  # math-verify expands it: minutes


def test_hung_math_checks_cost_one_limit_side_by_side() -> None:
    warm_up()
    assert verify_math("\\frac{1}{2}", "0.5")  # the grader process is up
    before = math_verify_stats()["timeouts"]
    preds = [HANG, "\\frac{28}{2}"] * 8
    t = time.monotonic()
    got = verify_math_batch(preds, ["14"] * 16, timeout_s=1.0)
    took = time.monotonic() - t
    assert got == [False, True] * 8
    assert math_verify_stats()["timeouts"] - before == 8
    # in sequence on the 2 workers, 8 hangs of 1 s cost >= 4 s; side by side, about one limit
    assert took < 3.5, took


def test_pool_outcomes_and_a_slow_honest_task_is_not_starved() -> None:
    def task(x: float) -> float:
        if x < 0:
            os._exit(3)
        if x == 99:
            raise ValueError("bad row")
        time.sleep(x)
        return x

    with BoundedPool(Zygote.fork(task), workers=2, min_budget_s=0.05) as pool:
        out = pool.map([0.01] * 6 + [0.6, 30, -1, 99] + [0.01] * 6, limit_s=1.5)
    assert [o.kind for o in out[6:10]] == ["ok", "timeout", "crash", "error"]
    assert out[6].value == 0.6 and "bad row" in out[9].value  # set aside while others ran, then finished
    assert all(o.kind == "ok" for o in out[:6] + out[10:])
    assert pool.stats["moved_aside"] >= 1


@pytest.mark.parametrize("name", ["format", "tag_count", "accuracy", "language_consistency", "code"])
@pytest.mark.parametrize("spam", ["<answer>", "```", "\\boxed{", "\\(", "$", "<think>"])
def test_text_rewards_are_linear_on_tag_spam(name: str, spam: str) -> None:
    text = "<think>.</think>" + spam * (480_000 // len(spam))
    cols = {"answer": ["14"], "tests": [["assert f(1) == 1"]], "language": ["en"]}
    t = time.monotonic()
    get_reward(name)(["q"], [text], **cols)
    assert time.monotonic() - t < 3.0  # quadratic scanning took 24 s for 200k characters


def test_over_long_completions_are_not_parsed() -> None:
    huge = "<think>.</think><answer>14</answer>" + " " * MAX_PARSE_CHARS
    assert extract_answer(huge) is None and extract_code(huge + "```python\nx\n```") is None
    assert get_reward("format")(["q"], [huge]) == [0.0]


@pytest.mark.parametrize(
    "completion,gold,paid",
    [
        ("<think>7+7</think> <answer>14</answer>", "14", True),
        ("<think>7 + 7 = \\boxed{14}</think>", "14", False),  # only inside think
        ("<think><answer>14</answer></think> no idea", "14", False),
        ("<think>7+7 <answer>14</answer>", "14", False),  # think never closed
        ("<think>.</think> <answer>14</answer> <think>more", "14", False),  # reopened, never closed
        ("so \\boxed{14}", "14", True),  # no think tags: the whole text is the answer region
        ("<think>.</think><answer>15 = 14</answer>", "14", False),
        ("<think>.</think><answer>x = 13 = 14</answer>", "14", False),
        ("<think>.</think><answer>x = 14</answer>", "14", True),  # one variable = value
        ("<think>.</think><answer>x \\le 14</answer>", "14", False),
        ("<think>.</think><answer>13 \\lor 14</answer>", "14", False),
        ("<think>.</think><answer>13, 14</answer>", "14", False),
        ("<think>.</think><answer>y = 2x + 3</answer>", "y = 2x+3", True),  # a relation gold compares as is
        ("<think>.</think><answer>50</answer>", "50\\%", True),  # % is a unit: dropped on both sides
        ("<think>.</think><answer>50\\%</answer>", "50", True),
        ("<think>.</think><answer>0.5</answer>", "50\\%", False),
        ("<think>.</think><answer>50\\%</answer>", "0.5", False),
    ],
)
def test_answer_policy(completion: str, gold: str, paid: bool) -> None:
    assert get_reward("accuracy")(["q"], [completion], answer=[gold]) == [float(paid)]


def test_prefilled_think_counts_as_open() -> None:
    prompt = "Solve 7+7. <think>"
    assert get_reward("accuracy")([prompt], ["7+7 = \\boxed{14}"], answer=["14"]) == [0.0]
    assert get_reward("accuracy")([prompt], ["7+7</think> \\boxed{14}"], answer=["14"]) == [1.0]
    assert get_reward("countdown")([prompt], ["<answer>3+4</answer>"], numbers=[[3, 4]], target=[7]) == [0.0]


def slow_reward(prompts, completions, **columns):
    """Hangs on 'hang', dies on 'crash', raises on 'raise'."""
    if "hang" in completions[0]:
        time.sleep(60)
    if "crash" in completions[0]:
        os._exit(3)
    if "raise" in completions[0]:
        raise KeyError("no such column")
    return [float(len(c)) for c in completions]


def test_custom_reward_timeouts_errors_and_crashes_are_bounded_and_counted() -> None:
    grading = GradingConfig(timeout_s=1.0, rows_per_call=1, on_error="zero")
    offset = 10.0
    closure = lambda prompts, completions, **c: [offset] * len(completions)  # noqa: E731 - a lambda on purpose
    with RewardScorer([slow_reward, closure], [1.0, 0.5], grading) as scorer:
        t = time.monotonic()
        r = scorer.score(["q"] * 5, ["a", "hang", "crash", "raise", "bbb"])
        assert time.monotonic() - t < 4.0  # one limit, not 60 s
    assert r.per_function["slow_reward"].tolist() == [1.0, 0.0, 0.0, 0.0, 3.0]
    assert r.total.tolist() == [6.0, 5.0, 5.0, 5.0, 8.0]
    m = r.metrics()
    assert (
        m["reward/timeouts/slow_reward"],
        m["reward/errors/slow_reward"],
        m["reward/timeouts/<lambda>"],
    ) == (
        1.0,
        2.0,
        0.0,
    )


def test_on_timeout_none_and_on_error_raise() -> None:
    with RewardScorer([slow_reward], grading=GradingConfig(timeout_s=1.0, on_timeout="none")) as scorer:
        r = scorer.score(["q"] * 2, ["hang", "x"])
        assert all(math.isnan(v) for v in r.per_function["slow_reward"].tolist()) and r.total.tolist() == [
            0,
            0,
        ]
        with pytest.raises(
            RewardError, match=r"'slow_reward' raised KeyError.* on rows 0\.\.1 .*on_error=zero"
        ):
            scorer.score(["q"] * 2, ["raise", "x"])


def test_in_process_rewards_and_builtin_timeouts_are_counted() -> None:
    def needs_this_process(prompts, completions, **c):
        return [float(os.getpid())] * len(completions)

    grading = GradingConfig(math_timeout_s=1.0)
    funcs, _ = build_reward_funcs([RewardSpec("accuracy")], grading)
    with RewardScorer([*funcs, in_process(needs_this_process)], grading=grading) as scorer:
        r = scorer.score(["q"] * 2, [f"<think>.</think><answer>{HANG}</answer>", "<answer>14</answer>"],
                         {"answer": ["14", "14"]})  # fmt: skip
    assert r.per_function["accuracy"].tolist() == [0.0, 1.0]
    assert r.timeouts["accuracy"] == 1 and r.per_function["needs_this_process"][0] == os.getpid()


def test_registry_keys_and_config_specs(tmp_path, monkeypatch) -> None:
    assert REWARDS["format"].__name__ == "format" and REWARDS["format"].fn.__name__ == "format_reward"
    (tmp_path / "my_rewards.py").write_text(
        "def shout(prompts, completions, **c):\n    return [1.0] * len(completions)\n"
    )
    monkeypatch.chdir(tmp_path)
    funcs, weights = build_reward_funcs([RewardSpec("my_rewards:shout", 0.5), RewardSpec("format")])
    assert [f.__name__ for f in funcs] == ["shout", "format"] and weights == [0.5, 1.0]
    assert funcs[0].in_process is False and funcs[1].in_process is True
    with pytest.raises(
        ConfigError,
        match=r"rewards\[0\] \(nope:f\): reward 'nope:f': cannot import 'nope'.*my_rewards.py:my_reward",
    ):
        build_reward_funcs([RewardSpec("nope:f")])
    with pytest.raises(ConfigError, match="has no function 'whisper'; its callables: shout"):
        build_reward_funcs([RewardSpec("my_rewards.py:whisper")])
    with pytest.raises(ConfigError, match="shout listed more than once"):
        build_reward_funcs([RewardSpec("my_rewards:shout"), RewardSpec("my_rewards.py:shout")])


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("on_timeout", "skip", "grading.on_timeout='skip'; valid: zero, none"),
        ("timeout_s", 0, "grading.timeout_s=0 must be > 0"),
        ("workers", 0, "grading.workers=0 must be >= 1"),
    ],
)
def test_grading_validation_names_the_field(field: str, value, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_grading(GradingConfig(**{field: value}))
    bad = GradingConfig()
    bad.sandbox.backend = "firejail"
    with pytest.raises(
        ConfigError, match="grading.sandbox.backend='firejail'; valid: auto, namespaces, bubblewrap"
    ):
        validate_grading(bad)
