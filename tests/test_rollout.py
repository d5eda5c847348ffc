"""The built-in HF engine against HF's own generate, a full-sequence forward, and its sampling contract.

Tiny Llama / Qwen2 / GPT-2 models built from configs and a char-level tokenizer built in code: no downloads.
"""

from __future__ import annotations

import doctest

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from thinkrl.algorithms import truncated_token_logprobs
from thinkrl.rollout import HFEngine, Rollout, SamplingParams
from thinkrl.rollout import token_draw as sampling_mod
from thinkrl.rollout.hf import DROP_FRACTION, MAX_IDLE_STEPS, _new_cache
from thinkrl.rollout.token_draw import inverse_cdf_sample, sample_tokens, truncate_probs

PAD, EOS, BOS = 0, 1, 2
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 +=<>/."


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls only lose from intra-op threads, badly so on a shared machine; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": PAD, "<eos>": EOS, "<bos>": BOS}
    for c in CHARS:
        vocab[c] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tk.decoder = decoders.Fuse()  # join characters without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )


def make_model(arch: str, vocab_size: int, seed: int = 0) -> torch.nn.Module:
    """A 2-layer, hidden-32 model; a larger init range gives peaked logits so argmax ties cannot happen."""
    torch.manual_seed(seed)
    ids = dict(pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, initializer_range=0.2, **ids)
        return GPT2LMHeadModel(cfg)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
        **ids,
    )
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    return Qwen2ForCausalLM(Qwen2Config(**common))


@pytest.fixture(scope="module")
def qwen(tokenizer) -> torch.nn.Module:
    return make_model("qwen2", len(tokenizer))


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return [[BOS] + tokenizer(t).input_ids for t in texts]


PROMPTS = ["ab c", "hello world 12", "x", "7+5="]


def record_forwards(model: torch.nn.Module) -> tuple[list[tuple[int, int]], list[bool], object]:
    """Record (batch, seq) of every forward's input_ids and the model's training flag at that moment."""
    shapes: list[tuple[int, int]] = []
    training: list[bool] = []

    def hook(module, args, kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        training.append(module.training)

    return shapes, training, model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_greedy_matches_hf_generate_with_left_padding(tokenizer, arch):
    model = make_model(arch, len(tokenizer)).eval()  # eval: GPT-2 has dropout, HF generate keeps the mode
    prompts = encode(tokenizer, PROMPTS)  # lengths 5, 15, 2, 5: left padding matters
    out = HFEngine(model, tokenizer).generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=10))

    width = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    attn = (ids != PAD).long()
    ref = model.generate(
        input_ids=ids,
        attention_mask=attn,
        do_sample=False,
        max_new_tokens=10,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )[:, width:]
    for i, length in enumerate(out.lengths.tolist()):
        assert out.completion_ids[i, :length].tolist() == ref[i, :length].tolist()
        assert out.finish_reasons[i] == ("stop" if ref[i, length - 1] == EOS else "length")


def test_logprobs_match_full_forward_and_rollout_contract(tokenizer, qwen):
    prompts = encode(tokenizer, PROMPTS)
    params = SamplingParams(n=3, temperature=0.7, top_k=20, top_p=0.9, max_new_tokens=12, seed=3)
    params.stop_token_ids = tokenizer.convert_tokens_to_ids(list("aeiou"))  # ragged lengths
    out = HFEngine(qwen, tokenizer).generate(prompts, params)

    assert isinstance(out, Rollout)
    n_rows = len(prompts) * 3
    assert out.group_ids.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert out.completion_ids.shape == out.logprobs.shape == out.completion_mask.shape
    assert out.completion_ids.shape == (n_rows, int(out.lengths.max()))
    assert out.completion_mask.dtype == torch.bool and out.logprobs.dtype == torch.float32
    assert len(set(out.lengths.tolist())) > 1, "stop tokens should give ragged lengths"
    assert (out.completion_ids[~out.completion_mask] == PAD).all()
    assert (out.logprobs[~out.completion_mask] == 0).all()
    assert not out.logprobs.requires_grad

    for i in range(n_rows):
        length = int(out.lengths[i])
        comp = out.completion_ids[i, :length].tolist()
        prompt = prompts[int(out.group_ids[i])]
        with torch.no_grad():
            logits = qwen(input_ids=torch.tensor([prompt + comp])).logits[0]  # (L, V)
        # the truncated distribution the token was drawn from (top-k 20, then top-p 0.9), as the learner scores it
        ref, _ = truncated_token_logprobs(
            logits[None, len(prompt) - 1 : -1], torch.tensor([comp]), 0.7, top_k=20, top_p=0.9
        )
        torch.testing.assert_close(out.logprobs[i, :length], ref[0], atol=1e-4, rtol=0)
        stopped = comp[-1] in [*params.stop_token_ids, EOS]
        assert out.finish_reasons[i] == ("stop" if stopped else "length")
        assert stopped or length == params.max_new_tokens
        assert out.texts[i] == tokenizer.decode(comp, skip_special_tokens=True)


