"""Benchmark loaders on the real files in ../shared/data, gold answers graded as predictions, custom files."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import pytest

from thinkrl.eval.benchmarks import (
    BenchmarkError,
    Grader,
    default_data_dir,
    load_benchmark,
    normalize_number,
    prepare_rows,
)

DATA = default_data_dir()
needs_data = pytest.mark.skipif(
    DATA is None or not (DATA / "math500").is_dir(),
    reason="benchmark data folder (../shared/data or $THINKRL_DATA_DIR) is absent",
)


def test_normalize_number():
    assert normalize_number(27.0) == "27"
    assert normalize_number(-1.0) == "-1"
    assert normalize_number("025") == "25"
    assert normalize_number("1,234") == "1234"
    assert normalize_number(" 0.50 ") == "0.5"
    assert normalize_number("\\frac{1}{2}") == "\\frac{1}{2}"
    assert normalize_number(70) == "70"


@needs_data
def test_real_files_load_with_their_answer_formats():
    gsm = load_benchmark("gsm8k")
    assert len(gsm) == 1319
    assert gsm[0]["answer"] == "18" and gsm[0]["question"].startswith("Janet")
    assert all("####" not in r["answer"] and "," not in r["answer"] for r in gsm)

    m500 = load_benchmark("math500")
    assert len(m500) == 500
    assert m500[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    levels = [sum(r["level"] == lv for r in m500) for lv in range(1, 6)]
    assert levels == [43, 90, 105, 128, 134]  # SOURCES.md
    assert sum(r["subject"] == "Algebra" for r in m500) == 124

    a24 = load_benchmark("aime24")
    assert len(a24) == 30 and a24[0]["answer"] == "204"
    assert a24[7]["answer"] == "25"  # "025" in the file
    a25 = load_benchmark("aime25")
    assert [r["answer"] for r in a25[:3]] == ["70", "588", "16"] and len(a25) == 30
    amc = load_benchmark("amc23")
    assert len(amc) == 40 and amc[0]["answer"] == "27" and amc[15]["answer"] == "-1"

    cd = load_benchmark("countdown", limit=3)
    assert [(r["numbers"], r["target"]) for r in cd] == [
        ([30, 100, 93], 23),
        ([83, 18, 75], 10),
        ([76, 41, 59], 24),
    ]
    assert cd[0]["verifier"] == "countdown" and "[30, 100, 93]" in cd[0]["question"]
    assert all(r["verifier"] == "math" for r in gsm[:5] + m500[:5])
    for rows in (gsm, m500, a24, a25, amc):
        assert len({r["id"] for r in rows}) == len(rows)


@needs_data
def test_name_with_path_and_env_var(tmp_path, monkeypatch):
    src = (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[:2]
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text("\n".join(src) + "\n")
    rows = load_benchmark(f"gsm8k:{tmp_path / 'gsm8k' / 'test.jsonl'}")
    assert [r["answer"] for r in rows] == ["18", "3"]
    monkeypatch.setenv("THINKRL_DATA_DIR", str(tmp_path))
    assert len(load_benchmark("gsm8k")) == 2


def _solve_countdown(numbers: list[int], target: int) -> str | None:
    """Brute force over orders, operators and both bracketings, with exact fractions."""
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": lambda x, y: x / y}
    for a, b, c in itertools.permutations(numbers):
        fa, fb, fc = Fraction(a), Fraction(b), Fraction(c)
        for o1, o2 in itertools.product(ops, repeat=2):
            f1, f2 = ops[o1], ops[o2]
            try:
                if f2(f1(fa, fb), fc) == target:
                    return f"({a} {o1} {b}) {o2} {c}"
            except ZeroDivisionError:
                pass
            try:
                if f1(fa, f2(fb, fc)) == target:
                    return f"{a} {o1} ({b} {o2} {c})"
            except ZeroDivisionError:
                pass
    return None


def test_countdown_solver_helper():
    assert _solve_countdown([1, 2, 3], 9) == "(1 + 2) * 3"
    assert _solve_countdown([2, 4, 7], 1000) is None


@needs_data
@pytest.mark.parametrize("name", ["gsm8k", "math500", "aime24", "aime25", "amc23", "countdown"])
def test_gold_answers_grade_as_correct(name):
    """Each row's own gold answer, written as an R1-format completion, scores 100%."""
    rows = load_benchmark(name)
    if name == "countdown":
        sols = [_solve_countdown(r["numbers"], r["target"]) for r in rows]
        assert all(s is not None for s in sols)  # SOURCES.md: every target is reachable
    else:
        sols = [r["answer"] for r in rows]
    completions = [f"<think> gold </think> <answer> {s} </answer>" for s in sols]
    grades = Grader().grade(rows, completions)
    wrong = [(r["id"], r["answer"], g["extracted"]) for r, g in zip(rows, grades) if not g["correct"]]
    assert wrong == []
    assert all(g["format_ok"] for g in grades)
    # and a wrong answer is not graded correct
    bad = Grader().grade(rows[:3], ["<think> x </think> <answer> 123456789 </answer>"] * 3)
    assert not any(g["correct"] for g in bad)


def test_custom_files_with_keys(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(
        json.dumps({"q": "1+1?", "gold": 2}) + "\n" + json.dumps({"q": "2+2?", "gold": "4.0"}) + "\n"
    )
    rows = load_benchmark(str(p), question_key="q", answer_key="gold")
    assert [(r["id"], r["question"], r["answer"], r["verifier"]) for r in rows] == [
        ("0", "1+1?", "2", "math"),
        ("1", "2+2?", "4", "math"),
    ]
    assert rows[0]["benchmark"] == "mine"
    csv = tmp_path / "m.csv"
    csv.write_text("problem,answer\nwhat,7\n")
    assert load_benchmark(str(csv))[0]["answer"] == "7"
    cd = tmp_path / "cd.jsonl"
    cd.write_text(json.dumps({"nums": [1, 2, 3], "target": 6}) + "\n")
    row = load_benchmark(str(cd))[0]
    assert row["verifier"] == "countdown" and row["numbers"] == [1, 2, 3] and row["answer"] == "6"
    assert len(load_benchmark(str(p), question_key="q", answer_key="gold", limit=1)) == 1


def test_bad_specs_say_how_to_fix(tmp_path):
    with pytest.raises(BenchmarkError, match="neither a benchmark"):
        load_benchmark(str(tmp_path / "missing.jsonl"))
    p = tmp_path / "dup.jsonl"
    p.write_text('{"id": 1, "question": "a", "answer": 1}\n{"id": 1, "question": "b", "answer": 2}\n')
    with pytest.raises(BenchmarkError, match="appears twice"):
        load_benchmark(str(p))
    with pytest.raises(BenchmarkError, match="no question column"):
        prepare_rows([{"text": "a", "answer": 1}])
