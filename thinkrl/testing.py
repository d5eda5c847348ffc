"""Tiny local models and tokenizers for tests and benchmarks: real architectures, built from configs, no downloads.

>>> tok = char_tokenizer()
>>> tok.decode(tok("ab1")["input_ids"])
'ab1'
>>> model = tiny_model("qwen2", len(tok))
>>> sum(p.numel() for p in model.parameters()) < 100_000
True
"""

from __future__ import annotations

import torch

DEFAULT_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 +-*=<>/.,:?!()"
SPECIAL = ("<pad>", "<eos>", "<bos>")
ARCHITECTURES = ("llama", "qwen2", "gpt2")


def char_tokenizer(chars: str = DEFAULT_CHARS, extra_tokens: tuple[str, ...] = ()):
    """A character-level ``PreTrainedTokenizerFast``: ids 0/1/2 are pad/eos/bos, then ``extra_tokens`` (each a
    single token, e.g. ``"<think>"``), then one token per character."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for t in (*extra_tokens, *chars):
        vocab.setdefault(t, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>"
    )
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))  # match them whole, before the per-character split
    return tok


def tiny_model(
    arch: str,
    vocab_size: int,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    max_positions: int = 2048,
) -> torch.nn.Module:
    """A small ``llama``, ``qwen2`` or ``gpt2`` causal LM with ids pad=0, eos=1, bos=2."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    ids = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
    if arch == "gpt2":
        return GPT2LMHeadModel(
            GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, **ids)
        )
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1), tie_word_embeddings=True, max_position_embeddings=max_positions,
        **ids,
    )  # fmt: skip
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
