"""``thinkrl distill``: a teacher and a student with different tokenizers and architectures; text is the interface."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from thinkrl.cli import main
from thinkrl.config import ConfigError
from thinkrl.pipeline import distill_pipeline
from thinkrl.sft.config import SFTDataConfig
from thinkrl.sft.data import build_examples, load_sft_rows
from thinkrl.testing import DEFAULT_CHARS, char_tokenizer, tiny_model

STUDENT_CHARS = DEFAULT_CHARS[::-1]  # the same characters under other ids


def save(path, arch, tok):
    tiny_model(arch, len(tok), max_positions=512).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_distill_teacher_text_trains_a_student_with_another_tokenizer(tmp_path, capsys):
    teacher = save(tmp_path / "teacher", "llama", char_tokenizer())
    student_tok = char_tokenizer(STUDENT_CHARS, extra_tokens=("<think>", "</think>"))
    student = save(tmp_path / "student", "gpt2", student_tok)
    rows = [{"question": f"what is {a} plus {a}", "answer": str(2 * a)} for a in range(1, 7)]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "distill"
    argv = [
        "distill", "sample.filters.drop_truncated=false", "sft.train.max_steps=2", "sft.train.lr=1e-3",
        "sft.train.max_seq_len=128", "sft.log.progress=false", "sample.progress=false", "eval.progress=false",
        "--teacher", teacher, "--student", student, "--data", str(data), "--out", str(out), "--k", "2",
        "--keep", "all", "--template", "plain", "--max-new-tokens", "8", "--eval-data", str(data),
        "--eval-k", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    kept = load_sft_rows(str(out / "sample" / "sft.jsonl"), "train")
    assert len(kept) >= 6 and {"question", "response", "prompt"} <= set(kept[0])
    # the SFT stage re-renders each question for the student: its tokens are the student's ids for that text
    cfg = SFTDataConfig(prompt_key="question", template="plain")
    examples, _ = build_examples(kept, student_tok, cfg, 128)
    text = kept[0]["question"] + kept[0]["response"]
    assert student_tok.decode(examples[0].input_ids, skip_special_tokens=True) == text
    assert student_tok(text, add_special_tokens=False)["input_ids"] != char_tokenizer()(text)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(out / "sft" / "model")
    assert model.config.model_type == "gpt2" and len(
        AutoTokenizer.from_pretrained(out / "sft" / "model")
    ) == len(student_tok)
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["stages"]] == [
        ("sample", "ran"), ("sft", "ran"), ("eval", "ran"),
    ]  # fmt: skip
    assert summary["stages"][0]["metrics"]["kept"] == len(kept)
    capsys.readouterr()
    assert main(argv) == 0  # a rerun finds every stage done
    assert capsys.readouterr().out.count("is done; skipped") == 3


def test_distill_stage_settings_and_errors():
    p = distill_pipeline("T", "S", "d.jsonl", "/tmp/never", k=8, template="chat", max_per_prompt=2,
                         overrides=["sft.train.epochs=3"])  # fmt: skip
    sample, sft = p.stages
    assert (
        sample.cfg.k == 8 and sample.cfg.filters.keep == "correct" and sample.cfg.filters.max_per_prompt == 2
    )
    assert (
        sft.cfg.data.prompt_key == "question" and sft.cfg.data.template == "chat"
    )  # the student's chat template
    assert sft.cfg.model.path == "S" and sft.cfg.train.epochs == 3 and sft.deps == ["sample"]
    with pytest.raises(ConfigError, match="STAGE one of sample, sft"):
        distill_pipeline("T", "S", "d.jsonl", "/tmp/never", overrides=["student.train.lr=1"])
