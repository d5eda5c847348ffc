"""The rollout interface every generation engine implements.

An engine turns prompt token ids into ``n`` sampled completions per prompt and returns, per completion,
the token ids, the sampler's log-probabilities, a mask and why it stopped. The trainer never looks inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass
class SamplingParams:
    """How to sample. Defaults are the R1 paper's rollout settings (temperature 1.0, no truncation)."""

    n: int = 1
    """Completions per prompt (the group size G during RL)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 disables it."""
    max_new_tokens: int = 256
    """Hard cap on completion length; a completion that hits it finishes with reason "length"."""
    stop_strings: list[str] = field(default_factory=list)
    """Generation of a completion stops right after the first token whose text completes one of these."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Extra stop tokens; the tokenizer's EOS is always a stop token."""
    seed: int | None = None
    """Seed for this call's sampling; None continues the engine's own generator."""
    first_row: int = 0
    """Index of this call's first row within the logical batch, so data-parallel ranks draw the rows one
    process would: row i of the call uses the random numbers of row ``first_row + i`` (needs ``seed``)."""


@dataclass
class Rollout:
    """The completions of one ``generate`` call, flattened to N = len(prompts) * n rows.

    Tensors are on the engine's device (the model's); the trainer moves them to CPU with ``.to("cpu")``.

    Row order: all n completions of prompt 0, then of prompt 1, ... (``group_ids`` says it explicitly).
    """

    prompt_ids: list[list[int]]
    """(P,) the prompts as given, unpadded."""
    group_ids: torch.Tensor
    """(N,) long: the index of each completion's prompt in ``prompt_ids``."""
    completion_ids: torch.Tensor
    """(N, T) long: completion tokens, right-padded with the pad id; T = longest completion."""
    completion_mask: torch.Tensor
    """(N, T) bool: True on real completion tokens (the stop token included)."""
    logprobs: torch.Tensor
    """(N, T) float32: log-prob of each sampled token under the sampling distribution
    log_softmax(logits / temperature) (before top-p/top-k truncation, as the trainer computes it); 0 on padding."""
    finish_reasons: list[str]
    """(N,) "stop" (EOS, stop token or stop string) or "length" (hit max_new_tokens)."""
    texts: list[str]
    """(N,) decoded completions, special tokens skipped."""

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with its tensors on ``device`` (engines return them on the model's device)."""
        return Rollout(
            prompt_ids=self.prompt_ids,
            group_ids=self.group_ids.to(device),
            completion_ids=self.completion_ids.to(device),
            completion_mask=self.completion_mask.to(device),
            logprobs=self.logprobs.to(device),
            finish_reasons=self.finish_reasons,
            texts=self.texts,
        )

    @property
    def lengths(self) -> torch.Tensor:
        """(N,) long: number of real tokens per completion."""
        return self.completion_mask.sum(-1)


class RolloutEngine(Protocol):
    """What the trainer and the evaluator need from a generation engine."""

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout:
        """Sample ``params.n`` completions for each prompt."""
        ...

    def sync_weights(self) -> None:
        """Make the engine sample from the trainer's current weights (a no-op when they share the model)."""
        ...


def _as_ids(value: int | list[int] | None) -> set[int]:
    """A token id, a list of them or None, as a set."""
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, list | tuple) else {int(value)}


def stop_and_pad_ids(tokenizer: Any, model: Any) -> tuple[set[int], int]:
    """The ids that end a completion and the pad id, shared by every engine.

    The tokenizer's EOS and the model's generation EOS (chat models often have several) all stop; the pad id
    is the tokenizer's, else the smallest EOS id.
    """
    gen_cfg = getattr(model, "generation_config", None)
    eos = _as_ids(tokenizer.eos_token_id) | _as_ids(getattr(gen_cfg, "eos_token_id", None))
    if not eos:
        raise ValueError("the tokenizer has no eos_token_id; set one so completions can stop")
    return eos, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)


def check_params(params: SamplingParams, prompt_ids: list[list[int]]) -> None:
    """Reject settings the engine cannot honour, with the fix in the message."""
    if params.n < 1:
        raise ValueError(f"SamplingParams.n must be >= 1, got {params.n}")
    if params.temperature < 0:
        raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {params.top_p}; use 1.0 to disable")
    if params.top_k < 0:
        raise ValueError(f"SamplingParams.top_k must be >= 0, got {params.top_k}; use 0 to disable")
    if params.max_new_tokens < 1:
        raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if any(len(p) == 0 for p in prompt_ids):
        raise ValueError("every prompt needs at least one token (prepend the BOS token to empty prompts)")
