"""Turn a rollout into training tensors, and score tokens under a model.

A training row is ``[left-padded prompt][right-padded completion]``, so every completion starts at the same
column ``Lp`` and the logits that predict it are the last ``T + 1`` positions but one: the lm-head is applied
to those positions only (``logits_to_keep``), never to the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thinkrl.algorithms import entropy_from_logits, token_logprobs
from thinkrl.rollout.base import Rollout


@dataclass
class TrainBatch:
    """N completions with their prompts, ready for forward passes. Slicing by rows gives micro-batches."""

    input_ids: torch.Tensor  # (N, Lp + T) long
    attention_mask: torch.Tensor  # (N, Lp + T) long
    completion_ids: torch.Tensor  # (N, T) long
    mask: torch.Tensor  # (N, T) float: 1 on completion tokens that carry loss
    advantages: torch.Tensor  # (N,) float
    sampler_logp: torch.Tensor  # (N, T) float: the engine's log-probs of the sampled tokens
    group_ids: torch.Tensor | None = None  # (N,) long: rows with the same id share one prompt
    old_logp: torch.Tensor | None = None  # (N, T) pi_old, set when the update is not on-policy
    ref_logp: torch.Tensor | None = None  # (N, T) reference policy, set when beta > 0

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, idx: torch.Tensor) -> TrainBatch:
        """A sub-batch of rows ``idx``, with columns that are padding in every chosen row cut off on both sides
        (short micro-batches then cost what they hold, not what the longest sample of the step held)."""
        t_all = self.completion_ids.shape[1]
        attn = self.attention_mask[idx]
        lens = attn[:, -t_all:].sum(1)
        t = max(int(lens.max()), 1)
        lead = int(
            attn[:, : attn.shape[1] - t_all].sum(0).ne(0).long().argmax()
        )  # first prompt column in use
        seq = slice(lead, attn.shape[1] - (t_all - t))

        def comp(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[idx][:, :t]

        return TrainBatch(
            input_ids=self.input_ids[idx][:, seq],
            attention_mask=attn[:, seq],
            completion_ids=comp(self.completion_ids),
            mask=comp(self.mask),
            advantages=self.advantages[idx],
            sampler_logp=comp(self.sampler_logp),
            group_ids=None if self.group_ids is None else self.group_ids[idx],
            old_logp=comp(self.old_logp),
            ref_logp=comp(self.ref_logp),
        )


def build_batch(
    rollout: Rollout, advantages: torch.Tensor, pad_id: int, loss_mask: torch.Tensor
) -> TrainBatch:
    """Pair each completion with its prompt. ``loss_mask`` (N, T) selects tokens that carry loss."""
    n, t = rollout.completion_ids.shape
    prompts = [rollout.prompt_ids[g] for g in rollout.group_ids.tolist()]
    lp = max(len(p) for p in prompts)
    prompt_ids = torch.full((n, lp), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, lp), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every completion starts at column lp
        prompt_ids[i, lp - len(p) :] = torch.tensor(p, dtype=torch.long)
        prompt_mask[i, lp - len(p) :] = 1
    completion_mask = rollout.completion_mask.long()
    completion_ids = rollout.completion_ids.masked_fill(~rollout.completion_mask, pad_id)
    return TrainBatch(
        input_ids=torch.cat([prompt_ids, completion_ids], 1),
        attention_mask=torch.cat([prompt_mask, completion_mask], 1),
        completion_ids=completion_ids,
        mask=loss_mask.float(),
        advantages=advantages.float(),
        sampler_logp=rollout.logprobs.float(),
        group_ids=rollout.group_ids.clone(),
    )


def forward_logprobs(
    model: torch.nn.Module,
    batch: TrainBatch,
    temperature: float,
    *,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    share_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, T) of the completion tokens under ``model`` at ``temperature``, and optionally the entropy
    (N, T), which keeps its graph only when ``entropy_grad`` (an entropy bonus in the loss).

    Positions come from the attention mask, so left padding does not shift them. With ``share_prompt``, each
    distinct prompt of the batch runs forward once and its KV cache is reused by all its completions (the same
    values and gradients as the plain path, tested; fewer FLOPs whenever a prompt has several completions).
    """
    if share_prompt and batch.group_ids is not None:
        logits = _shared_prompt_logits(model, batch)
    else:
        device = next(model.parameters()).device
        attention_mask = batch.attention_mask.to(device)
        out = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=attention_mask,
            position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
            logits_to_keep=batch.completion_ids.shape[1] + 1,
            use_cache=False,
        )
        logits = out.logits[:, :-1, :]  # (N, T, V): position j predicts completion token j
    logp = token_logprobs(logits, batch.completion_ids.to(logits.device), temperature)
    entropy = None
    if with_entropy or entropy_grad:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits, temperature=temperature)
    return logp, entropy


def _shared_prompt_logits(model: torch.nn.Module, batch: TrainBatch) -> torch.Tensor:
    """Logits (N, T, V) predicting each completion token, with one prompt forward per distinct prompt.

    1. The U distinct prompts (left-padded to Lp) run forward with a KV cache; the last position's logits
       predict completion token 0.
    2. The cache is indexed to the N rows (a differentiable gather: gradients of all G completions flow back
       into their prompt's single forward) and the completions run on top of it.
    """
    device = next(model.parameters()).device
    t = batch.completion_ids.shape[1]
    lp = batch.input_ids.shape[1] - t
    uniq, row_to_prompt = torch.unique(batch.group_ids, return_inverse=True)
    first = torch.zeros(len(uniq), dtype=torch.long).scatter_(
        0, row_to_prompt.flip(0), torch.arange(len(row_to_prompt) - 1, -1, -1)
    )  # a representative row of each prompt
    prompt_ids = batch.input_ids[first, :lp].to(device)  # (U, Lp)
    prompt_mask = batch.attention_mask[first, :lp].to(device)
    prompt_out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        logits_to_keep=1,
        use_cache=True,
    )
    cache = prompt_out.past_key_values
    rows = row_to_prompt.to(device)
    cache.batch_select_indices(rows)  # (U, ...) -> (N, ...): row i reads its prompt's keys and values
    full_mask = batch.attention_mask.to(device)  # (N, Lp + T)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, lp:]
    out = model(
        input_ids=batch.completion_ids.to(device),
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=True,
        **{_cache_kwarg(model): cache},
    )
    first_logits = prompt_out.logits[:, -1:, :][rows]  # (N, 1, V) predicts completion token 0
    return torch.cat([first_logits, out.logits[:, :-1, :]], dim=1)  # (N, T, V)


def _cache_kwarg(model: torch.nn.Module) -> str:
    # transformers 5.x renamed past_key_values -> cache; ask the signature, not the version
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper hides it
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
