"""The built-in generation engine: batched, KV-cached sampling from any ``transformers`` causal LM.

How one ``generate`` call runs, per chunk of prompts (``max_batch_size`` bounds the rows decoded at once):

1. Left-pad the chunk's P_c prompts; position ids come from the attention mask, so a padded row computes
   exactly what it would alone. One forward over the P_c prompts fills a ``DynamicCache``.
2. Repeat the prompt cache n times along the batch (``batch_repeat_interleave``): each group's prompt is
   computed once, not n times.
3. Decode one token per step for the running rows. A row that hits EOS, a stop token, a stop string or
   ``max_new_tokens`` is finished; finished rows leave the batch (``batch_select_indices`` on the cache) as
   soon as they are DROP_FRACTION of it, or MAX_IDLE_STEPS steps after the first of them finished, so they
   cost at most ~1/8 of a step's compute and dropping (a full cache copy) stays rare.
4. The cache grows into preallocated buffers (doubling, capped at prompt + max_new_tokens) instead of
   ``torch.cat`` per step, which would copy the whole cache every token.
5. Llama / Qwen2 / Qwen3 / Mistral models decode with ``LeanDecoder`` (``lean.py``: static KV buffers, no
   per-step mask building, one CUDA graph replay per token on GPU) instead of the model's forward; other
   models, LoRA-wrapped ones and ``fast_decode=False`` use the forward. With a CUDA graph the batch shape is
   fixed, so finished rows stay in it (masked out) instead of being dropped.

Determinism: the row of global index i (prompt i // n) uses the uniform ``step_uniforms(seed, t, N)[i]`` at
step t (see ``token_draw.py``), so the random stream a row sees does not depend on chunking or on which rows
already finished. Same seed and same weights give the same completions for any ``max_batch_size``, up to
floating-point differences between batch shapes (which, on CPU, we have not seen flip a token). With
``SamplingParams.first_row`` the row uses ``step_uniforms(seed, t, first_row + N)[first_row + i]``, so a
data-parallel rank's share of a batch samples what one process sampling the whole batch would.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache

from thinkrl.rollout.base import Rollout, SamplingParams, check_params, stop_and_pad_ids
from thinkrl.rollout.lean import LeanDecoder, lean_unsupported
from thinkrl.rollout.token_draw import sample_tokens, step_uniforms

DROP_FRACTION = 0.125
"""Drop finished rows from the decode batch once they are at least this fraction of it."""
MAX_IDLE_STEPS = 8
"""... or once the oldest finished row has been carried this many steps, whichever comes first."""


class HFEngine:
    """Sample completions from a ``transformers`` causal LM that it shares with the trainer.

    Args:
        model: a ``*ForCausalLM`` (Llama, Qwen2, GPT-2, ...). Its train/eval mode is restored after each call.
        tokenizer: the model's tokenizer; its EOS always stops a completion, its pad id pads the outputs.
        max_batch_size: most completions (rows) decoded at once; prompts are chunked so that
            prompts_per_chunk * n <= max_batch_size (at least one prompt per chunk). None: one chunk.
        seed: seeds the engine's own generator, used by calls whose ``params.seed`` is None.
        fast_decode: decode supported models with ``LeanDecoder`` (module docstring, step 5).
        cuda_graph: on CUDA, replay each decode step as a CUDA graph (``fast_decode`` models only).

    >>> from thinkrl.testing import char_tokenizer, tiny_model
    >>> tok = char_tokenizer()
    >>> engine = HFEngine(tiny_model("llama", len(tok)), tok, max_batch_size=64)
    >>> out = engine.generate([[5, 6, 7], [8, 9]], SamplingParams(n=4, max_new_tokens=8, seed=0))
    >>> out.completion_ids.shape[0], out.group_ids.tolist()
    (8, [0, 0, 0, 0, 1, 1, 1, 1])
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int | None = None,
        seed: int = 0,
        fast_decode: bool = True,
        cuda_graph: bool = False,
    ):
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.fast_decode = fast_decode
        self.cuda_graph = cuda_graph
        self._generator = torch.Generator().manual_seed(seed)
        self.eos_ids, self.pad_id = stop_and_pad_ids(tokenizer, model)
        # transformers 5.x renamed past_key_values -> cache; ask the signature instead of the version.
        fwd = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in fwd else "past_key_values"
        self._keep_last_kw = {"logits_to_keep": 1} if "logits_to_keep" in fwd else {}

    def sync_weights(self) -> None:
        """No-op: the engine samples from the trainer's own model object."""

    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout:
        """Sample ``params.n`` completions for each prompt (contract: ``thinkrl.rollout.base.Rollout``).

        Args:
            prompt_ids: P prompts as token ids, unpadded, each non-empty.
            params: sampling settings; ``params.seed`` None draws the call's seed from the engine generator.

        Returns:
            A ``Rollout`` with N = P * n rows ordered by prompt; tensors live on the model's device.
        """
        check_params(params, prompt_ids)
        n, num_rows = params.n, len(prompt_ids) * params.n
        seed = params.seed
        if seed is None:  # advance the engine's generator so successive calls differ
            seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
        device = next(self.model.parameters()).device

        # Sorting by length keeps similar prompts in one chunk (less padding); rows are keyed by global index.
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        per_chunk = max(1, len(order) if self.max_batch_size is None else self.max_batch_size // n)

        chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        lengths = [0] * num_rows
        reasons = ["length"] * num_rows
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), per_chunk):
                    chunk = order[start : start + per_chunk]
                    chunks.append(
                        self._generate_chunk(
                            prompt_ids, chunk, params, seed, num_rows, lengths, reasons, device
                        )
                    )
        finally:
            self.model.train(was_training)

        width = max(lengths, default=0)
        completion_ids = torch.full((num_rows, width), self.pad_id, dtype=torch.long, device=device)
        logprobs = torch.zeros(num_rows, width, dtype=torch.float32, device=device)
        for rows, toks, lps in chunks:
            completion_ids[rows, : toks.shape[1]] = toks
            logprobs[rows, : lps.shape[1]] = lps
        length_t = torch.tensor(lengths, dtype=torch.long, device=device)
        mask = torch.arange(width, device=device) < length_t.unsqueeze(1)  # (N, T)
        completion_ids.masked_fill_(~mask, self.pad_id)
        logprobs.masked_fill_(~mask, 0.0)
        ids_cpu = completion_ids.tolist()
        texts = self.tokenizer.batch_decode(
            [ids_cpu[i][: lengths[i]] for i in range(num_rows)], skip_special_tokens=True
        )
        return Rollout(
            prompt_ids=[list(p) for p in prompt_ids],
            group_ids=torch.arange(len(prompt_ids), device=device).repeat_interleave(n),
            completion_ids=completion_ids,
            completion_mask=mask,
            logprobs=logprobs,
            finish_reasons=reasons,
            texts=texts,
        )

    def _generate_chunk(
        self,
        prompt_ids: list[list[int]],
        chunk: list[int],
        params: SamplingParams,
        seed: int,
        num_rows: int,
        lengths: list[int],
        reasons: list[str],
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode the n completions of the prompts ``chunk``; fill ``lengths``/``reasons`` in place.

        Returns:
            rows: (B,) long global row indices; tokens: (B, T_c) long; logprobs: (B, T_c) float32, where
            B = len(chunk) * n and T_c is the chunk's longest completion (entries past a row's length are junk).
        """
        n, max_new = params.n, params.max_new_tokens
        prompts = [prompt_ids[i] for i in chunk]
        capacity = max(len(p) for p in prompts) + max_new
        logits, cache, attn = self.prefill(prompts, n, capacity, device)
        lean = None
        if self.fast_decode and lean_unsupported(self.model, capacity) is None:
            lean = LeanDecoder(
                self.model,
                cache,
                attn,
                repeats=n,
                capacity=capacity,
                cuda_graph=self.cuda_graph and device.type == "cuda",
            )
            cache = None  # the decoder holds its own copy of the prompt's keys and values
        else:
            cache.batch_repeat_interleave(n)
        can_drop = lean is None or not lean.static_shape
        attn = attn.repeat_interleave(n, 0)  # (B, L)
        next_pos = attn.sum(-1)  # (B,) position of the first completion token

        rows_cpu = [p * n + j for p in chunk for j in range(n)]  # global row of each batch row
        local = torch.arange(len(rows_cpu), device=device)  # (B,) row in this chunk's buffers
        local_cpu = list(range(len(rows_cpu)))
        toks = torch.full((len(rows_cpu), max_new), self.pad_id, dtype=torch.long, device=device)
        lps = torch.zeros(len(rows_cpu), max_new, dtype=torch.float32, device=device)
        stop_ids = torch.tensor(
            sorted(self.eos_ids | set(params.stop_token_ids)), dtype=torch.long, device=device
        )
        stops = _StopStrings(self.tokenizer, params.stop_strings, len(rows_cpu))
        alive = [True] * len(rows_cpu)
        died_at: list[int] = []  # steps at which the finished rows still in the batch finished
        steps = 0
        for t in range(max_new):
            u = None
            if params.temperature != 0:
                u = step_uniforms(seed, t, num_rows, params.first_row)[rows_cpu]
            tok, lp = sample_tokens(
                logits, u, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p
            )  # (B,), (B,)
            # Finished rows still in the batch write junk past their length; the caller masks it out.
            toks[local, t] = tok
            lps[local, t] = lp
            steps = t + 1
            done_cpu = torch.isin(tok, stop_ids).tolist()  # the host sync of this step
            if stops.active:
                live = [b for b, a in enumerate(alive) if a]
                tok_cpu = tok.tolist()
                hits = stops.update([local_cpu[b] for b in live], [tok_cpu[b] for b in live])
                for b, hit in zip(live, hits):
                    done_cpu[b] = done_cpu[b] or hit
            last = t + 1 == max_new
            for b, is_alive in enumerate(alive):
                if is_alive and (done_cpu[b] or last):
                    lengths[rows_cpu[b]] = t + 1
                    reasons[rows_cpu[b]] = "stop" if done_cpu[b] else "length"
                    alive[b] = False
                    died_at.append(t)
            if last or not any(alive):
                break
            drop_due = died_at and (
                len(died_at) >= DROP_FRACTION * len(alive) or t - died_at[0] >= MAX_IDLE_STEPS
            )
            if can_drop and drop_due:
                # Drop finished rows from the cache and every per-row tensor. Not on every finish: a drop
                # copies the whole cache, so it waits until DROP_FRACTION of the batch is finished or the
                # oldest finished row has been carried MAX_IDLE_STEPS steps.
                keep_cpu = [b for b, a in enumerate(alive) if a]
                keep = torch.tensor(keep_cpu, dtype=torch.long, device=device)
                if lean is None:
                    cache.batch_select_indices(keep)
                else:
                    lean.select_rows(keep)
                tok, attn, next_pos, local = tok[keep], attn[keep], next_pos[keep], local[keep]
                rows_cpu = [rows_cpu[b] for b in keep_cpu]
                local_cpu = [local_cpu[b] for b in keep_cpu]
                alive, died_at = [True] * len(keep_cpu), []
            if lean is not None:
                logits = lean.step(tok, next_pos)  # (B, V)
            else:
                attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], dim=1)  # (B, L + t + 1)
                out = self.model(
                    input_ids=tok.unsqueeze(1),
                    attention_mask=attn,
                    position_ids=next_pos.unsqueeze(1),
                    use_cache=True,
                    **{self._cache_kw: cache},
                )
                logits = out.logits[:, -1]  # (B, V)
            next_pos = next_pos + 1
        chunk_rows = torch.tensor(
            [p * n + j for p in chunk for j in range(n)], dtype=torch.long, device=device
        )
        return chunk_rows, toks[:, :steps], lps[:, :steps]

    def prefill(
        self, prompts: list[list[int]], n: int, capacity: int, device: torch.device
    ) -> tuple[torch.Tensor, DynamicCache, torch.Tensor]:
        """One forward over the left-padded ``prompts`` into a fresh cache of ``capacity`` columns.

        Returns the next-token logits repeated ``n`` times per prompt (B = len(prompts) * n, V), the cache
        (one row per prompt) and the (P_c, L) attention mask of the prompts.
        """
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros(len(prompts), width, dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding: every row's last prompt token sits in the last column
            ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attn[r, width - len(p) :] = 1
        ids, attn = ids.to(device), attn.to(device)
        pos = (attn.cumsum(-1) - 1).clamp_(min=0)  # (P_c, L): real tokens at 0..len-1 whatever the padding
        cache = _new_cache(self.model.config, capacity=capacity)
        out = self.model(
            input_ids=ids,
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            **{self._cache_kw: cache},
            **self._keep_last_kw,
        )
        # One prompt forward per group, then n copies of its cache: the prompt is never recomputed per sample.
        return out.logits[:, -1].repeat_interleave(n, 0), cache, attn  # (B, V)


class _StopStrings:
    """Incremental stop-string detection on a short decoded tail of each completion.

    A string is detected at the first step at which it appears in the decoded tail; because the tail always
    spans more characters than the longest stop string, that step is the one whose token completes it.
    """

    def __init__(self, tokenizer: Any, stop_strings: list[str], num_rows: int):
        self.tokenizer = tokenizer
        self.strings = [s for s in stop_strings if s]
        self.active = bool(self.strings)
        # 4 tokens per character covers byte-level tokenizers that split one character into up to 4 bytes.
        self.window = 4 * max((len(s) for s in self.strings), default=0) + 4
        self.ids: list[list[int]] = [[] for _ in range(num_rows)]

    def update(self, local_rows: list[int], new_tokens: list[int]) -> list[bool]:
        """Append one token per running row; return, per row, whether a stop string just completed."""
        tails = []
        for r, tok in zip(local_rows, new_tokens):
            self.ids[r].append(tok)
            tails.append(self.ids[r][-self.window :])
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=False)
        return [any(s in text for s in self.strings) for text in texts]


def _new_cache(config: Any, capacity: int) -> DynamicCache:
    """A DynamicCache for ``config`` whose full-attention layers append into growing buffers.

    Sliding-window and other special layers keep their own implementation; versions without cache layers
    (transformers < 4.56) get a plain DynamicCache.
    """
    try:
        cache = DynamicCache(config=config)
    except TypeError:  # transformers < 4.56 has no config argument
        return DynamicCache()
    if _DynamicLayer is not None:
        cache.layers = [
            _BufferedLayer(capacity) if type(layer) is _DynamicLayer else layer for layer in cache.layers
        ]
    return cache


try:
    from transformers.cache_utils import DynamicLayer as _DynamicLayer
except ImportError:  # transformers < 4.56: no per-layer cache objects
    _DynamicLayer = None

if _DynamicLayer is not None:

    class _BufferedLayer(_DynamicLayer):
        """A DynamicLayer whose keys/values are views into (B, H, capacity, D) buffers that double on demand.

        ``DynamicLayer.update`` concatenates, copying the whole cache every decode step (O(T^2) traffic);
        here a step writes one column. ``keys``/``values`` stay (B, H, T, D) views, as attention expects.
        """

        def __init__(self, max_len: int):
            super().__init__()
            self.max_len = max_len
            self.length = 0
            self._k: torch.Tensor | None = None  # (B, H, capacity, D)
            self._v: torch.Tensor | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if self._k is None:  # the prompt: exactly its length; the first decode step grows it
                b, h, _, d = key_states.shape
                self._k = key_states.new_empty(b, h, end, d)
                self._v = value_states.new_empty(b, h, end, value_states.shape[-1])
            elif end > self._k.shape[-2]:
                self._move(max(end, min(2 * self._k.shape[-2], self.max_len)))
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
            return self.keys, self.values

        def _move(self, capacity: int, rows: torch.Tensor | None = None) -> None:
            """Copy the used part of the buffers (only batch ``rows`` if given) into new ones of ``capacity``."""
            k, v = self._k[:, :, : self.length], self._v[:, :, : self.length]
            if rows is not None:
                k, v = k[rows], v[rows]
            self._k = k.new_empty(k.shape[0], k.shape[1], capacity, k.shape[3])
            self._v = v.new_empty(v.shape[0], v.shape[1], capacity, v.shape[3])
            self._k[:, :, : self.length] = k
            self._v[:, :, : self.length] = v

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self._k is not None:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self._k is not None:
                self._move(self._k.shape[-2], rows=indices)
                self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]
