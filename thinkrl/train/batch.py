"""Turn trajectories (or an engine's rollout) into training tensors, and score tokens under a model.

A training row is ``[left-padded prompt][right-padded completion]``, so every completion starts at the same
column ``Lp`` and the logits that predict it are the last ``T + 1`` positions but one: the lm-head is applied
to those positions only (``logits_to_keep``), never to the prompt; with the fused head it is applied to their
hidden states in tiles, so the (N, T, V) logits never exist at once (``thinkrl.algorithms.lm_head``).
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass

import torch

from thinkrl.algorithms import entropy_from_logits, lm_head_logprobs, token_logprobs, truncated_token_logprobs
from thinkrl.rollout.base import Rollout
from thinkrl.rollout.trajectories import Trajectories


@dataclass
class TrainBatch:
    """N completions with their prompts, ready for forward passes. Slicing by rows gives micro-batches."""

    input_ids: torch.Tensor  # (N, Lp + T) long
    attention_mask: torch.Tensor  # (N, Lp + T) long
    completion_ids: torch.Tensor  # (N, T) long
    mask: torch.Tensor  # (N, T) float: 1 on completion tokens that carry loss
    advantages: torch.Tensor  # (N,) float, or (N, T) per token (GAE with a critic)
    sampler_logp: torch.Tensor  # (N, T) float: the engine's log-probs of the sampled tokens
    group_ids: torch.Tensor | None = None  # (N,) long: rows with the same id share one prompt
    old_logp: torch.Tensor | None = None  # (N, T) pi_old, set when the update is not on-policy
    ref_logp: torch.Tensor | None = None  # (N, T) reference policy, set when beta > 0
    rewards: torch.Tensor | None = None  # (N,) float: each completion's total reward
    old_values: torch.Tensor | None = None  # (N, T) the critic's values when the rollout was scored
    returns: torch.Tensor | None = None  # (N, T) the critic's targets (GAE advantages + old values)

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

        def row(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[idx]

        return TrainBatch(
            input_ids=self.input_ids[idx][:, seq],
            attention_mask=attn[:, seq],
            completion_ids=comp(self.completion_ids),
            mask=comp(self.mask),
            advantages=row(self.advantages) if self.advantages.dim() == 1 else comp(self.advantages),
            sampler_logp=comp(self.sampler_logp),
            group_ids=row(self.group_ids),
            old_logp=comp(self.old_logp),
            ref_logp=comp(self.ref_logp),
            rewards=row(self.rewards),
            old_values=comp(self.old_values),
            returns=comp(self.returns),
        )

    def row_advantages(self) -> torch.Tensor:
        """(N,) one advantage per completion: per-token advantages averaged over the row's loss tokens."""
        if self.advantages.dim() == 1:
            return self.advantages
        return (self.advantages * self.mask).sum(-1) / self.mask.sum(-1).clamp(min=1)


def build_batch(
    rollout: Rollout, advantages: torch.Tensor, pad_id: int, loss_mask: torch.Tensor
) -> TrainBatch:
    """Pair each completion of an engine's ``rollout`` with its prompt. ``loss_mask`` (N, T) selects tokens
    that carry loss."""
    return _pair(
        [rollout.prompt_ids[g] for g in rollout.group_ids.tolist()], rollout.completion_ids,
        rollout.completion_mask, loss_mask, rollout.logprobs, rollout.group_ids, advantages, pad_id,
    )  # fmt: skip


def batch_from_trajectories(traj: Trajectories, advantages: torch.Tensor, pad_id: int) -> TrainBatch:
    """The collector's trajectories with their advantages (N,), ready for forward passes."""
    batch = _pair(
        traj.prompt_ids, traj.completion_ids, traj.attention_mask, traj.loss_mask, traj.sampler_logp,
        traj.group_ids, advantages, pad_id,
    )  # fmt: skip
    batch.rewards = traj.rewards.float()
    return batch


