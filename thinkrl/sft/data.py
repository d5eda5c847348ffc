"""SFT data: rows -> token ids with a loss mask -> micro-batches (packed, length-grouped or padded).

A prompt/response row becomes ``tokens(prompt) + tokens(response) + [EOS]``, tokenized in two pieces exactly as
the engine sees them at generation time (prompt alone, then generated tokens); the loss mask is True on the
response and the EOS only. A ``messages`` row is rendered with the tokenizer's chat template, turn by turn, and
every assistant turn (with its end-of-turn tokens) is trained on.

Packing puts several samples in one row. Position ids restart at 0 for each sample and a block-diagonal causal
4D mask keeps attention inside each sample, so a packed row computes exactly what its samples compute alone
(tests/test_sft.py checks the logits). The mask is additive float (0 / dtype-min): transformers 5.x passes a 4D
mask through untouched, and eager attention *adds* it to the scores, so a boolean mask would silently leak
there (it only works with sdpa). With ``flash_attention_2`` no mask is built: transformers derives the
variable-length boundaries from the restarting position ids.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from thinkrl.core import adds_special_tokens
from thinkrl.data.datasets import DataError, read_rows
from thinkrl.data.templates import render_prompt
from thinkrl.sft.config import SFTDataConfig

OPEN_ROWS = 64
"""First-fit packing looks for room in the last this-many rows (keeps packing linear in the dataset size)."""
GROUP_WINDOW = 64
"""Length-grouped batching sorts windows of this many micro-batches' worth of samples."""


@dataclass
class SFTExample:
    """One tokenized sample."""

    input_ids: list[int]
    """(L,) prompt, response and EOS token ids."""
    loss_mask: list[bool]
    """(L,) True on tokens the model is trained to predict (response + EOS, or assistant turns)."""

    def __len__(self) -> int:
        return len(self.input_ids)


# --------------------------------------------------------------------------------------------- rows -> ids
def load_sft_rows(spec: str, split: str = "train", max_rows: int | None = None) -> list[dict[str, Any]]:
    """Raw rows of an SFT dataset (any form :func:`thinkrl.data.datasets.read_rows` reads)."""
    rows = read_rows(spec, split)
    if not rows:
        raise DataError(f"SFT dataset {spec!r} has no rows")
    return rows[:max_rows] if max_rows is not None else rows


def row_format(row: dict[str, Any], cfg: SFTDataConfig) -> str:
    """``messages`` or ``prompt_response`` for this row (``cfg.format=auto`` looks at the columns)."""
    if cfg.format != "auto":
        return cfg.format
    return "messages" if cfg.messages_key in row else "prompt_response"


