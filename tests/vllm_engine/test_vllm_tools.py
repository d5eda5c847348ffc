"""Tool-using episodes on the vLLM engine (``make test-vllm``): token-id prompts turn by turn, the same
trajectories as the built-in engine's batched multi-turn decode at temperature 0."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: make test-vllm runs these in .venv-vllm")

from tool_helpers import DIRECT_MODE, QUESTION, TOK, TOOL_MODE, episodes, memorize, tool  # noqa: E402

from thinkrl.rollout import HFEngine  # noqa: E402
from thinkrl.rollout.vllm import VLLMEngine  # noqa: E402


def test_vllm_and_builtin_engines_give_the_same_tool_trajectories_at_temperature_0():
    # head_dim 32: vLLM's CPU attention has no kernel for narrower heads
    model = memorize([(QUESTION, TOOL_MODE)] * 2 + [(QUESTION, DIRECT_MODE)], arch="qwen2", hidden=64, heads=2,
                     max_positions=256)  # fmt: skip
    engine = VLLMEngine(model, TOK, seed=0, max_model_len=256, kv_cache_gib=0.25)
    try:
        theirs = episodes(engine, tool(), n=2)
    finally:
        engine.close()
    ours = episodes(HFEngine(model, TOK), tool(), n=2)
    assert ours.rollout.texts == theirs.rollout.texts == [TOOL_MODE] * 2
    assert torch.equal(ours.rollout.completion_ids, theirs.rollout.completion_ids)
    assert torch.equal(ours.loss_mask, theirs.loss_mask)
    assert float((ours.rollout.logprobs - theirs.rollout.logprobs).abs().max()) < 1e-4
    assert [len(i["tool_calls"]) for i in theirs.infos] == [1, 1]
