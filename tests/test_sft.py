"""SFT on tiny local models: the label mask, packing without leaks, memorisation, exact resume, config errors."""

from __future__ import annotations

import json

import pytest
import torch

from thinkrl.config import ConfigError
from thinkrl.rollout.base import SamplingParams
from thinkrl.rollout.hf import HFEngine
from thinkrl.sft import SFTTrainer, load_sft_config
from thinkrl.sft.config import SFTDataConfig
from thinkrl.sft.data import build_examples, collate, pack, plan_epoch, tokenize_row
from thinkrl.sft.trainer import response_nll
from thinkrl.testing import char_tokenizer, tiny_model

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<a>{% endif %}"
)  # <u>user<eos><a>assistant<eos>...: roles u / s / a, in characters the char tokenizer knows

# 20 rows: a 3-letter word -> the word reversed, between R1 tags-ish markers
WORDS = ["cat", "dog", "sun", "map", "box", "pen", "cup", "hat", "key", "fox",
         "owl", "bee", "ant", "elk", "yak", "emu", "ram", "cod", "eel", "jay"]  # fmt: skip
ROWS = [{"prompt": f"{w}=", "response": f"<{w[::-1]}>"} for w in WORDS]


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def make_cfg(tmp_path, *overrides: str):
    base = [
        f"train.output_dir={tmp_path / 'run'}", "log.progress=false", "train.lr=1e-2", "train.max_seq_len=64",
        "train.micro_batch_size=4", "train.lr_schedule=constant", "train.max_grad_norm=0",
        "train.num_threads=1",  # tiny tensors: one thread beats contended ones
    ]  # fmt: skip
    return load_sft_config(None, base + list(overrides))


def make_trainer(tmp_path, *overrides: str, rows=ROWS, seed: int = 0, arch: str = "llama"):
    tok = char_tokenizer()
    model = tiny_model(arch, len(tok), hidden=64, seed=seed)
    return SFTTrainer(make_cfg(tmp_path, *overrides), model=model, tokenizer=tok, train_rows=rows)


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------- label mask
def test_prompt_tokens_carry_exactly_zero_loss(tmp_path):
    tok = char_tokenizer()
    ex = tokenize_row({"prompt": "ab=", "response": "ba"}, tok, SFTDataConfig())
    assert ex.input_ids == tok("ab=ba")["input_ids"] + [tok.eos_token_id]
    assert ex.loss_mask == [False, False, False, True, True, True]  # response + EOS only

    tr = make_trainer(tmp_path)
    batch = collate([ex], [[0]], tok.pad_token_id)
    logits = tr.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits.retain_grad()
    nll, count = response_nll(logits, batch["input_ids"], batch["loss_mask"])
    assert count.item() == 3
    nll.backward()
    # logits at t predict token t+1: positions 0, 1 predict prompt tokens and must get no gradient at all
    assert torch.equal(logits.grad[0, :2], torch.zeros_like(logits.grad[0, :2]))
    assert logits.grad[0, 2:5].abs().sum() > 0
    assert torch.equal(logits.grad[0, 5], torch.zeros_like(logits.grad[0, 5]))  # nothing follows EOS


def test_r1_template_and_messages_masks():
    tok = char_tokenizer()
    cfg = SFTDataConfig(template="q: {question} a:", prompt_key="question")
    ex = tokenize_row({"question": "1+1", "response": " 2"}, tok, cfg)
    assert tok.decode(ex.input_ids) == "q: 1+1 a: 2<eos>"
    assert sum(ex.loss_mask) == 3  # " 2" + EOS

    tok.chat_template = CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"}]  # fmt: skip
    ex = tokenize_row({"messages": msgs}, tok, SFTDataConfig())
    trained = "".join(tok.decode([i]) for i, m in zip(ex.input_ids, ex.loss_mask) if m)
    assert trained == "yo<eos>2<eos>"  # both assistant turns with their end token; never the user or <a>
    assert tok.decode(ex.input_ids) == "<u>hi<eos><a>yo<eos><u>1+1<eos><a>2<eos>"


def test_too_long_samples_are_dropped_not_cut():
    tok = char_tokenizer()
    rows = [{"prompt": "a", "response": "b" * 10}, {"prompt": "a", "response": "b"}]
    examples, dropped = build_examples(rows, tok, SFTDataConfig(), max_seq_len=5)
    assert dropped == 1 and len(examples) == 1 and len(examples[0]) == 3


