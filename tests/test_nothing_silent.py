"""Nothing silent: every kept row trains, skipped steps and useless rewards are warnings, limits fail at start."""

from __future__ import annotations

import time

import pytest
from conftest import copy_digit, make_cfg, make_trainer, run_metrics

from thinkrl.rewards import in_process
from thinkrl.train.learner import Learner


def _spread_for_zero(prompts, completions, **kw):
    """Rewards 0, 1, 2, 3 in each group whose prompt is '0=', 0 elsewhere: only those groups have spread."""
    return [float(i % 4) if p.startswith("0") else 0.0 for i, p in enumerate(prompts)]


def _dynamic_trainer(tmp_path, questions, minibatches, monkeypatch):
    """A dynamic-sampling run whose every step draws ``questions``; returns it and the rows each optimizer
    step trained on (lists of row counts per minibatch)."""
    from thinkrl.testing import char_tokenizer, tiny_model
    from thinkrl.train import GRPOTrainer

    tok = char_tokenizer("0123456789=")
    cfg = make_cfg(
        tmp_path, "train.steps=1", f"rollout.prompts_per_step={len(questions)}", "algorithm.dynamic_sampling=true",
        "algorithm.max_sampling_rounds=1", f"algorithm.num_minibatches={minibatches}", "train.micro_batch_size=2",
    )  # fmt: skip
    rows = [{"question": q, "answer": q} for q in questions]
    tr = GRPOTrainer(cfg, model=tiny_model("llama", len(tok)), tokenizer=tok,
                     reward_funcs=[in_process(_spread_for_zero)], train_rows=rows)  # fmt: skip
    trained: list[int] = []
    seen: list[int] = []
    micro_step = Learner._micro_step

    def count(self, micro, *args, **kwargs):
        seen.append(len(micro))
        return micro_step(self, micro, *args, **kwargs)

    monkeypatch.setattr(Learner, "_micro_step", count)

    def counted_step(*_):
        trained.append(sum(seen))
        seen.clear()

    tr.optimizer.register_step_pre_hook(counted_step)
    return tr, trained


def test_dynamic_sampling_trains_every_kept_row_once_in_even_minibatches(tmp_path, monkeypatch):
    # three of four groups have spread: 12 kept rows in 8 minibatches -> 2, 2, 2, 2, 1, 1, 1, 1 (not 8 x 1,
    # dropping 4 rows while the metrics count 12)
    tr, trained = _dynamic_trainer(tmp_path, ["0", "0", "0", "1"], 8, monkeypatch)
    history = tr.train()
    assert trained == [2, 2, 2, 2, 1, 1, 1, 1] and history[-1]["completions"] == 12


def test_dynamic_sampling_with_fewer_rows_than_minibatches(tmp_path, monkeypatch):
    # one kept group of 4 rows, 8 minibatches: 4 of one row each, the empty ones skipped (no KeyError)
    tr, trained = _dynamic_trainer(tmp_path, ["0", "1", "1", "1"], 8, monkeypatch)
    history = tr.train()
    assert trained == [1, 1, 1, 1] and history[-1]["completions"] == 4
    assert history[-1]["train/loss"] == history[-1]["train/loss"]  # a number, the mean over 4 minibatches
    # the lr schedule still advanced once per planned minibatch
    assert tr.scheduler.last_epoch == 8


def _constant(prompts, completions, **kw):
    return [0.5] * len(completions)


def test_a_skipped_step_warns_with_its_reason_and_is_counted(tmp_path, capsys):
    tr = make_trainer(
        tmp_path, "train.steps=2", "algorithm.dynamic_sampling=true", "algorithm.max_sampling_rounds=2",
        "train.save_every=1", rewards=(in_process(_constant),),
    )  # fmt: skip
    tr.train()
    err = capsys.readouterr().err
    assert "step 1 was skipped: nothing to train on (dynamic/dropped_groups=8, dynamic/rounds=2" in err
    assert "2 skipped so far" in err
    assert [r["skipped_steps"] for r in run_metrics(tmp_path / "run")] == [1, 2]
    # the count survives a resume
    resumed = make_trainer(
        tmp_path, "train.steps=3", "train.resume=true", "algorithm.dynamic_sampling=true",
        "algorithm.max_sampling_rounds=2", "train.save_every=1", rewards=(in_process(_constant),),
    )  # fmt: skip
    resumed.train()
    assert run_metrics(tmp_path / "run")[-1]["skipped_steps"] == 3