def test_greedy_logprobs_are_plain_log_softmax(tokenizer, qwen):
    prompts = encode(tokenizer, PROMPTS[:2])
    out = HFEngine(qwen, tokenizer).generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=6))
    for i, prompt in enumerate(prompts):
        comp = out.completion_ids[i, : int(out.lengths[i])].tolist()
        with torch.no_grad():
            logits = qwen(input_ids=torch.tensor([prompt + comp])).logits[0, len(prompt) - 1 : -1]
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(comp)[:, None]).squeeze(-1)
        torch.testing.assert_close(out.logprobs[i, : len(comp)], ref, atol=1e-4, rtol=0)


def test_stop_string_cuts_right_after_completing_token(tokenizer, qwen):
    engine = HFEngine(qwen, tokenizer)
    prompts = encode(tokenizer, ["hello world 12"])
    free = engine.generate(prompts, SamplingParams(max_new_tokens=20, seed=7))
    text = free.texts[0]
    assert len(text) >= 10, "precondition: the free-running sample must be long enough"
    stop = text[6:9]  # spans three one-character tokens
    expected = next(j + 1 for j in range(len(text)) if stop in text[: j + 1])  # first completion, in tokens

    out = engine.generate(prompts, SamplingParams(max_new_tokens=20, seed=7, stop_strings=[stop, "never!"]))
    assert out.finish_reasons == ["stop"]
    assert int(out.lengths[0]) == expected
    assert out.texts[0] == text[:expected] and out.texts[0].endswith(stop)
    assert out.completion_ids[0, :expected].tolist() == free.completion_ids[0, :expected].tolist()


def test_max_new_tokens_gives_length(tokenizer, qwen):
    out = HFEngine(qwen, tokenizer).generate(
        encode(tokenizer, PROMPTS), SamplingParams(temperature=0.0, max_new_tokens=4)
    )
    for reason, length, row in zip(out.finish_reasons, out.lengths.tolist(), out.completion_ids.tolist()):
        assert length <= 4
        assert reason == ("stop" if row[length - 1] == EOS else "length")
        assert reason == "stop" or length == 4
    assert "length" in out.finish_reasons


def test_seed_determinism_and_chunk_invariance(tokenizer, qwen):
    prompts = encode(tokenizer, PROMPTS)
    params = SamplingParams(
        n=3, max_new_tokens=10, seed=11, stop_token_ids=[tokenizer.convert_tokens_to_ids("e")]
    )
    a = HFEngine(qwen, tokenizer).generate(prompts, params)
    for max_batch_size in (1, 5, 100):  # 1 prompt per chunk, 1 per chunk, all at once
        b = HFEngine(qwen, tokenizer, max_batch_size=max_batch_size).generate(prompts, params)
        assert torch.equal(a.completion_ids, b.completion_ids) and a.finish_reasons == b.finish_reasons
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)

    c = HFEngine(qwen, tokenizer).generate(prompts, SamplingParams(n=3, max_new_tokens=10, seed=12))
    assert c.texts != a.texts

    # seed=None continues the engine's generator: calls differ, but a fresh engine replays them.
    e1, e2 = HFEngine(qwen, tokenizer, seed=5), HFEngine(qwen, tokenizer, seed=5)
    free = SamplingParams(n=2, max_new_tokens=8)
    first, second = e1.generate(prompts, free), e1.generate(prompts, free)
    assert first.texts != second.texts
    assert e2.generate(prompts, free).texts == first.texts


