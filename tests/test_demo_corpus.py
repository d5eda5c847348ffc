"""The demo's tokenizer, model, task split and pretraining corpus; the "no human reasoning examples" rule."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from thinkrl.data.addition import chain_text, heldout_problems, split_rows
from thinkrl.data.templates import R1_ZERO_TEMPLATE, render_prompt
from thinkrl.demo import DEMO_BASE_PATH, build_model, build_tokenizer, classify_completion, pretrain
from thinkrl.demo.corpus import CORPUS_MIX, R1_SENTENCES, quoted_instruction_tails, sample_documents
from thinkrl.demo.tokenizer import TAG_TOKENS

N_DOCS = 20_000
R1_PREFIX = R1_ZERO_TEMPLATE.split("{question}")[0]  # the instruction up to and including "User: "
# Inside the quoted instruction, <think> only ever encloses nothing or the placeholder words.
ALLOWED_THINK = {"", "reasoning process here"}


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return sample_documents(N_DOCS, seed=0)


def _think_contents(text: str) -> list[str]:
    """What follows each <think> up to </think> (or to the end when it never closes)."""
    out = []
    for m in re.finditer(re.escape("<think>"), text):
        end = text.find("</think>", m.end())
        out.append(text[m.end() : end if end >= 0 else len(text)].strip())
    return out


def test_no_reasoning_trace_after_the_r1_template(docs):
    """The R1-Zero rule: the corpus never shows the template followed by reasoning ("no human reasoning examples").

    Stronger than needed: no document holds the whole template (not even its instruction), and none of the
    instruction's sentences, quoted alone, is ever followed by a non-empty <think> block. Chat logs with worked
    chains exist (the chain mode RL selects), never under the instruction.
    """
    assert all(R1_PREFIX not in d for d in docs)
    tails = quoted_instruction_tails(docs, R1_SENTENCES)
    for after in tails:
        assert set(_think_contents(after)) <= ALLOWED_THINK, after
    assert tails, "the corpus should quote the instruction (familiar words), just never with reasoning"


def test_corpus_has_tagged_chains_and_wrong_answers(docs):
    """The chain mode exists (tagged worked chains in worksheets and chat logs), and a share of direct Q&A answers
    is wrong."""
    tagged = [d for d in docs if "</think> <answer>" in d]
    assert len(tagged) > 0.05 * N_DOCS
    assert sum("Assistant:" not in d for d in tagged) > 0.25 * len(tagged)  # worksheets, not only dialogues
    wrong = right = 0
    for q, a in re.findall(
        r"User: what is ([\d plus]+)\. Assistant: (?:<answer>)?(\d+)", "\n".join(docs)
    ):  # direct
        ok = sum(int(x) for x in q.split(" plus ")) == int(a)
        right, wrong = right + ok, wrong + (not ok)
    assert 0.15 < wrong / (wrong + right) < 0.45


def test_heldout_problems_never_in_corpus(docs):
    held = heldout_problems(seed=0)
    text = "\n".join(docs)
    seen = {
        tuple(int(x) for x in q.split(" plus ")) for q in re.findall(r"what is (\d+(?: plus \d+)+)", text)
    }
    seen |= {
        tuple(int(x) for x in re.split(r", | and ", lst))
        for lst in re.findall(r"add (\d+(?:, \d+)* and \d+)", text)
    }
    assert len(seen) > 1000 and not seen & held


def test_corpus_is_deterministic_and_mix_sums_to_one():
    assert sample_documents(50, seed=3) == sample_documents(50, seed=3)
    assert sample_documents(50, seed=3) != sample_documents(50, seed=4)
    assert abs(sum(CORPUS_MIX.values()) - 1.0) < 1e-9


def test_split_disjoint_and_seeded():
    train, held = split_rows(seed=0, n_heldout=500)
    assert len(held) == 500 and len(train) + len(held) == 9**4
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    assert split_rows(seed=0)[1] == held and split_rows(seed=1)[1] != held
    row = held[0]
    assert row["answer"] == str(sum(row["operands"])) and isinstance(row["answer"], str)


def test_tokenizer_round_trip_and_tags_are_single_ids(tmp_path):
    tok = build_tokenizer()
    text = render_prompt("r1", "what is 3 plus 5 plus 8 plus 6") + " <think> " + chain_text([3, 5, 8, 6])
    text += " </think> <answer>22</answer>\nUpper, lower: ~{}!"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text  # tags survive skip_special_tokens
    for tag in TAG_TOKENS:
        tag_ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(tag_ids) == 1 and tok.convert_ids_to_tokens(tag_ids[0]) == tag
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == ids and loaded.eos_token_id == tok.eos_token_id


def test_model_builds_runs_and_reloads(tmp_path):
    tok = build_tokenizer()
    model = build_model(tok, seed=0)
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.2e6
    ids = torch.tensor([tok("what is 1 plus 2")["input_ids"]])  # (1, T)
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(len(tok))).item()) < 1.0
    assert torch.equal(build_model(tok, seed=0).lm_head.weight, model.lm_head.weight)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.allclose(again(input_ids=ids).logits, model(input_ids=ids).logits)


def test_pretrain_smoke_saves_loadable_checkpoint(tmp_path):
    path = pretrain(tmp_path, steps=3, batch_size=2, seq_len=64, log_every=0)
    assert (path / "model.safetensors").exists() and (path / "pretrain_info.json").exists()
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.vocab_size == len(tok)


def test_classify_completion_modes():
    ops = [3, 5, 8, 6]
    chain = f" <think> {chain_text(ops)} </think> <answer>22</answer>"
    assert classify_completion(chain, "22", ops) == {
        "mode": "steps",
        "format_ok": True,
        "correct": True,
        "faithful": True,
    }
    assert classify_completion(" <answer>21</answer>", "22") == {
        "mode": "direct",
        "format_ok": False,
        "correct": False,
        "faithful": None,
    }
    assert not classify_completion(" <think> </think> <answer>22</answer>", "22")["format_ok"]  # empty think
    assert classify_completion(" 22.", "22")["mode"] == "malformed"


@pytest.mark.skipif(not (DEMO_BASE_PATH / "model.safetensors").exists(), reason="no shipped checkpoint")
def test_shipped_checkpoint_loads_and_is_small():
    size = sum(p.stat().st_size for p in DEMO_BASE_PATH.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    model = AutoModelForCausalLM.from_pretrained(DEMO_BASE_PATH)
    tok = AutoTokenizer.from_pretrained(DEMO_BASE_PATH)
    assert tok(R1_PREFIX)["input_ids"] == build_tokenizer()(R1_PREFIX)["input_ids"]
    assert model.config.model_type == "llama"


def test_pretrain_snapshot_equals_shorter_run(tmp_path):
    """The constant learning rate makes the step-N snapshot of a longer run exactly an N-step run."""
    from safetensors.torch import load_file

    pretrain(tmp_path / "long", steps=4, save_every=2, batch_size=2, seq_len=32, log_every=0)
    pretrain(tmp_path / "short", steps=2, batch_size=2, seq_len=32, log_every=0)
    snap = load_file(tmp_path / "long" / "step-2" / "model.safetensors")
    short = load_file(tmp_path / "short" / "model.safetensors")
    assert all(torch.equal(snap[k], short[k]) for k in short)
