"""LeanDecoder (thinkrl's own decode step) against the model's own forward, and the engine with and without it.

Runs on CPU; the CUDA cases (CUDA-graph replay) run where a GPU is visible and are skipped elsewhere.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from thinkrl.rollout import HFEngine, SamplingParams
from thinkrl.rollout.lean import LeanDecoder, lean_unsupported
from thinkrl.testing import char_tokenizer, tiny_model

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]
ARCHS = ["llama", "qwen2", "qwen3", "mistral"]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def make(arch: str, vocab: int, device: str = "cpu") -> torch.nn.Module:
    """2 layers, GQA (4 query / 2 KV heads), weights N(0, 0.15): varied completions, no near-ties."""
    torch.manual_seed(0)
    common = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=2, max_position_embeddings=256,
    )  # fmt: skip
    if arch == "llama":  # biases on every projection, a scaled rope
        model = LlamaForCausalLM(
            LlamaConfig(
                **common,
                attention_bias=True,
                mlp_bias=True,
                rope_scaling={"rope_type": "linear", "factor": 2.0},
            )
        )
    elif arch == "qwen2":  # bias on Q/K/V only, tied head
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    elif arch == "qwen3":  # per-head q/k RMSNorm, head_dim != hidden / heads, untied head
        model = Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16, tie_word_embeddings=False))
    else:
        model = MistralForCausalLM(MistralConfig(**common, sliding_window=None))
    for p in model.parameters():
        p.data.normal_(0, 0.15)
    return model.to(device).eval()


def cache_kw(model: torch.nn.Module) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prompt_batch(tok, texts: list[str], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask, as the engine builds them."""
    ids = [tok.encode(t) for t in texts]
    width = max(map(len, ids))
    x = torch.zeros(len(ids), width, dtype=torch.long)
    m = torch.zeros(len(ids), width, dtype=torch.long)
    for r, row in enumerate(ids):
        x[r, width - len(row) :] = torch.tensor(row)
        m[r, width - len(row) :] = 1
    return x.to(device), m.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("static", [False, True])
def test_steps_match_the_models_forward(tok, arch, static, device):
    """Six decode steps of 2 prompts x 2 repeats: logits equal the model's cached forward's to 1e-5."""
    model = make(arch, len(tok), device)
    assert lean_unsupported(model, 64) is None
    ids, mask = prompt_batch(tok, ["abc", "hello wo"], device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    graph = static and device == "cuda"
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw(model): cache}
        )
        lean = LeanDecoder(
            model, cache, mask, repeats=2, capacity=ids.shape[1] + 8, static_shape=static, cuda_graph=graph
        )
        ref_cache = DynamicCache(config=model.config)
        model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            use_cache=True,
            **{cache_kw(model): ref_cache},
        )
        ref_cache.batch_repeat_interleave(2)
        attn = mask.repeat_interleave(2, 0)
        next_pos = attn.sum(-1)
        gen = torch.Generator().manual_seed(1)
        for _ in range(6):
            tokens = torch.randint(3, len(tok), (4,), generator=gen).to(device)
            attn = torch.cat([attn, attn.new_ones(4, 1)], dim=1)
            want = model(
                input_ids=tokens[:, None], attention_mask=attn, position_ids=next_pos[:, None],
                use_cache=True, **{cache_kw(model): ref_cache},
            ).logits[:, -1]  # fmt: skip
            got = lean.step(tokens, next_pos)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            next_pos = next_pos + 1


def test_select_rows_keeps_the_chosen_rows(tok):
    """Dropping rows mid-decode leaves the kept rows' next logits unchanged; a static decoder refuses."""
    model = make("qwen2", len(tok))
    ids, mask = prompt_batch(tok, ["ab", "xyz"], "cpu")
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw(model): cache}
        )
        full = LeanDecoder(model, cache, mask, repeats=2, capacity=12)
        part = LeanDecoder(model, cache, mask, repeats=2, capacity=12)
        pos = mask.repeat_interleave(2, 0).sum(-1)
        tokens = torch.tensor([5, 6, 7, 8])
        full.step(tokens, pos)
        part.step(tokens, pos)
        keep = torch.tensor([1, 3])
        part.select_rows(keep)
        torch.testing.assert_close(part.step(tokens[keep], pos[keep] + 1), full.step(tokens, pos + 1)[keep])
        static = LeanDecoder(model, cache, mask, repeats=2, capacity=12, static_shape=True)
        with pytest.raises(RuntimeError, match="static-shape"):
            static.select_rows(keep)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHS)
def test_engine_same_completions_with_and_without(tok, arch, device, monkeypatch):
    """Sampled and greedy completions, stop tokens making rows finish (and leave the batch) at different steps:
    the same tokens and log-probs (1e-5) with fast_decode on and off."""
    model = make(arch, len(tok), device)
    batch_sizes: list[int] = []
    step = LeanDecoder.step

    def recording_step(self, tokens, positions):
        batch_sizes.append(tokens.shape[0])
        return step(self, tokens, positions)

    monkeypatch.setattr(LeanDecoder, "step", recording_step)
    prompts = [tok.encode(t) for t in ["abc", "hello world", "x", "12+34="]]
    stop = tok.convert_tokens_to_ids(["=", "7"])
    for temperature in (0.0, 1.0):
        params = SamplingParams(
            n=3, max_new_tokens=24, seed=3, temperature=temperature, stop_strings=[], stop_token_ids=stop
        )
        slow = HFEngine(model, tok, fast_decode=False).generate(prompts, params)
        fast = HFEngine(model, tok, cuda_graph=device == "cuda").generate(prompts, params)
        if temperature > 0:
            assert len(set(map(len, slow.texts))) > 4, "rows should finish at different steps"
        assert torch.equal(fast.completion_ids, slow.completion_ids)
        assert fast.finish_reasons == slow.finish_reasons
        torch.testing.assert_close(fast.logprobs, slow.logprobs, atol=1e-5, rtol=0)
    assert batch_sizes, "the fast path was not used"
    if device == "cpu":  # finished rows leave the batch (with the CUDA graph the shape is fixed: they stay)
        assert min(batch_sizes) < max(batch_sizes)
    else:
        assert min(batch_sizes) == max(batch_sizes)


def test_unsupported_models_fall_back_to_the_forward(tok):
    """GPT-2, LoRA-wrapped layers, short sliding windows and length-dependent rope are refused with a reason,
    and the engine still generates with them (through the model's forward)."""
    assert "gpt2" in lean_unsupported(tiny_model("gpt2", len(tok)), 64)
    mistral = MistralForCausalLM(
        MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, sliding_window=16)
    )  # fmt: skip
    assert "sliding window 16" in lean_unsupported(mistral, 64)
    assert lean_unsupported(mistral, 16) is None
    dynamic = LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                    rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    )  # fmt: skip
    assert "dynamic" in lean_unsupported(dynamic, 64)

    peft = pytest.importorskip(
        "peft", reason="LoRA needs the optional peft package (pip install thinkrl[peft])"
    )
    base = make("llama", len(tok))
    lora = peft.get_peft_model(
        base, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    ).get_base_model()
    assert "plain torch.nn.Linear" in lean_unsupported(lora, 64)
    out = HFEngine(lora, tok).generate([tok.encode("abc")], SamplingParams(n=2, max_new_tokens=5, seed=0))
    assert out.completion_ids.shape[0] == 2
