"""Countdown, language consistency, length shaping, routing and the reward pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinkrl.rewards import compute_rewards, get_reward
from thinkrl.rewards.countdown import countdown_score, evaluate_equation
from thinkrl.rewards.language import language_consistency_score
from thinkrl.rewards.shaping import kimi_length_penalty, overlong_penalty, overlong_reward

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    "answer,ok",
    [
        ("(100 - 93) + 30", 1.0),
        ("30 + 100 - 93 = 37", 1.0),
        ("30 + 100 - 93 = 38", 0.0),  # wrong stated result
        ("100 - 93 + 30 + 30 - 30", 0.0),  # a number used twice
        ("100 - 93", 0.0),  # a number unused
        ("37", 0.0),
        ("__import__('os').system('true')", 0.0),
        ("-30 + 100 - 33", 0.0),  # unary minus and a foreign number
        ("30 ** 2", 0.0),
        ("100 / (93 - 93) + 30", 0.0),  # division by zero (and 93 twice)
        ("(" * 200 + "1" + ")" * 200, 0.0),
        (None, 0.0),
    ],
)
def test_countdown(answer, ok) -> None:
    assert countdown_score(answer, [30, 100, 93], 37) == ok


def test_countdown_exact_fractions_and_data_format() -> None:
    assert evaluate_equation("7 / 2 * 2")[0] == 7
    fn = get_reward("countdown")
    comp = "<think>..</think><answer>(30 - 7) * 1</answer>"
    assert fn(["q"], [comp], numbers=["30,7,1"], target=["23"]) == [1.0]
    assert fn(["q"], [comp], numbers=[None], target=[None]) == [None]


def test_countdown_real_rows_solvable_format() -> None:
    path = DATA / "countdown" / "countdown_cd3_test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found: shared data absent")
    row = json.loads(path.read_text().splitlines()[0])  # {"input": "30,100,93", "output": "23"}
    assert countdown_score("100 - 93 + 30 - 14", row["input"], row["output"]) == 0.0
    assert countdown_score("30 - (100 - 93)", row["input"], row["output"]) == 1.0


def test_language_consistency() -> None:
    en = "<think>First add the numbers, then divide by two.</think><answer>3</answer>"
    mixed = "<think>First add 数字 then divide</think>"
    assert language_consistency_score(en, "en") == 1.0
    assert language_consistency_score(mixed, "en") == pytest.approx(4 / 6)
    assert language_consistency_score(mixed, "zh") == pytest.approx(2 / 6)
    # numbers, LaTeX and code are neutral: only "so" and "is" are words here
    assert (
        language_consistency_score("<think>so $\\frac{1}{2}$ is `print(x)` 42 \\alpha</think>", "zh") == 0.0
    )
    assert language_consistency_score("<think>so $\\frac{1}{2}$ is `print(x)` 42</think>", "en") == 1.0
    assert language_consistency_score("<think>  42 $x$ </think>", "en") == 0.0  # no words: no reward
    fr = "<think>Nous additionnons les deux nombres. Ensuite nous divisons le résultat par deux.</think>"
    assert language_consistency_score(fr, "fr") == 1.0
    assert language_consistency_score(fr, "de") == 0.0
    fn = get_reward("language_consistency")
    assert fn(["q", "q"], [en, en], language=["en", None]) == [1.0, 1.0]
    assert fn(["q"], [en]) == [1.0]


def test_shaping() -> None:
    assert overlong_penalty([8, 9, 10, 11, 12, 13], max_len=12, buffer=4) == [
        0.0,
        -0.25,
        -0.5,
        -0.75,
        -1.0,
        -1.0,
    ]
    with pytest.raises(ValueError):
        overlong_penalty([1], max_len=4, buffer=5)
    assert kimi_length_penalty([5, 5], [True, False]) == [0.0, 0.0]
    assert kimi_length_penalty([10, 30, 20], [False, False, True]) == [0.0, -0.5, 0.0]
    fn = overlong_reward(12, 4)
    assert fn(["q"], ["x"], completion_length=[10]) == [-0.5]
    with pytest.raises(ValueError, match="completion_length"):
        fn(["q"], ["x"])


def test_routed_mixed_batch_and_compute_rewards() -> None:
    comps = ["<answer>\\frac{1}{2}</answer>", "<answer>30 - (100 - 93)</answer>", "<answer>B</answer>", "x"]
    cols = {
        "verifier": ["math", "countdown", "exact", None],
        "answer": ["0.5", None, "B", None],
        "numbers": [None, [30, 100, 93], None, None],
        "target": [None, 23, None, None],
    }
    assert get_reward("routed")(["q"] * 4, comps, **cols) == [1.0, 1.0, 1.0, None]
    out = compute_rewards([get_reward("routed"), get_reward("format")], [1.0, 0.5], ["q"] * 4, comps, **cols)
    assert out.total.tolist() == [1.0, 1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="valid: "):
        get_reward("routed")(["q"], ["x"], verifier=["chess"])
