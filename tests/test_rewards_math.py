"""Math accuracy on math-verify: shapes of gold answers, time limits, and checks against real data."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from thinkrl.rewards import get_reward
from thinkrl.rewards.math_grader import answers_equivalent, math_verify_stats, verify_math, verify_math_batch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _rows(rel: str) -> list[dict]:
    path = DATA / rel
    if not path.exists():
        pytest.skip(
            f"{path} not found: the shared evaluation data (../shared/data next to the repo) is absent"
        )
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(
    "pred,gold,ok",
    [
        ("18", "Janet sells 9 eggs.\n#### 18", True),  # GSM8K gold
        ("25", "025", True),  # AIME zero padding
        ("27", 27.0, True),  # AMC float
        ("3.5", "\\frac{7}{2}", True),
        ("\\frac{1}{2}", "0.5", True),
        ("(1, 2]", "(1,2]", True),
        ("[1, 2]", "(1,2]", False),
        ("\\{1, 2\\}", "\\{2, 1\\}", True),
        ("50\\%", "50", True),
        ("10 \\text{ cm}", "10", True),
        ("1,000", "1000", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("17", "18", False),
        ("", "18", False),
        (None, "18", False),
    ],
)
def test_verify_math_shapes(pred, gold, ok) -> None:
    assert verify_math(pred, gold) is ok


def test_hang_counts_as_wrong_and_is_counted() -> None:
    before = math_verify_stats()
    assert verify_math("$9^{9^{9^{9^{9}}}}$", "1", timeout_s=1.0) is False
    after = math_verify_stats()
    assert after["timeouts"] == before["timeouts"] + 1
    assert verify_math("\\frac{1}{3}", "1/3")  # the helper restarts after the hang


def test_works_from_worker_thread() -> None:
    out: list = []
    t = threading.Thread(target=lambda: out.append(verify_math("\\sqrt{4}", "2")))
    t.start()
    t.join(60)
    assert out == [True]


def test_answers_equivalent() -> None:
    assert answers_equivalent("\\frac{2}{4}", "0.5") and not answers_equivalent("2", "3")


def test_accuracy_reward() -> None:
    comps = [
        "<think>..</think><answer>\\frac{1}{2}</answer>",
        "so \\boxed{0.5}",
        "answer 0.5",
        "<answer>2</answer>",
    ]
    assert get_reward("accuracy")(["q"] * 4, comps, answer=["1/2"] * 3 + [None]) == [1.0, 1.0, 0.0, None]


def test_math500_solution_vs_own_and_next_answer() -> None:
    rows = _rows("math500/test.jsonl")
    own = verify_math_batch([r["solution"] for r in rows], [r["answer"] for r in rows])
    assert sum(own) >= 0.99 * len(rows), [r["answer"] for r, ok in zip(rows, own) if not ok]
    pairs = [(r["solution"], rows[(i + 1) % len(rows)]["answer"]) for i, r in enumerate(rows)]
    keep = [
        i for i, r in enumerate(rows) if r["answer"].strip() != rows[(i + 1) % len(rows)]["answer"].strip()
    ]
    cross = verify_math_batch([pairs[i][0] for i in keep], [pairs[i][1] for i in keep])
    assert sum(cross) <= 0.01 * len(keep)


def test_gsm8k_solution_vs_own_and_next_answer() -> None:
    rows = _rows("gsm8k/test.jsonl")
    golds = [r["answer"].split("####")[-1].strip() for r in rows]
    own = verify_math_batch([r["answer"] for r in rows], golds)
    assert sum(own) >= 0.99 * len(rows)
    keep = [i for i in range(len(rows)) if golds[i] != golds[(i + 1) % len(rows)]]
    cross = verify_math_batch([rows[i]["answer"] for i in keep], [golds[(i + 1) % len(rows)] for i in keep])
    assert sum(cross) <= 0.01 * len(keep)


def test_aime_amc_golds_match_themselves() -> None:
    for rel in ("aime24/test.jsonl", "aime25/test.jsonl", "amc23/test.jsonl"):
        rows = _rows(rel)
        golds = [r["answer"] for r in rows]
        assert all(verify_math_batch([str(int(float(g))) for g in golds], golds))


# Disagreements with Math-Verify's own expectations (see docs/rewards.md): decimal commas read as LaTeX (a
# list), strict-LaTeX cases where we are more lenient, and a false equation our answer policy refuses
# ("1/2 = 10/9" is not the answer 10/9).
KNOWN_DISAGREEMENTS = 5


def test_agrees_with_math_verify_published_cases() -> None:
    rows = _rows("peer-tests/math_verify_cases.jsonl")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        s = r["settings"]
        key = (s.get("precision", 6), s.get("strict", True), s.get("allow_set_relation_comp", False))
        groups.setdefault(key, []).append(r)
    bad = []
    for (prec, strict, setrel), rs in groups.items():
        got = verify_math_batch(
            [r["pred"] for r in rs],
            [r["gold"] for r in rs],
            float_rounding=prec,
            strict=strict,
            allow_set_relation_comp=setrel,
            timeout_s=60.0,  # agreement, not speed: a loaded machine must not turn slow checks into failures
        )
        bad += [(r["gold"], r["pred"], r["expected"]) for r, g in zip(rs, got) if int(g) != r["expected"]]
    assert len(bad) <= 0.02 * len(rows), bad
    assert len(bad) <= KNOWN_DISAGREEMENTS, bad