# ---------------------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_row_equals_samples_alone(arch, attn):
    tok = char_tokenizer()
    model = tiny_model(arch, len(tok), seed=1).eval()
    model.config._attn_implementation = attn
    rows = [
        {"prompt": "12+3=", "response": "15"},
        {"prompt": "x=", "response": "yz"},
        {"prompt": "ab", "response": "c"},
    ]
    examples, _ = build_examples(rows, tok, SFTDataConfig(), 64)
    packed = collate(examples, [[0, 1], [2]], tok.pad_token_id)  # row 0: two samples; row 1: one + padding
    assert packed["position_ids"][0].tolist()[:10] == [*range(8), 0, 1]
    with torch.no_grad():
        out = model(**{k: packed[k] for k in ("input_ids", "position_ids", "attention_mask")}).logits
        at = {0: (0, 0), 1: (0, len(examples[0])), 2: (1, 0)}
        for i, ex in enumerate(examples):
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            r, s = at[i]
            torch.testing.assert_close(out[r, s : s + len(ex)], alone, rtol=1e-5, atol=1e-5)
    assert not packed["loss_mask"][0, len(examples[0])]  # the second sample's first token is no target


def test_pack_and_plans_cover_every_sample_once():
    assert pack([3, 3, 2, 4], [0, 1, 2, 3], 6) == [[0, 1], [2, 3]]
    lengths = [5, 9, 2, 7, 3, 8, 1, 6, 4, 10] * 3
    for batching in ("packed", "grouped", "padded"):
        plan = plan_epoch(lengths, batching, 4, 16, seed=3)
        seen = sorted(i for mb in plan for row in mb for i in row)
        assert seen == list(range(len(lengths))), batching
        assert all(len(mb) <= 4 for mb in plan)
        assert all(sum(lengths[i] for i in row) <= 16 for mb in plan for row in mb)
        assert plan == plan_epoch(lengths, batching, 4, 16, seed=3)  # deterministic: resume rebuilds it
    assert len(plan_epoch(lengths, "packed", 4, 16, 0)) < len(plan_epoch(lengths, "padded", 4, 16, 0))


def test_micro_batching_does_not_change_the_update(tmp_path):
    a = make_trainer(tmp_path / "a", "train.batching=padded", "train.micro_batch_size=4", "train.max_steps=1")
    b = make_trainer(tmp_path / "b", "train.batching=padded", "train.micro_batch_size=1",
                     "train.grad_accum_steps=4", "train.max_steps=1")  # fmt: skip
    a.train_step(), b.train_step()
    pb = params(b.model)
    for k, v in params(a.model).items():
        torch.testing.assert_close(pb[k], v, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------- learning, resume
def test_tiny_model_memorises_twenty_examples(tmp_path):
    tr = make_trainer(tmp_path, "train.epochs=80", "train.max_grad_norm=1.0")  # one step an epoch
    history = tr.train()
    assert history[-1]["train/loss"] < 0.01, [round(h["train/loss"], 3) for h in history[::10]]
    assert history[-1]["train/loss"] < history[0]["train/loss"] / 20
    tok = tr.tokenizer
    prompts = [tok(r["prompt"])["input_ids"] for r in ROWS]
    out = HFEngine(tr.model, tok).generate(prompts, SamplingParams(temperature=0, max_new_tokens=8))
    assert out.texts == [r["response"] for r in ROWS]
    assert all(f == "stop" for f in out.finish_reasons)  # it learnt the EOS too


def test_resume_continues_exactly(tmp_path):
    opts = ("train.epochs=3", "train.micro_batch_size=2", "train.lr_schedule=cosine", "train.warmup_steps=2")
    full = make_trainer(tmp_path / "a", *opts)
    full_hist = full.train()
    assert len(full_hist) == 6  # 20 samples of 10 tokens packed into 4 rows of 64, 2 rows a step, 3 epochs

    part = make_trainer(tmp_path / "b", *opts)
    for _ in range(3):  # "killed" after three steps, past an epoch boundary
        part.logger.log(part.step + 1, part.train_step())
    part.save()
    resumed = make_trainer(
        tmp_path / "b", *opts, "train.resume=true", seed=123,  # another init: the checkpoint must overwrite it
    )  # fmt: skip
    assert resumed.step == 3
    hist = resumed.train()
    assert [h["step"] for h in hist] == [4, 5, 6]
    for k, v in params(full.model).items():
        torch.testing.assert_close(params(resumed.model)[k], v, rtol=0, atol=1e-6)
    assert hist[-1]["train/loss"] == pytest.approx(full_hist[-1]["train/loss"], abs=1e-6)
    lines = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------------------- config
def test_config_errors_say_how_to_fix():
    with pytest.raises(ConfigError, match="valid keys under 'train'.*batching"):
        load_sft_config(None, ["train.packing=true"])
    with pytest.raises(ConfigError, match="train.batching='pack'; valid: packed, grouped, padded"):
        load_sft_config(None, ["train.batching=pack"])
    with pytest.raises(ConfigError, match="data.template"):
        load_sft_config(None, ["data.template=nope"])
