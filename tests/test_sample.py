"""Rejection sampling: each filter on hand-made samples; sampling with a tiny model, resume, and SFT loadability."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from thinkrl.rejection import FilterConfig, RewardGrader, filter_samples, repeated_ngram_ratio, sample_dataset
from thinkrl.rejection.runner import add_sample_arguments, filters_from_args
from thinkrl.sft.config import SFTDataConfig
from thinkrl.sft.data import build_examples, load_sft_rows
from thinkrl.testing import char_tokenizer, tiny_model

GOOD = "<think>two plus two is four</think> <answer>4</answer>"


def sample(i: int, text: str = GOOD, pid: str = "p", **kw):
    rec = {
        "id": pid,
        "sample_idx": i,
        "completion": text,
        "correct": True,
        "length": 10,
        "finish_reason": "stop",
    }
    return {**rec, **kw}


def run(samples, **cfg):
    kept, report = filter_samples(samples, FilterConfig(**cfg))
    return [(s["id"], s["sample_idx"]) for s in kept], report["removed"]


def test_keep_correct_drops_wrong_and_ungraded():
    samples = [sample(0), sample(1, correct=False), sample(2, correct=None)]
    assert run(samples, keep="correct") == ([("p", 0)], {"incorrect": 2, "truncated": 0, "duplicate": 0})
    assert run(samples, keep="all", dedup=False) == ([("p", 0), ("p", 1), ("p", 2)], {"truncated": 0})


def test_truncated_and_too_long():
    samples = [sample(0, finish_reason="length"), sample(1, "a", length=50), sample(2, "b", length=5)]
    kept, removed = run(samples, max_tokens=20)
    assert kept == [("p", 2)] and removed["truncated"] == 1 and removed["too_long"] == 1
    assert run(samples, drop_truncated=False, dedup=False)[0] == [("p", 0), ("p", 1), ("p", 2)]


def test_mixed_language_uses_each_samples_language():
    mixed = "<think>we add 2 and 3 得到 五 这个 数</think> <answer>5</answer>"  # 4 of 8 words English
    samples = [
        sample(0),
        sample(1, mixed),
        sample(2, "<think>先算 二加三 等于五</think><answer>5</answer>", language="zh"),
    ]
    kept, removed = run(samples, min_language_consistency=0.9)
    assert kept == [("p", 0), ("p", 2)] and removed["mixed_language"] == 1


def test_repetition_filter():
    loop = "<think>" + "so we check the sum again and " * 20 + "</think><answer>4</answer>"
    assert repeated_ngram_ratio(loop, 8) > 0.8 and repeated_ngram_ratio(GOOD, 8) == 0.0
    kept, removed = run([sample(0), sample(1, loop)], max_repeat_ratio=0.3)
    assert kept == [("p", 0)] and removed["repetitive"] == 1


def test_code_block_and_format_filters():
    code = "<think>run\n```python\nprint(4)\n```\n</think><answer>4</answer>"
    inline = "<think>the value `x` is 4</think><answer>4</answer>"
    kept, removed = run([sample(0, code), sample(1, inline)], drop_code=True)
    assert kept == [("p", 1)] and removed["code_block"] == 1
    samples = [sample(0, rewards={"format": 1.0}), sample(1, "x", rewards={"format": 0.0}), sample(2, "y")]
    kept, removed = run(samples, require_format=True)
    assert kept == [("p", 0)] and removed["bad_format"] == 2


def test_dedup_is_per_prompt_and_cap_keeps_the_first():
    samples = [
        sample(0),
        sample(1, GOOD.replace(" ", "  ")),
        sample(0, pid="q"),
        sample(2, "other"),
        sample(3, "third"),
    ]
    kept, removed = run(samples, max_per_prompt=2)
    assert kept == [("p", 0), ("q", 0), ("p", 2)]  # same text under another prompt is no duplicate
    assert removed["duplicate"] == 1 and removed["over_cap"] == 1


def test_bad_filter_settings_raise():
    with pytest.raises(ValueError, match="valid: all, correct"):
        FilterConfig(keep="right")


def test_cli_flags_map_to_filters():
    p = argparse.ArgumentParser()
    add_sample_arguments(p)
    args = p.parse_args(["m", "--data", "d.jsonl", "--out", "o", "--keep", "correct", "--no-code",
                         "--min-language-consistency", "0.95", "--max-per-prompt", "2", "--keep-truncated"])  # fmt: skip
    f = filters_from_args(args)
    assert (f.keep, f.drop_code, f.min_language_consistency, f.max_per_prompt, f.drop_truncated) == (
        "correct",
        True,
        0.95,
        2,
        False,
    )


# ------------------------------------------------------------------------------------ end to end, tiny model
def ends_with_answer(prompts, completions, answer, **kw):
    """Toy correctness: the completion contains the gold answer."""
    return [1.0 if str(a) in c else 0.0 for c, a in zip(completions, answer)]


ends_with_answer.__name__ = "accuracy"


def test_sample_grade_filter_resume_and_load_for_sft(tmp_path):
    torch.set_num_threads(1)
    tok = char_tokenizer()
    model = tiny_model("llama", len(tok), seed=0)
    rows = [{"question": f"{i}+{i}", "answer": str(2 * i)} for i in range(4)]
    grader = RewardGrader([ends_with_answer])
    kw = dict(grader=grader, k=4, temperature=1.0, max_new_tokens=6, template="{question}=", batch_size=2,
              progress=False, filters=FilterConfig(keep="all", drop_truncated=False, dedup=False))  # fmt: skip
    res = sample_dataset(model, tok, rows[:2], tmp_path, **kw)  # "interrupted" after two prompts
    assert len(res.samples) == 8 and len(res.kept) == 8
    first = (tmp_path / "samples.jsonl").read_text().splitlines()
    res = sample_dataset(model, tok, rows, tmp_path, **kw)
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert lines[:8] == first and len(lines) == 16  # appended, the first two prompts not sampled again
    rec = json.loads(lines[0])
    assert set(rec["rewards"]) == {"accuracy"} and rec["correct"] == (rec["rewards"]["accuracy"] == 1.0)

    # filtering again with other settings generates nothing new and rewrites sft.jsonl + the summary
    kw["filters"] = FilterConfig(keep="correct")
    res = sample_dataset(model, tok, rows, tmp_path, **kw)
    n_correct = sum(s["correct"] for s in res.samples)
    summary = json.loads((tmp_path / "filter_summary.json").read_text())
    assert summary["total"] == 16 and summary["removed"]["incorrect"] == 16 - n_correct
    assert summary["kept"] == len(res.kept) == sum(1 for _ in open(tmp_path / "sft.jsonl"))
    assert (tmp_path / "summary.json").exists()  # the sampler's pass@k on these prompts

    # the written dataset is what `thinkrl sft` reads, with its default columns
    kw["filters"] = FilterConfig(keep="all", drop_truncated=False, dedup=False)
    sample_dataset(model, tok, rows, tmp_path, **kw)
    sft_rows = load_sft_rows(str(tmp_path / "sft.jsonl"))
    assert sft_rows[0]["prompt"] == "0+0=" and sft_rows[0]["response"] == res.samples[0]["completion"]
    examples, dropped = build_examples(sft_rows, tok, SFTDataConfig(), max_seq_len=64)
    assert len(examples) == 16 and dropped == 0
    assert tok.decode(examples[0].input_ids[:4]) == "0+0="
