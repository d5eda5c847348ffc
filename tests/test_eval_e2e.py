"""End to end: a tiny random Llama and a character tokenizer, built in code, through ``thinkrl eval``.

Accuracy is 0 by construction (8 new tokens cannot hold ``<answer>…</answer>`` or ``\\boxed{…}``); the point is
that loading, prompting, generation, grading, files and metrics all connect, and that the numbers are
reproducible and consistent between samples.jsonl and summary.json.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from thinkrl.eval import SAMPLES_FILE, SUMMARY_FILE, add_eval_arguments, evaluate, run_eval_cli
from thinkrl.eval.benchmarks import default_data_dir
from thinkrl.testing import char_tokenizer, tiny_model

BENCHMARKS = ["gsm8k", "math500", "aime24", "aime25", "amc23", "countdown"]


PRINTABLE = "".join(chr(i) for i in range(32, 127)) + "\n\t"


def tiny_llama(vocab_size: int) -> torch.nn.Module:
    return tiny_model("llama", vocab_size, max_positions=8192).eval()


@pytest.fixture(scope="module")
def tiny():
    # One thread: on a shared 2-core box, two threads per tiny matmul spend their time waiting on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tok = char_tokenizer(PRINTABLE)
    yield tiny_llama(len(tok)), tok
    torch.set_num_threads(threads)


class TagGrader:
    """Grader without the rewards package: exact match of the <answer> text."""

    def grade(self, rows, completions):
        out = []
        for row, text in zip(rows, completions):
            pred = text.split("<answer>")[-1].split("</answer>")[0].strip() if "</answer>" in text else None
            out.append({"extracted": pred, "correct": pred == row["answer"], "format_ok": "</think>" in text})
        return out

    def equivalent(self, a, b, row):
        return a == b


def test_char_tokenizer_round_trips(tiny):
    _, tok = tiny
    ids = tok("A+b = 3?\n", add_special_tokens=False)["input_ids"]
    assert len(ids) == 9 and tok.decode(ids) == "A+b = 3?\n"


def test_hf_engine_path_is_reproducible_and_resumes(tiny, tmp_path):
    model, tok = tiny
    rows = [{"id": f"q{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(5)]
    kw = dict(k=3, max_new_tokens=6, batch_size=2, grader=TagGrader(), progress=False, seed=7)
    a = evaluate(model, tok, rows, out_dir=tmp_path / "a", **kw)
    assert len(a.samples) == 15 and all(1 <= s["length"] <= 6 for s in a.samples)
    assert all(s["finish_reason"] in ("stop", "length") for s in a.samples)
    assert a.metrics["pass@1"] == 0.0
    # same seed, same completions; a run resumed from a partial file draws the same ones
    lines = (tmp_path / "a" / SAMPLES_FILE).read_text().splitlines()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / SAMPLES_FILE).write_text("\n".join(lines[:6]) + "\n")  # batch 0 (2 problems x 3) done
    (tmp_path / "b" / "eval_config.json").write_text((tmp_path / "a" / "eval_config.json").read_text())
    b = evaluate(model, tok, rows, out_dir=tmp_path / "b", **kw)
    assert [s["completion"] for s in b.samples] == [s["completion"] for s in a.samples]
    assert b.metrics == a.metrics


@pytest.mark.skipif(default_data_dir() is None, reason="benchmark data folder (../shared/data) is absent")
def test_cli_end_to_end_on_every_benchmark(tiny, tmp_path, capsys):
    model, tok = tiny
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    out = tmp_path / "out"
    argv = [str(tmp_path / "model"), "--data", ",".join(BENCHMARKS), "--limit", "20", "--k", "2"]
    argv += [
        "--max-new-tokens",
        "8",
        "--batch-size",
        "10",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert run_eval_cli(parser.parse_args(argv)) == 0
    printed = capsys.readouterr().out
    for name in BENCHMARKS:
        assert name in printed
        recs = [json.loads(line) for line in (out / name / SAMPLES_FILE).read_text().splitlines()]
        summary = json.loads((out / name / SUMMARY_FILE).read_text())
        assert len(recs) == 40 and summary["metrics"]["num_problems"] == 20
        per: dict[str, list[bool]] = {}
        for r in recs:
            per.setdefault(r["id"], []).append(r["correct"])
        assert summary["metrics"]["pass@1"] == pytest.approx(sum(sum(v) / 2 for v in per.values()) / 20)
        assert summary["metrics"]["pass@1"] == 0.0  # 8 random tokens cannot close an answer tag
        assert summary["metrics"]["length_max"] <= 8
    assert "by_level" in json.loads((out / "math500" / SUMMARY_FILE).read_text())
    # same seed, same numbers: the in-memory model reproduces the CLI's countdown completions
    from thinkrl.eval.benchmarks import load_benchmark

    again = evaluate(
        model,
        tok,
        load_benchmark("countdown", limit=20),
        k=2,
        max_new_tokens=8,
        batch_size=10,
        progress=False,
    )
    recs = [json.loads(line) for line in (out / "countdown" / SAMPLES_FILE).read_text().splitlines()]
    assert [s["completion"] for s in again.samples] == [r["completion"] for r in recs]