def _pair(
    prompts: list[list[int]],
    completion_ids: torch.Tensor,
    attention: torch.Tensor,
    loss_mask: torch.Tensor,
    sampler_logp: torch.Tensor,
    group_ids: torch.Tensor,
    advantages: torch.Tensor,
    pad_id: int,
) -> TrainBatch:
    n = completion_ids.shape[0]
    lp = max(len(p) for p in prompts)
    prompt_ids = torch.full((n, lp), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((n, lp), dtype=torch.long)
    for i, p in enumerate(prompts):  # left padding: every completion starts at column lp
        prompt_ids[i, lp - len(p) :] = torch.tensor(p, dtype=torch.long)
        prompt_mask[i, lp - len(p) :] = 1
    completion_ids = completion_ids.masked_fill(~attention, pad_id)
    return TrainBatch(
        input_ids=torch.cat([prompt_ids, completion_ids], 1),
        attention_mask=torch.cat([prompt_mask, attention.long()], 1),
        completion_ids=completion_ids,
        mask=loss_mask.float(),
        advantages=advantages.float(),
        sampler_logp=sampler_logp.float(),
        group_ids=group_ids.clone(),
    )


def forward_logprobs(
    model: torch.nn.Module,
    batch: TrainBatch,
    temperature: float,
    *,
    with_entropy: bool = False,
    entropy_grad: bool = False,
    share_prompt: bool = False,
    fused_head: bool = False,
    autocast: str = "none",
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N, T) of the completion tokens under ``model`` at ``temperature``, and optionally the entropy
    (N, T), which keeps its graph only when ``entropy_grad`` (an entropy bonus in the loss).

    Positions come from the attention mask, so left padding does not shift them. With ``share_prompt``, each
    distinct prompt of the batch runs forward once and its KV cache is reused by all its completions. With
    ``fused_head``, the backbone's hidden states go through the LM head in tiles (``lm_head_logprobs``), so
    no (N, T, V) logits tensor exists; models whose head is not a plain linear layer (see
    :func:`split_lm_head`) take the logits path. All four paths give the same values and gradients (tested).
    ``autocast="bf16"`` runs the forward under ``torch.autocast`` in bfloat16 (log-probs still float32).
    ``top_k`` > 0 or ``top_p`` < 1: the log-probs are those of the truncated distribution the sampler drew
    from (``truncated_token_logprobs``; the logits path); the entropy stays the full distribution's.
    """
    logp, entropy, _ = _forward(
        model, batch, temperature, with_entropy or entropy_grad, entropy_grad, share_prompt,
        fused_head and not _truncating(top_k, top_p), autocast, top_k, top_p, None,
    )  # fmt: skip
    return logp, entropy


def forward_with_values(
    model: torch.nn.Module,
    value_head: torch.nn.Module,
    batch: TrainBatch,
    temperature: float,
    *,
    entropy_grad: bool = False,
    share_prompt: bool = False,
    autocast: str = "none",
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`forward_logprobs` with the entropy, plus ``value_head`` applied to the same forward's last
    hidden states: values (N, T) float32 of the states before each completion token (a critic's head on the
    policy's trunk, one forward for both). Needs a model whose logits are ``lm_head(hidden)``
    (:func:`split_lm_head`); raises ``ValueError`` otherwise."""
    return _forward(
        model, batch, temperature, True, entropy_grad, share_prompt, True, autocast, top_k, top_p, value_head
    )


def hidden_states(body: torch.nn.Module, batch: TrainBatch, *, share_prompt: bool = False) -> torch.Tensor:
    """(N, T, D) last hidden states of a backbone (a model without its LM head) at the positions before each
    completion token, i.e. the states whose logits predict it (a separate critic's input)."""
    if share_prompt and batch.group_ids is not None:
        return _shared_prompt_states(body, batch, logits=False)
    return _plain_states(body, batch, logits=False)


def _truncating(top_k: int, top_p: float) -> bool:
    return top_k > 0 or top_p < 1.0


def _forward(
    model: torch.nn.Module,
    batch: TrainBatch,
    temperature: float,
    want_entropy: bool,
    entropy_grad: bool,
    share_prompt: bool,
    fused_head: bool,
    autocast: str,
    top_k: int,
    top_p: float,
    value_head: torch.nn.Module | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    parts = split_lm_head(model) if fused_head else None
    if value_head is not None and parts is None:
        raise ValueError(
            f"critic.model=head needs the policy's logits to be lm_head(last hidden state); {type(model).__name__}"
            " is not such a model (softcapping, logit scaling, LoRA on the head, FSDP): set critic.model=policy "
            "(a separate critic)"
        )
    body = model if parts is None else parts[0]
    values = None
    with autocast_context(next(model.parameters()).device, autocast):
        if share_prompt and batch.group_ids is not None:
            states = _shared_prompt_states(body, batch, logits=parts is None)
        else:
            states = _plain_states(body, batch, logits=parts is None)  # (N, T, V) logits or (N, T, D) states
        if value_head is not None:
            values = value_head(states).squeeze(-1).float()  # (N, T)
            if _truncating(top_k, top_p):  # the truncated log-probs take the logits path
                states, parts = parts[1](states), None
        logp, entropy = _logprobs_from_states(
            states, parts, batch, temperature, want_entropy, entropy_grad, top_k, top_p
        )
    return logp, entropy, values


def autocast_context(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in bfloat16 for ``mode="bf16"`` (warns once on CPU, where it is usually slower),
    a no-op for ``"none"``."""
    if mode == "none":
        return contextlib.nullcontext()
    if mode != "bf16":
        raise ValueError(f"autocast={mode!r}; valid: none, bf16")
    if device.type == "cpu":
        warnings.warn(
            "train.autocast=bf16 on CPU: correct but usually slower than float32 unless the CPU has native "
            "bf16 (AVX512-BF16/AMX); set train.autocast=none on CPU",
            stacklevel=3,
        )
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _logprobs_from_states(
    states: torch.Tensor,
    parts: tuple[torch.nn.Module, torch.nn.Linear] | None,
    batch: TrainBatch,
    temperature: float,
    want_entropy: bool,
    entropy_grad: bool,
    top_k: int = 0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropy) from (N, T, V) logits (``parts`` None) or (N, T, D) hidden states and the head;
    truncated (top-k / top-p) only on the logits path."""
    tokens = batch.completion_ids.to(states.device)
    if parts is not None:
        head = parts[1]
        logp, entropy = lm_head_logprobs(states, head.weight, tokens, temperature, bias=head.bias)
        keep_graph = entropy_grad and torch.is_grad_enabled()
        return logp, (entropy if keep_graph else entropy.detach()) if want_entropy else None
    if _truncating(top_k, top_p):
        logp = truncated_token_logprobs(states, tokens, temperature, top_k=top_k, top_p=top_p)[0]
    else:
        logp = token_logprobs(states, tokens, temperature)
    entropy = None
    if want_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(states, temperature=temperature)
    return logp, entropy


def split_lm_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """(backbone, head) of a causal LM whose logits are exactly ``head(backbone(...).last_hidden_state)``,
    else None (then callers use the model's own logits).

    Checked, not assumed: the head must be a plain ``nn.Linear`` with local (not FSDP-sharded) weights, and one
    3-token forward must give the model's logits (this rejects heads with softcapping or logit scaling, e.g.
    Gemma-2, Cohere, Granite). The verdict is cached per model object.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap PEFT
    cached = _HEAD_SPLITS.get(inner)
    if cached is not None:
        return cached or None
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    backbone = getattr(inner, "base_model", None)
    ok = (
        type(head) is torch.nn.Linear
        and backbone is not None
        and backbone is not inner
        and type(head.weight.data) is torch.Tensor  # an FSDP DTensor is unsharded only inside the module
    )
    if ok:
        device = head.weight.device
        ids = (torch.arange(1, 4, device=device) % head.out_features)[None]  # not pad: its embedding may be 0
        with torch.no_grad():
            want = inner(input_ids=ids, use_cache=False).logits
            got = head(backbone(input_ids=ids, use_cache=False).last_hidden_state)
        ok = want.shape == got.shape and torch.allclose(want.float(), got.float(), rtol=1e-4, atol=1e-4)
    _HEAD_SPLITS[inner] = (backbone, head) if ok else ()
    return (backbone, head) if ok else None


_HEAD_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plain_states(body: torch.nn.Module, batch: TrainBatch, *, logits: bool) -> torch.Tensor:
    """(N, T, V) logits (``logits``: ``body`` is the full model) or (N, T, D) last hidden states (``body`` is
    the backbone) at the positions that predict the completion tokens."""
    device = next(body.parameters()).device
    t = batch.completion_ids.shape[1]
    attention_mask = batch.attention_mask.to(device)
    out = body(
        input_ids=batch.input_ids.to(device),
        attention_mask=attention_mask,
        position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=False,
        **({"logits_to_keep": t + 1} if logits else {}),
    )
    states = out.logits if logits else out.last_hidden_state
    return states[:, -(t + 1) : -1]  # position j predicts completion token j


def _shared_prompt_states(body: torch.nn.Module, batch: TrainBatch, *, logits: bool) -> torch.Tensor:
    """As :func:`_plain_states`, with one prompt forward per distinct prompt.

    1. The U distinct prompts (left-padded to Lp) run forward with a KV cache; the last position predicts
       completion token 0.
    2. The cache is indexed to the N rows (a differentiable gather: gradients of all G completions flow back
       into their prompt's single forward) and the completions run on top of it.
    """
    device = next(body.parameters()).device
    key = "logits" if logits else "last_hidden_state"
    t = batch.completion_ids.shape[1]
    lp = batch.input_ids.shape[1] - t
    uniq, row_to_prompt = torch.unique(batch.group_ids, return_inverse=True)
    first = torch.zeros(len(uniq), dtype=torch.long).scatter_(
        0, row_to_prompt.flip(0), torch.arange(len(row_to_prompt) - 1, -1, -1)
    )  # a representative row of each prompt
    prompt_ids = batch.input_ids[first, :lp].to(device)  # (U, Lp)
    prompt_mask = batch.attention_mask[first, :lp].to(device)
    prompt_out = body(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        **({"logits_to_keep": 1} if logits else {}),
    )
    cache = prompt_out["cache"] if "cache" in prompt_out else prompt_out.past_key_values  # 5.x renamed it
    rows = row_to_prompt.to(device)
    cache.batch_select_indices(rows)  # (U, ...) -> (N, ...): row i reads its prompt's keys and values
    full_mask = batch.attention_mask.to(device)  # (N, Lp + T)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, lp:]
    out = body(
        input_ids=batch.completion_ids.to(device),
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=True,
        **{_cache_kwarg(body): cache},
    )
    first_states = getattr(prompt_out, key)[:, -1:][rows]  # (N, 1, .) predicts completion token 0
    return torch.cat([first_states, getattr(out, key)[:, :-1]], dim=1)  # (N, T, .)


def _cache_kwarg(model: torch.nn.Module) -> str:
    # transformers 5.x renamed past_key_values -> cache; ask the signature, not the version
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper hides it
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