def test_top_k_1_and_tiny_top_p_equal_greedy(tokenizer, qwen):
    engine = HFEngine(qwen, tokenizer)
    prompts = encode(tokenizer, PROMPTS)
    greedy = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8))
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        out = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=1, **kw))
        assert out.completion_ids.tolist() == greedy.completion_ids.repeat_interleave(2, 0).tolist()
        # the truncated distribution keeps one token: it is drawn with probability 1 (log-prob 0)
        assert (out.logprobs[out.completion_mask] == 0).all()


def test_finished_rows_leave_the_decode_batch_and_prompt_is_shared(tokenizer, qwen):
    prompts = encode(tokenizer, PROMPTS)
    stop_ids = tokenizer.convert_tokens_to_ids(list("abcdefghij"))  # ~1/4 of the vocabulary
    params = SamplingParams(n=4, max_new_tokens=16, seed=0, stop_token_ids=stop_ids)
    qwen.train()
    shapes, training, handle = record_forwards(qwen)
    try:
        # fast_decode=False: every decode step is a model forward that the hook sees (test_lean.py checks
        # that the fast path drops the same rows).
        out = HFEngine(qwen, tokenizer, fast_decode=False).generate(prompts, params)
    finally:
        handle.remove()
    assert qwen.training, "the engine must restore train mode"
    assert not any(training), "generation must run in eval mode"

    # Prompt forward once, with P rows (not P * n); every later forward decodes one token.
    assert shapes[0] == (len(prompts), max(map(len, prompts)))
    assert all(seq == 1 for _, seq in shapes[1:])
    decode_sizes = [b for b, _ in shapes[1:]]
    assert decode_sizes == expected_decode_sizes(out.lengths.tolist())
    running = [sum(length > t + 1 for length in out.lengths.tolist()) for t in range(len(decode_sizes))]
    assert running[-1] < running[0] < len(prompts) * 4, "precondition: rows finish at different times"
    assert decode_sizes[-1] < decode_sizes[0], "finished rows must leave the batch"
    # carried finished rows never exceed the drop policy's bound
    for size, run in zip(decode_sizes, running):
        assert size - run < max(1, DROP_FRACTION * size) or size - run <= MAX_IDLE_STEPS


def expected_decode_sizes(lengths: list[int]) -> list[int]:
    """Batch size of each decode forward under the engine's documented drop policy (a plain re-statement).

    Decode forward t feeds token t; a row of length L finished at step L - 1. Finished rows are dropped
    before a forward once they are DROP_FRACTION of the batch or the oldest has waited MAX_IDLE_STEPS steps.
    """
    batch, finished, sizes = list(lengths), [], []
    for t in range(max(lengths) - 1):
        finished += [t for length in batch if length == t + 1]
        if finished and (len(finished) >= DROP_FRACTION * len(batch) or t - min(finished) >= MAX_IDLE_STEPS):
            batch, finished = [length for length in batch if length > t + 1], []
        sizes.append(len(batch))
    return sizes