def tokenize_row(row: dict[str, Any], tokenizer: Any, cfg: SFTDataConfig) -> SFTExample:
    """One row -> :class:`SFTExample`.

    >>> from thinkrl.testing import char_tokenizer
    >>> ex = tokenize_row({"prompt": "1+1=", "response": "2"}, char_tokenizer(), SFTDataConfig())
    >>> ex.input_ids[-2:], ex.loss_mask   # "2" then EOS (id 1) are the only trained tokens
    ([31, 1], [False, False, False, False, True, True])
    """
    if row_format(row, cfg) == "messages":
        return _tokenize_messages(row, tokenizer, cfg)
    for key, role in ((cfg.prompt_key, "data.prompt_key"), (cfg.response_key, "data.response_key")):
        if key not in row:
            raise DataError(f"SFT row has no column {key!r} ({role}); its columns are: {', '.join(row)}")
    text = str(row[cfg.prompt_key])
    if cfg.template != "none":
        text = render_prompt(cfg.template, text, tokenizer, cfg.system_prompt)
    prompt = tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer, text, cfg.template))[
        "input_ids"
    ]
    response = tokenizer(str(row[cfg.response_key]), add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is None:
        raise DataError(
            "the tokenizer has no eos_token; SFT appends it to every response so the model learns to stop"
        )
    response = [*response, tokenizer.eos_token_id]
    return SFTExample(prompt + response, [False] * len(prompt) + [True] * len(response))


def _tokenize_messages(row: dict[str, Any], tokenizer: Any, cfg: SFTDataConfig) -> SFTExample:
    msgs = row.get(cfg.messages_key)
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"SFT row has no message list in {cfg.messages_key!r} (data.messages_key)")
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError("messages rows need a tokenizer with a chat template; this one has none")

    def render(m: list[dict], gen: bool) -> str:
        return tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)

    full = render(msgs, False)
    spans = []  # (start, end) character spans of assistant turns in ``full``
    for i, m in enumerate(msgs):
        if m.get("role") != "assistant":
            continue
        before, upto = render(msgs[:i], True), render(msgs[: i + 1], False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise DataError(
                "this chat template renders a conversation differently from its prefixes (e.g. it drops earlier "
                "turns' reasoning), so assistant turns cannot be located; use prompt/response rows instead"
            )
        spans.append((len(before), len(upto)))
    if not spans:
        raise DataError("a messages row has no assistant turn; there is nothing to train on")
    ids: list[int] = []
    mask: list[bool] = []
    cursor = 0
    for start, end in [*spans, (len(full), len(full))]:
        for piece, train in ((full[cursor:start], False), (full[start:end], True)):
            if piece:
                tok = tokenizer(piece, add_special_tokens=False)["input_ids"]
                ids += tok
                mask += [train] * len(tok)
        cursor = end
    return SFTExample(ids, mask)


def build_examples(
    rows: list[dict[str, Any]], tokenizer: Any, cfg: SFTDataConfig, max_seq_len: int
) -> tuple[list[SFTExample], int]:
    """Tokenize every row; samples longer than ``max_seq_len`` are dropped (returned count), never cut."""
    examples, dropped = [], 0
    for i, row in enumerate(rows):
        try:
            ex = tokenize_row(row, tokenizer, cfg)
        except DataError as e:
            raise DataError(f"SFT row {i}: {e}") from None
        if len(ex) > max_seq_len:
            dropped += 1
            continue
        examples.append(ex)
    if not examples:
        raise DataError(f"every SFT row is longer than train.max_seq_len={max_seq_len} tokens; raise it")
    return examples, dropped


# ------------------------------------------------------------------------------------- batching plans
def pack(lengths: list[int], order: list[int], max_len: int) -> list[list[int]]:
    """First-fit packing of samples (in ``order``) into rows of at most ``max_len`` tokens.

    >>> pack([3, 3, 2, 4], [0, 1, 2, 3], 6)
    [[0, 1], [2, 3]]
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        first = len(rows) - min(len(rows), OPEN_ROWS)
        target = next((r for r in range(first, len(rows)) if room[r] >= lengths[i]), None)
        if target is None:
            rows.append([])
            room.append(max_len)
            target = len(rows) - 1
        rows[target].append(i)
        room[target] -= lengths[i]
    return rows


def plan_epoch(
    lengths: list[int], batching: str, micro_batch_size: int, max_len: int, seed: int
) -> list[list[list[int]]]:
    """The micro-batches of one epoch: each a list of rows, each row a list of sample indices.

    Deterministic in ``seed`` (the trainer passes one per epoch), so a resumed run rebuilds the same plan.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if batching == "packed":
        rows = pack(lengths, order, max_len)
        rng.shuffle(rows)  # first-fit fills early rows with the short samples of later ones; mix them back
    elif batching == "grouped":  # HF's LengthGroupedSampler: sort within windows, then shuffle the batches
        window = micro_batch_size * GROUP_WINDOW
        order = [
            i
            for s in range(0, len(order), window)
            for i in sorted(order[s : s + window], key=lambda i: -lengths[i])
        ]
        rows = [[i] for i in order]
    else:
        rows = [[i] for i in order]
    batches = [rows[s : s + micro_batch_size] for s in range(0, len(rows), micro_batch_size)]
    if batching == "grouped":
        rng.shuffle(batches)
    return batches


def steps_in(num_micro_batches: int, grad_accum_steps: int) -> int:
    return math.ceil(num_micro_batches / grad_accum_steps)


# ------------------------------------------------------------------------------------------ collation
def collate(
    examples: list[SFTExample],
    rows: list[list[int]],
    pad_id: int,
    *,
    dtype: torch.dtype = torch.float32,
    mask_kind: str = "4d",
) -> dict[str, torch.Tensor]:
    """Tensors for one micro-batch of B rows, T = longest row.

    Returns ``input_ids`` (B, T) long, ``position_ids`` (B, T) long (restarting per sample), ``loss_mask``
    (B, T) bool (True where token t is a target predicted from t-1 of the same sample; never a sample's first
    token, so nothing is learnt across a sample border), and ``attention_mask``: (B, 1, T, T) additive
    ``dtype`` (0 = attend) for ``mask_kind="4d"``, (B, T) long for ``"2d"`` (one sample per row), or absent
    for ``"none"`` (flash attention reads the boundaries from the position ids).
    """
    lens = [sum(len(examples[i]) for i in row) for row in rows]
    b, t = len(rows), max(lens)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    position_ids = torch.zeros(b, t, dtype=torch.long)
    loss_mask = torch.zeros(b, t, dtype=torch.bool)
    # sample id of each token; padding gets unique negative ids so it attends only to itself (no empty softmax)
    segment = -torch.arange(1, t + 1).repeat(b, 1)  # (B, T)
    for r, row in enumerate(rows):
        at = 0
        for s, i in enumerate(row):
            ex = examples[i]
            n = len(ex)
            input_ids[r, at : at + n] = torch.tensor(ex.input_ids)
            position_ids[r, at : at + n] = torch.arange(n)
            loss_mask[r, at : at + n] = torch.tensor(ex.loss_mask)
            loss_mask[r, at] = False
            segment[r, at : at + n] = s
            at += n
    out = {"input_ids": input_ids, "position_ids": position_ids, "loss_mask": loss_mask}
    if mask_kind == "4d":
        causal = torch.ones(t, t, dtype=torch.bool).tril()  # (T, T)
        allowed = causal & (segment[:, :, None] == segment[:, None, :])  # (B, T, T)
        out["attention_mask"] = torch.zeros(b, 1, t, t, dtype=dtype).masked_fill(
            ~allowed[:, None], torch.finfo(dtype).min
        )
    elif mask_kind == "2d":
        if any(len(row) > 1 for row in rows):
            raise ValueError("a 2D attention mask cannot separate packed samples; use mask_kind='4d'")
        out["attention_mask"] = (torch.arange(t) < torch.tensor(lens)[:, None]).long()
    elif mask_kind != "none":
        raise ValueError(f"mask_kind={mask_kind!r}; valid: 4d, 2d, none")
    return out
