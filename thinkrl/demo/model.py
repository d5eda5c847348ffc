"""The demo's tiny base model: a real ``LlamaForCausalLM`` of about one million parameters, built from a config."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def tiny_llama_config(tokenizer: PreTrainedTokenizerBase, **overrides) -> LlamaConfig:
    """The demo architecture: hidden 128, 4 layers, 4 heads, FFN 512, tied embeddings (1.06M parameters).

    The context (1024 positions) holds the R1-Zero prompt (~395 character tokens) plus a completion.
    ``overrides`` replace any ``LlamaConfig`` field, e.g. ``num_hidden_layers=2`` in tests.
    """
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def build_model(tokenizer: PreTrainedTokenizerBase, *, seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama; the same seed gives the same weights.

    >>> from thinkrl.demo.tokenizer import build_tokenizer
    >>> m = build_model(build_tokenizer())
    >>> sum(p.numel() for p in m.parameters())
    1063040
    """
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(tokenizer, **overrides)).float()