def _never(prompts, completions, **kw):
    return [None] * len(completions)


def test_a_reward_that_applies_to_no_row_warns_once(tmp_path, capsys):
    make_trainer(tmp_path, "train.steps=2", rewards=(copy_digit, in_process(_never))).train()
    err = capsys.readouterr().err
    assert err.count("reward '_never' returned None (not applicable) for every row at step 1") == 1


def _hangs(prompts, completions, **kw):
    time.sleep(30)
    return [1.0] * len(completions)


def test_a_hanging_reward_is_reported_in_metrics_and_a_warning(tmp_path, capsys):
    start = time.monotonic()
    history = make_trainer(
        tmp_path, "train.steps=1", "grading.timeout_s=1", "grading.rows_per_call=64", rewards=(copy_digit, _hangs)
    ).train()  # fmt: skip
    assert time.monotonic() - start < 25  # bounded by the timeout, not the 30 s sleep
    assert history[-1]["reward/timeouts/_hangs"] == 16 and history[-1]["reward/timeouts/copy_digit"] == 0
    # the run doctor (on by default) names it
    assert (
        "[doctor] step 1: reward functions time out or raise (reward_failures): reward/timeouts/_hangs"
        in (capsys.readouterr().err)
    )


# ----------------------------------------------------------------------------------------------- length limits
def _gpt2(vocab, positions):
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=4, n_positions=positions)
    )


def test_length_limits_fail_at_start_for_absolute_positions(tmp_path):
    from thinkrl.core import LengthError
    from thinkrl.eval import evaluate
    from thinkrl.testing import char_tokenizer
    from thinkrl.train import GRPOTrainer

    tok = char_tokenizer("0123456789=")
    cfg = make_cfg(tmp_path, "rollout.max_new_tokens=20")
    with pytest.raises(
        LengthError, match=r"needs 22 positions.*absolute position embeddings for 16.*at most 14"
    ):
        GRPOTrainer(cfg, model=_gpt2(len(tok), 16), tokenizer=tok, reward_funcs=[copy_digit],
                    train_rows=[{"question": "1", "answer": "1"}])  # fmt: skip
    # the held-out prompts too, at the start (a resume may raise eval.max_new_tokens), not at the first eval
    cfg = make_cfg(
        tmp_path / "eval", "rollout.max_new_tokens=4", "eval.every_steps=1", "eval.max_new_tokens=20"
    )
    with pytest.raises(LengthError, match=r"longest held-out prompt \(2 tokens\) \+ eval.max_new_tokens=20"):
        GRPOTrainer(cfg, model=_gpt2(len(tok), 16), tokenizer=tok, reward_funcs=[copy_digit],
                    train_rows=[{"question": "1", "answer": "1"}], eval_rows=[{"question": "1", "answer": "1"}])  # fmt: skip
    rows = [{"id": "a", "question": "1", "answer": "1"}]
    with pytest.raises(LengthError, match=r"max_new_tokens=20 needs 22 positions"):
        evaluate(
            _gpt2(len(tok), 16), tok, rows, k=1, max_new_tokens=20, template="{question}=", progress=False
        )


def test_length_limits_warn_for_rope(tmp_path, capsys):
    from thinkrl.eval import evaluate
    from thinkrl.testing import char_tokenizer, tiny_model

    tok = char_tokenizer("0123456789=")
    rows = [{"id": "a", "question": "1", "answer": "1"}]
    evaluate(tiny_model("llama", len(tok), max_positions=8), tok, rows, k=1, max_new_tokens=10,
             template="{question}=", progress=False)  # fmt: skip
    assert "more than the 8 LlamaForCausalLM was trained for" in capsys.readouterr().err


def test_sft_checks_the_longest_sample(tmp_path):
    from thinkrl.core import LengthError
    from thinkrl.sft import SFTTrainer
    from thinkrl.sft.config import load_sft_config
    from thinkrl.testing import char_tokenizer

    tok = char_tokenizer()
    cfg = load_sft_config(None, ["data.template=none", f"train.output_dir={tmp_path}", "log.progress=false"])
    rows = [{"prompt": "1+1=", "response": "2" * 30}]
    with pytest.raises(LengthError, match=r"longest sample \(\d+ tokens\) needs \d+ positions.*for 16 only"):
        SFTTrainer(cfg, model=_gpt2(len(tok), 16), tokenizer=tok, train_rows=rows)
