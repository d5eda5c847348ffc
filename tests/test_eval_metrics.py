"""pass@k, cons@k and the summary against hand-computed values."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from thinkrl.eval.metrics import (
    binomial_se,
    bootstrap_ci,
    default_pass_ks,
    format_table,
    majority_vote,
    pass_at_1,
    pass_at_k,
    standard_error,
    summarize,
)


def test_pass_at_k_hand_cases():
    # n = k: pass@n is 1 as soon as one sample is correct.
    assert pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 1, 5) == 1.0
    # c = 0 and c = n.
    assert pass_at_k(8, 0, 3) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    # pass@1 is c / n
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)
    # matches the binomial formula on a larger case
    assert pass_at_k(64, 10, 16) == pytest.approx(1 - math.comb(54, 16) / math.comb(64, 16))


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(4, 5, 1)


def test_pass_at_1_and_errors():
    assert pass_at_1([True, False, False, False]) == 0.25
    assert binomial_se(0.2, 100) == pytest.approx(0.04)
    # std([0,0,1,1], ddof=1) = sqrt(1/3); / sqrt(4)
    assert standard_error([0, 0, 1, 1]) == pytest.approx(math.sqrt(1 / 3) / 2)
    assert standard_error([0.7]) == 0.0


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    vals = [0.0] * 30 + [1.0] * 70
    lo, hi = bootstrap_ci(vals, seed=3)
    assert (lo, hi) == bootstrap_ci(vals, seed=3)
    assert lo < 0.7 < hi
    # the 95% interval is about mean +- 2 SE (SE = sqrt(.21/100) = .0458)
    assert 0.58 < lo < 0.64 and 0.76 < hi < 0.82
    assert bootstrap_ci([0.0, 0.0]) == (0.0, 0.0)


def test_majority_vote_counts_ties_and_empty():
    assert majority_vote(["3", "4", "4"]) == ("4", [1, 2])
    # tie 2-2: the answer seen first wins, whatever the string order
    assert majority_vote(["7", "3", "3", "7"]) == ("7", [0, 3])
    assert majority_vote(["3", "7", "7", "3"]) == ("3", [0, 3])
    # None does not vote
    assert majority_vote([None, None, "1"]) == ("1", [2])
    assert majority_vote([None, None]) == (None, [])
    assert majority_vote([]) == (None, [])


def test_majority_vote_groups_equivalent_forms():
    def frac_eq(a: str, b: str) -> bool:
        return Fraction(a.replace("\\frac12", "1/2")) == Fraction(b.replace("\\frac12", "1/2"))

    # 0.5, \frac12 and 1/2 are one answer with 3 votes against 2 for "1"
    assert majority_vote(["1", "0.5", "\\frac12", "1", "1/2"], equivalent=frac_eq) == ("0.5", [1, 2, 4])
    # without the verifier "1" wins 2-1-1-1
    assert majority_vote(["1", "0.5", "\\frac12", "1", "1/2"]) == ("1", [0, 3])

    def broken(a: str, b: str) -> bool:
        raise RuntimeError("verifier crashed")

    assert majority_vote(["a", "b", "b"], equivalent=broken) == ("b", [1, 2])


def test_majority_vote_with_the_math_verifier():
    rm = pytest.importorskip("thinkrl.rewards.math_grader", reason="not written yet")
    eq = rm.answers_equivalent
    assert majority_vote(["1", "0.5", "\\frac{1}{2}", "1", "1/2"], equivalent=eq) == ("0.5", [1, 2, 4])


def test_default_pass_ks():
    assert default_pass_ks(16) == [1, 2, 4, 8, 16]
    assert default_pass_ks(6) == [1, 2, 4, 6]
    assert default_pass_ks(1) == [1]


def _rec(pid, i, correct, extracted, length, finish="stop", fmt=True):
    return dict(id=pid, sample_idx=i, correct=correct, extracted=extracted, length=length, finish_reason=finish,
                format_ok=fmt)  # fmt: skip


def test_summarize_hand_computed():
    rows = [{"id": "a", "level": 1}, {"id": "b", "level": 2}, {"id": "c", "level": 2}]
    samples = [
        # a: 2/4 correct; vote tie "5" (correct, seen first) vs "4" -> cons 1
        _rec("a", 0, True, "5", 10), _rec("a", 1, False, "4", 20),
        _rec("a", 2, False, "4", 30), _rec("a", 3, True, "5", 40, finish="length"),
        # b: 0/4 correct; no answer twice -> majority "2" is wrong
        _rec("b", 0, False, None, 5, fmt=False), _rec("b", 1, False, "2", 5),
        _rec("b", 2, False, "2", 5), _rec("b", 3, False, "3", 5),
        # c: 2/4 correct but the tie goes to the wrong answer seen first -> cons 0
        _rec("c", 0, False, "4", 1), _rec("c", 1, True, "5", 1),
        _rec("c", 2, True, "5", 1), _rec("c", 3, False, "4", 1),
        # ignored: an unknown problem and a sample beyond n
        _rec("z", 0, True, "1", 1), _rec("a", 4, True, "5", 999),
    ]  # fmt: skip
    out = summarize(samples, rows, n=4)
    m = out["metrics"]
    assert m["num_problems"] == 3
    assert m["pass@1"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    # pass@2 per problem: 1 - C(2,2)/C(4,2) = 5/6 for a and c, 0 for b
    assert m["pass@2"] == pytest.approx((5 / 6 + 0 + 5 / 6) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["cons@4"] == pytest.approx(1 / 3)
    assert m["pass@1_se"] == pytest.approx(standard_error([0.5, 0.0, 0.5]))
    lo, hi = m["pass@1_ci95"]
    assert 0.0 <= lo <= m["pass@1"] <= hi <= 0.5
    assert m["length_mean"] == pytest.approx((10 + 20 + 30 + 40 + 20 + 4) / 12)
    assert m["length_max"] == 40
    assert m["length_mean_correct"] == pytest.approx((10 + 40 + 1 + 1) / 4)
    assert m["truncation_rate"] == pytest.approx(1 / 12)
    assert m["format_rate"] == pytest.approx(11 / 12)
    assert m["no_answer_rate"] == pytest.approx(1 / 12)
    assert out["by_level"]["1"]["pass@1"] == 0.5 and out["by_level"]["1"]["num_problems"] == 1
    assert out["by_level"]["2"]["pass@1"] == pytest.approx(0.25)
    assert out["by_level"]["2"]["cons@4"] == 0.0
    # a smaller k from the same samples: only samples 0..1 count
    m2 = summarize(samples, rows, n=2, cons_k=2)["metrics"]
    assert m2["pass@1"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert m2["cons@2"] == pytest.approx(1 / 3)  # a: "5" first; b: None then "2" -> wrong; c: "4" first
    assert "pass@1" in format_table({"benchmark": "x", **out})


def test_summarize_needs_every_sample():
    with pytest.raises(ValueError, match="1 of 2 samples"):
        summarize([_rec("a", 0, True, "1", 1)], [{"id": "a"}], n=2)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        summarize([_rec("a", 0, True, "1", 1)], [{"id": "a"}], n=1, pass_ks=[2])
