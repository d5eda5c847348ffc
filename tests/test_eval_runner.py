"""The eval runner with a fake engine and grader: files, resume, reuse, determinism, the CLI arguments."""

from __future__ import annotations

import argparse
import json
import random

import pytest
import torch

from thinkrl.eval import (
    CONFIG_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    EvalResumeError,
    PeriodicEvaluator,
    add_eval_arguments,
    evaluate,
    evaluate_during_training,
    flat_metrics,
)
from thinkrl.rollout.base import Rollout, SamplingParams


class CharTokenizer:
    """Just enough tokenizer for prompts: one id per character."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [ord(c) % 256 for c in text]}


class FakeEngine:
    """A RolloutEngine whose completions depend only on (params.seed, row position): like HFEngine."""

    def __init__(self, fail_after: int | None = None):
        self.calls: list[tuple[int, int]] = []  # (prompts, n) per call
        self.fail_after = fail_after

    def sync_weights(self) -> None:
        pass

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append((len(prompt_ids), params.n))
        rng = random.Random(params.seed)
        texts, reasons, lens = [], [], []
        for _ in range(len(prompt_ids) * params.n):
            ans = rng.choice(["1", "2", "3", "4"])
            body = "x" * rng.randint(1, 6)
            texts.append(f"<think>{body}</think> <answer>{ans}</answer>")
            reasons.append("length" if len(body) == 6 else "stop")
            lens.append(len(body) + 3)
        N, T = len(texts), max(lens)
        mask = torch.arange(T) < torch.tensor(lens).unsqueeze(1)
        return Rollout(
            prompt_ids=prompt_ids,
            group_ids=torch.arange(len(prompt_ids)).repeat_interleave(params.n),
            completion_ids=torch.zeros(N, T, dtype=torch.long),
            completion_mask=mask,
            logprobs=torch.zeros(N, T),
            finish_reasons=reasons,
            texts=texts,
        )


class FakeGrader:
    """Correct when the <answer> text equals the gold; votes group by exact match."""

    def grade(self, rows, completions):
        out = []
        for row, text in zip(rows, completions):
            pred = text.split("<answer>")[1].split("</answer>")[0]
            out.append({"extracted": pred, "correct": pred == row["answer"], "format_ok": True})
        return out

    def equivalent(self, a, b, row):
        return a == b


ROWS = [
    {"id": f"p{i}", "question": f"question {i}?", "answer": str(1 + i % 4), "verifier": "math"}
    for i in range(7)
]
KW = dict(k=4, batch_size=3, grader=FakeGrader(), progress=False, seed=1, max_new_tokens=8)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_samples_and_summary_consistently(tmp_path):
    res = evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path, **KW)
    recs = _read(tmp_path / SAMPLES_FILE)
    assert len(recs) == 7 * 4 and {(r["id"], r["sample_idx"]) for r in recs} == {
        (f"p{i}", s) for i in range(7) for s in range(4)
    }
    keys = {"id", "sample_idx", "completion", "extracted", "correct", "length", "finish_reason", "format_ok"}
    assert keys <= set(recs[0])
    # pass@1 recomputed from the JSONL equals the summary's
    per = {}
    for r in recs:
        per.setdefault(r["id"], []).append(r["correct"])
    pass1 = sum(sum(v) / len(v) for v in per.values()) / len(per)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["metrics"]["pass@1"] == pytest.approx(pass1) == res.metrics["pass@1"]
    assert summary["metrics"]["truncation_rate"] == pytest.approx(
        sum(r["finish_reason"] == "length" for r in recs) / len(recs)
    )
    assert {"pass@2", "pass@4", "cons@4", "pass@1_se", "pass@1_ci95"} <= set(summary["metrics"])
    assert summary["samples_per_problem"] == 4 and summary["sampling"]["temperature"] == 0.6
    assert summary["sampling"]["stop_strings"] == ["</answer>"]  # r1 template default
    assert "pass@1" in res.table()


def test_same_seed_same_numbers(tmp_path):
    a = evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path / "a", **KW)
    b = evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path / "b", **KW)
    assert a.samples == b.samples and a.metrics == b.metrics
    c = evaluate(FakeEngine(), CharTokenizer(), ROWS, **{**KW, "seed": 2})
    assert [s["completion"] for s in c.samples] != [s["completion"] for s in a.samples]


def test_interrupted_eval_resumes_to_the_same_result(tmp_path):
    full = evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path / "full", **KW)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        evaluate(FakeEngine(fail_after=2), CharTokenizer(), ROWS, out_dir=out, **KW)
    assert len(_read(out / SAMPLES_FILE)) == 6 * 4  # two batches of 3 problems were saved
    with (out / SAMPLES_FILE).open("a") as f:
        f.write('{"id": "p6", "sample_id')  # a line cut off by the interruption
    engine = FakeEngine()
    res = evaluate(engine, CharTokenizer(), ROWS, out_dir=out, **KW)
    assert engine.calls == [(1, 4)]  # only the last batch (problem p6) was generated
    assert res.samples == full.samples and res.metrics == full.metrics
    assert len(_read(out / SAMPLES_FILE)) == 7 * 4


def test_metric_changes_reuse_samples_and_more_k_generates_only_the_rest(tmp_path):
    evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path, **KW)
    no_gen = FakeEngine(fail_after=0)
    res = evaluate(no_gen, CharTokenizer(), ROWS, out_dir=tmp_path, **{**KW, "pass_ks": [1, 3], "cons_k": 3})
    assert "pass@3" in res.metrics and "cons@3" in res.metrics and "pass@4" not in res.metrics
    res2 = evaluate(no_gen, CharTokenizer(), ROWS, out_dir=tmp_path, **{**KW, "k": 2})
    assert res2.summary["samples_per_problem"] == 2 and no_gen.calls == []
    more = FakeEngine()
    res6 = evaluate(more, CharTokenizer(), ROWS, out_dir=tmp_path, **{**KW, "k": 6})
    assert more.calls == [(3, 2), (3, 2), (1, 2)]  # samples 4 and 5 only
    assert len(res6.samples) == 7 * 6


def test_changed_settings_or_prompts_refuse_to_mix(tmp_path):
    evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path, **KW)
    with pytest.raises(EvalResumeError, match="temperature: 0.6 -> 1.0"):
        evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path, **{**KW, "temperature": 1.0})
    other = [{**r, "question": r["question"] + " (v2)"} for r in ROWS]
    with pytest.raises(EvalResumeError, match="different prompt"):
        evaluate(FakeEngine(), CharTokenizer(), other, out_dir=tmp_path, **KW)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["temperature"] == 0.6


def test_greedy_uses_one_sample(tmp_path):
    eng = FakeEngine()
    res = evaluate(eng, CharTokenizer(), ROWS[:2], **{**KW, "temperature": 0.0})
    assert eng.calls == [(2, 1)] and res.summary["samples_per_problem"] == 1 and res.summary["greedy"]
    assert set(res.metrics) >= {"pass@1", "cons@1"}


def test_regrade_rewrites_correctness(tmp_path):
    evaluate(FakeEngine(), CharTokenizer(), ROWS, out_dir=tmp_path, **KW)

    class AllWrong(FakeGrader):
        def grade(self, rows, completions):
            return [{**g, "correct": False} for g in super().grade(rows, completions)]

    res = evaluate(FakeEngine(fail_after=0), CharTokenizer(), ROWS, out_dir=tmp_path, **{**KW, "grader": AllWrong(),
                   "regrade": True})  # fmt: skip
    assert res.metrics["pass@1"] == 0.0
    assert not any(r["correct"] for r in _read(tmp_path / SAMPLES_FILE))


def test_periodic_evaluator(tmp_path):
    ev = PeriodicEvaluator(ROWS, CharTokenizer(), every_steps=5, k=2, max_problems=3, out_dir=tmp_path,
                           grader=FakeGrader())  # fmt: skip
    assert [s for s in range(12) if ev.should_run(s)] == [0, 5, 10]
    assert ev.should_run(11, last=True)
    assert not PeriodicEvaluator(ROWS, CharTokenizer(), every_steps=0).should_run(0)
    m = ev(FakeEngine(), step=5)
    assert m["eval/num_problems"] == 3 and 0 <= m["eval/pass@1"] <= 1 and "eval/cons@2" in m
    assert (tmp_path / "step_000005" / SUMMARY_FILE).exists()
    # by default a step is evaluated afresh (other weights may sit behind the same step number) ...
    engine = FakeEngine()
    assert ev(engine, step=5) == m and engine.calls == [(3, 2)]
    # ... and with reuse_samples it is read back without generating
    ev.reuse_samples = True
    assert ev(FakeEngine(fail_after=0), step=5) == m
    assert flat_metrics({"metrics": {"a": 1, "b": None, "c": [0.1, 0.2]}}, "x/") == {
        "x/a": 1.0,
        "x/c_lo": 0.1,
        "x/c_hi": 0.2,
    }


def test_rows_without_ids_get_position_ids():
    rows = [{"question": "q?", "answer": 2}, {"question": "r?", "answer": "3"}]
    res = evaluate(FakeEngine(), CharTokenizer(), rows, **{**KW, "k": 1})
    assert [s["id"] for s in res.samples] == ["0", "1"]


def test_cli_arguments():
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    args = parser.parse_args(["some/model", "--data", "gsm8k,math500", "--data", "aime24", "--k", "4"])
    assert args.model == "some/model" and args.data == ["gsm8k,math500", "aime24"]
    assert (args.k, args.temperature, args.top_p, args.template, args.seed) == (4, 0.6, 0.95, "r1", 0)
    assert args.max_new_tokens == 4096 and args.out is None and args.limit is None


def test_evaluate_during_training_reads_the_trainer(tmp_path, monkeypatch):
    from thinkrl.config import Config

    cfg = Config()
    cfg.eval.every_steps, cfg.eval.k, cfg.eval.max_problems = 10, 2, 4
    trainer = argparse.Namespace(
        cfg=cfg, engine=FakeEngine(), tokenizer=CharTokenizer(), step=10, run_dir=tmp_path
    )
    rows = [
        {"question": f"q{i}?", "answer": str(i)} for i in range(6)
    ]  # load_prompts rows: no id, no verifier
    monkeypatch.setattr("thinkrl.eval.runner.Grader", FakeGrader)  # the real one: test_eval_benchmarks
    m = evaluate_during_training(trainer, rows)
    assert m["eval/num_problems"] == 4 and "eval/cons@2" in m and "eval/pass@1_se" in m
    assert trainer.engine.calls == [(4, 2)]  # cfg.eval.k samples of max_problems problems, batch 8
    summary = json.loads((tmp_path / "eval" / "step_000010" / SUMMARY_FILE).read_text())
    assert summary["sampling"]["max_new_tokens"] == cfg.rollout.max_new_tokens
    assert summary["sampling"]["temperature"] == 0.6 and summary["sampling"]["template"] == cfg.data.template
