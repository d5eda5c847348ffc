"""The vLLM rollout engine against the built-in one and the trainer (run by ``make test-vllm`` in .venv-vllm).

One engine is started for the module (~40-110 s on the shared 2-core machine: vLLM spawns an engine-core and a
worker process, each importing vLLM); every test reuses it. Tolerances are for fp32 on CPU: measured maximum
differences were ~5e-7 before and ~7e-6 after a large weight change; we assert 1e-4 (and 1e-3 for LoRA merges,
whose merged weights differ from the unmerged forward by rounding).
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: make test-vllm runs these in .venv-vllm")

from thinkrl.rollout import HFEngine, SamplingParams  # noqa: E402
from thinkrl.rollout.vllm import VLLMEngine  # noqa: E402
from thinkrl.testing import char_tokenizer, tiny_model  # noqa: E402
from thinkrl.train.batch import build_batch, forward_logprobs  # noqa: E402

TOL = 1e-4
PROMPTS = ["12+3=", "7=", "0123456789"]


@pytest.fixture(scope="module")
def setup():
    tok = char_tokenizer()
    # head_dim 32: vLLM's CPU attention has no kernel for the 8/16-wide heads of the default tiny models
    model = tiny_model("qwen2", len(tok), hidden=64, heads=2, max_positions=128, seed=1)
    engine = VLLMEngine(model, tok, seed=0, max_model_len=128, kv_cache_gib=0.25)
    prompt_ids = [tok(p)["input_ids"] for p in PROMPTS]
    yield model, tok, engine, prompt_ids
    engine.close()


def trainer_logprobs(model, rollout, temperature: float) -> torch.Tensor:
    """(N, T) log-probs of the rollout's tokens as the trainer computes them (the built-in engine's values)."""
    batch = build_batch(rollout, torch.zeros(len(rollout.texts)), 0, rollout.completion_mask)
    with torch.no_grad():
        logp, _ = forward_logprobs(model, batch, temperature)
    return logp * rollout.completion_mask


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float(((a - b).abs() * mask).max())


def test_greedy_matches_builtin_engine_tokens_and_logprobs(setup):
    model, tok, engine, prompt_ids = setup
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=12)
    ours = HFEngine(model, tok).generate(prompt_ids, params)
    theirs = engine.generate(prompt_ids, params)
    assert torch.equal(theirs.completion_ids, ours.completion_ids)
    assert theirs.finish_reasons == ours.finish_reasons and theirs.texts == ours.texts
    assert max_diff(theirs.logprobs, ours.logprobs, ours.completion_mask) < TOL


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_agree_with_trainer(setup, temperature):
    """vLLM's sampler log-probs equal log_softmax(logits / T) of the same tokens, thinkrl's convention."""
    model, tok, engine, prompt_ids = setup
    out = engine.generate(prompt_ids, SamplingParams(n=4, temperature=temperature, max_new_tokens=16, seed=5))
    assert out.completion_ids.shape[0] == 12 and out.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert len(set(map(tuple, out.completion_ids.tolist()))) > 1, "n=4 samples should differ"
    assert (out.logprobs[~out.completion_mask] == 0).all()
    assert max_diff(out.logprobs, trainer_logprobs(model, out, temperature), out.completion_mask) < TOL


def test_seeded_calls_reproduce_and_ranks_sample_their_share(setup):
    _, _, engine, prompt_ids = setup
    params = SamplingParams(n=3, max_new_tokens=10, seed=11)
    a, b = engine.generate(prompt_ids, params), engine.generate(prompt_ids, params)
    assert torch.equal(a.completion_ids, b.completion_ids)
    # a data-parallel rank holding prompts 1..2 (first_row = 1 * n) samples what one process samples for them
    part = engine.generate(prompt_ids[1:], SamplingParams(n=3, max_new_tokens=10, seed=11, first_row=3))
    assert part.texts == a.texts[3:]


def test_stop_strings_and_eos_end_completions_like_builtin(setup):
    model, tok, engine, prompt_ids = setup
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=20, stop_strings=["1", "5"])
    ours = HFEngine(model, tok).generate(prompt_ids, params)
    theirs = engine.generate(prompt_ids, params)
    assert theirs.texts == ours.texts and theirs.finish_reasons == ours.finish_reasons
    for text, reason in zip(theirs.texts, theirs.finish_reasons):
        if reason == "stop" and text and text[-1] in "15":  # the token that completes the stop string is kept
            assert "1" not in text[:-1] and "5" not in text[:-1]


def test_sync_weights_after_a_training_step(setup):
    """After an optimizer step the engine samples from the old weights until sync_weights(), then the new."""
    model, tok, engine, prompt_ids = setup
    old = copy.deepcopy(model)
    params = SamplingParams(n=4, max_new_tokens=12, seed=7)
    before = engine.generate(prompt_ids, params)
    # one real AdamW step that makes the sampled completions much less likely
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    batch = build_batch(before, torch.ones(len(before.texts)), 0, before.completion_mask)
    logp, _ = forward_logprobs(model, batch, 1.0)
    (logp * batch.mask).sum().backward()
    opt.step()
    opt.zero_grad()

    stale = engine.generate(prompt_ids, params)  # not synced yet: the engine still holds the old weights
    assert torch.equal(stale.completion_ids, before.completion_ids)
    engine.sync_weights()
    after = engine.generate(prompt_ids, params)
    assert not torch.equal(after.completion_ids, before.completion_ids)
    new_lp, old_lp = trainer_logprobs(model, after, 1.0), trainer_logprobs(old, after, 1.0)
    assert max_diff(after.logprobs, new_lp, after.completion_mask) < TOL
    assert (
        max_diff(after.logprobs, old_lp, after.completion_mask) > 0.1
    )  # the old weights would not give them

    model.load_state_dict(old.state_dict())  # leave the shared fixture as it was
    engine.sync_weights()
    assert torch.equal(engine.generate(prompt_ids, params).completion_ids, before.completion_ids)


def test_sync_weights_merges_lora_adapters(setup):
    """A PEFT policy is pushed with its adapters folded in: vLLM then samples from W + BA."""
    pytest.importorskip("peft")
    from thinkrl.config import ModelConfig
    from thinkrl.core.lora import apply_lora

    model, tok, engine, prompt_ids = setup
    policy = apply_lora(copy.deepcopy(model), ModelConfig(lora_r=4, lora_alpha=8.0))
    with torch.no_grad():  # adapters start at B = 0; give them a visible effect
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    engine.model, original = policy, engine.model
    try:
        engine.sync_weights()
        out = engine.generate(prompt_ids, SamplingParams(n=4, max_new_tokens=12, seed=3))
        assert max_diff(out.logprobs, trainer_logprobs(policy, out, 1.0), out.completion_mask) < 1e-3
        assert max_diff(out.logprobs, trainer_logprobs(model, out, 1.0), out.completion_mask) > 0.05
    finally:
        engine.model = original
        engine.sync_weights()
