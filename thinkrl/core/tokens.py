"""Prompt tokenising: the one rule for the tokenizer's special tokens, and the length check.

A chat template already writes the model's special tokens (BOS, role markers), and so does a prompt that was
rendered before (it starts with the BOS text); any other text gets what the tokenizer adds by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def adds_special_tokens(tokenizer: Any, text: str, template: str) -> bool:
    """Whether ``tokenizer`` should add its special tokens to a prompt rendered with ``template``.

    >>> from thinkrl.testing import char_tokenizer
    >>> tok = char_tokenizer()
    >>> adds_special_tokens(tok, "1+1=", "r1"), adds_special_tokens(tok, "1+1=", "chat")
    (True, False)
    >>> adds_special_tokens(tok, "<bos>1+1=", "none")  # already rendered: its BOS is there
    False
    """
    bos = getattr(tokenizer, "bos_token", None)
    return template != "chat" and not (bos and text.startswith(bos))


def prompt_token_ids(
    tokenizer: Any, prompts: Sequence[str], template: str, limit: int | None = None
) -> list[list[int]]:
    """Token ids of rendered prompts; a prompt over ``limit`` tokens is an error naming the row, never cut.

    >>> from thinkrl.testing import char_tokenizer
    >>> prompt_token_ids(char_tokenizer(), ["ab"], "plain")
    [[3, 4]]
    >>> prompt_token_ids(char_tokenizer(), ["abc"], "plain", limit=2)
    Traceback (most recent call last):
    ...
    ValueError: prompt of row 0 has 3 tokens > data.max_prompt_tokens=2; raise the limit or drop long rows from the dataset (prompts are never cut silently)
    """
    ids = [
        tokenizer(p, add_special_tokens=adds_special_tokens(tokenizer, p, template))["input_ids"]
        for p in prompts
    ]
    for i, p in enumerate(ids):
        if limit is not None and len(p) > limit:
            raise ValueError(
                f"prompt of row {i} has {len(p)} tokens > data.max_prompt_tokens={limit}; raise the limit "
                "or drop long rows from the dataset (prompts are never cut silently)"
            )
    return ids


class LengthError(ValueError):
    """Sequences would need more positions than a model with absolute position embeddings has."""


def position_limit(model: Any) -> tuple[int | None, bool]:
    """(positions the model was built for, whether they are absolute embeddings) from its config: absolute
    when a position embedding table of that size exists (GPT-2's ``wpe``), else relative (RoPE, ALiBi).

    >>> from thinkrl.testing import tiny_model
    >>> position_limit(tiny_model("gpt2", 16)), position_limit(tiny_model("llama", 16, max_positions=64))
    ((1024, True), (64, False))
    """
    config = getattr(model, "config", None)
    limit = None
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            limit = value
            break
    if limit is None or not hasattr(model, "named_modules"):
        return limit, False
    import torch

    absolute = any(
        isinstance(m, torch.nn.Embedding) and m.num_embeddings == limit and ("pos" in n or n.endswith("wpe"))
        for n, m in model.named_modules()
    )
    return limit, absolute


def check_positions(model: Any, longest: int, new_tokens: int, knob: str, item: str = "prompt") -> None:
    """Check at start that the longest ``item`` (``longest`` tokens) plus ``new_tokens`` (the setting ``knob``)
    fits the model's positions: a :class:`LengthError` for absolute position embeddings (generation would
    crash mid-run with an index error), a warning for relative ones (RoPE degrades past its training length).

    >>> from thinkrl.testing import tiny_model
    >>> check_positions(tiny_model("gpt2", 16), 1000, 100, "max_new_tokens")
    Traceback (most recent call last):
    ...
    thinkrl.core.tokens.LengthError: the longest prompt (1000 tokens) + max_new_tokens=100 needs 1100 positions, but GPT2LMHeadModel has absolute position embeddings for 1024 only (generation would fail with an index error past them); lower max_new_tokens to at most 24, or drop the longest prompts
    """
    from thinkrl.core.notes import warn

    limit, absolute = position_limit(model)
    need = longest + new_tokens
    if limit is None or need <= limit:
        return
    what = f"the longest {item} ({longest} tokens)" + (f" + {knob}={new_tokens}" if new_tokens else "")
    fix = f"lower {knob} to at most {max(limit - longest, 0)}" if new_tokens else f"lower {knob} to {limit}"
    name = type(model).__name__
    if absolute:
        raise LengthError(
            f"{what} needs {need} positions, but {name} has absolute position embeddings for {limit} only "
            f"(generation would fail with an index error past them); {fix}, or drop the longest {item}s"
        )
    warn(
        f"{what} needs {need} positions, more than the {limit} {name} was trained for (max_position_embeddings); "
        f"rotary positions past that usually degrade the output. {fix}, or drop the longest {item}s"
    )
