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