def test_buffered_cache_layer_matches_concatenation():
    from transformers.cache_utils import DynamicLayer

    buffered = _new_cache(Qwen2Config(num_hidden_layers=1), capacity=9).layers[0]
    plain = DynamicLayer()
    assert type(buffered) is not DynamicLayer, "the growing-buffer layer should be in use"
    gen = torch.Generator().manual_seed(0)
    steps = [
        (2, 3),
        (2, 1),
        ("repeat", 3),
        (6, 1),
        ("select", torch.tensor([0, 2, 5])),
        (3, 1),
        (3, 1),
        (3, 2),
    ]
    for a, b in steps:
        if a == "repeat":
            buffered.batch_repeat_interleave(b), plain.batch_repeat_interleave(b)
        elif a == "select":
            buffered.batch_select_indices(b), plain.batch_select_indices(b)
        else:
            k, v = torch.randn(a, 2, b, 4, generator=gen), torch.randn(a, 2, b, 4, generator=gen)
            out_b, out_p = buffered.update(k, v), plain.update(k, v)
            assert torch.equal(out_b[0], out_p[0]) and torch.equal(out_b[1], out_p[1])
        assert buffered.get_seq_length() == plain.get_seq_length()
        assert torch.equal(buffered.keys, plain.keys) and torch.equal(buffered.values, plain.values)


def test_max_batch_size_chunks_prompts(tokenizer, qwen):
    prompts = encode(tokenizer, PROMPTS)
    shapes, _, handle = record_forwards(qwen)
    try:
        HFEngine(qwen, tokenizer, max_batch_size=6).generate(prompts, SamplingParams(n=3, max_new_tokens=5))
    finally:
        handle.remove()
    prefill = [b for b, seq in shapes if seq > 1]
    assert prefill == [2, 2]  # 6 // 3 = 2 prompts per chunk
    assert max(b for b, _ in shapes) <= 6


def test_bad_params_raise_with_fix(tokenizer, qwen):
    engine = HFEngine(qwen, tokenizer)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate([[BOS]], SamplingParams(top_p=0.0))
    with pytest.raises(ValueError, match="BOS"):
        engine.generate([[]], SamplingParams())


def test_truncate_probs_hand_computed():
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])
    kept, idx = truncate_probs(probs, top_k=2)
    assert idx.tolist() == [[1, 3]] and torch.allclose(kept, torch.tensor([[0.4, 0.3]]))
    # top-p 0.6 keeps 0.4 (mass before: 0) and 0.3 (mass before 0.4 < 0.6), drops 0.2 (0.7 >= 0.6)
    kept, idx = truncate_probs(probs, top_p=0.6)
    assert idx.tolist() == [[1, 3, 2, 0]] and torch.allclose(kept, torch.tensor([[0.4, 0.3, 0.0, 0.0]]))
    # top-p after top-k is relative to the kept mass: of (0.4, 0.3), 0.5 of 0.7 is reached by 0.4 alone
    kept, _ = truncate_probs(probs, top_k=2, top_p=0.5)
    assert torch.allclose(kept, torch.tensor([[0.4, 0.0]]))
    kept, idx = truncate_probs(probs)
    assert idx is None and kept is probs


def test_inverse_cdf_sampling_matches_distribution():
    weights = torch.tensor([[0.5, 0.0, 0.2, 0.3]]).expand(40000, 4)
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx = inverse_cdf_sample(weights, u)
    freq = torch.bincount(idx, minlength=4).float() / len(idx)
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.0, 0.2, 0.3]), atol=0.01, rtol=0)
    assert (idx != 1).all()  # zero weight is never drawn, even at u = 0
    assert inverse_cdf_sample(weights[:1], torch.tensor([0.0])).item() == 0


def test_sample_tokens_greedy_and_logprob_after_truncation():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    tok, lp = sample_tokens(logits, torch.tensor([0.99]), temperature=2.0, top_k=2)
    assert tok.item() == 2  # u near 1 picks the second of the two kept tokens
    p = torch.softmax(logits / 2.0, -1)[0]
    torch.testing.assert_close(lp, (p[2] / (p[1] + p[2])).log().view(1))  # the truncated distribution's
    tok, lp = sample_tokens(logits, torch.tensor([0.3]), temperature=2.0)  # no truncation: the full one
    torch.testing.assert_close(lp, torch.log_softmax(logits / 2.0, -1)[0, tok])
    tok, lp = sample_tokens(logits, None, temperature=0.0)
    assert tok.item() == 1
    torch.testing.assert_close(lp, torch.log_softmax(logits, -1)[:, 1])


def test_sampling_docstring_examples_run():
    assert doctest.testmod(sampling_mod).failed == 0
