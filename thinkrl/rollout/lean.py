"""thinkrl's own decode step for Llama-family models: static KV buffers, no per-step overhead, CUDA graphs.

The built-in engine spends its decode time in three places: the GEMMs of B rows x one token, the attention
over the KV cache, and per-step overhead (on GPU: Python and kernel launches, which dominate for small models;
``transformers`` rebuilds masks and cache views every step). ``LeanDecoder`` runs one decode step of a
Llama / Qwen2 / Qwen3 / Mistral model straight from the model's own weights:

- It reads the model's own weight tensors (no copy), so it always decodes with the current policy.
- Keys and values live in zero-initialised (B, H_kv, capacity, D) buffers; a step writes one column
  (``index_copy_`` at a position held in a tensor) and sets that column of a boolean (B, capacity) mask.
- Rotary cos/sin come from the model's own ``rotary_emb`` for positions 0..capacity-1, computed once, so every
  rope scaling that depends on the position only (default, linear, llama3, yarn) is exact.
- On GPU the whole step is captured in a CUDA graph once per chunk and replayed: one launch per token.

The prompt is still run by the model's own forward (padding, masks, any attention kernel); its cache is copied
into the buffers. Numerics: the same operations as ``transformers``' eager/SDPA path in a different grouping
(grouped-query attention as g query rows per KV head instead of copied K/V), so logits agree to float
rounding (tests: 1e-5 in float32) and sampled tokens agree except where two tokens' probabilities tie.

Measured (benchmarks/NOTES.md section 6): on CPU it is 0-15% faster than the model's forward (the GEMMs
dominate there); on GPU, where a small model's decode step is launch-bound, the CUDA graph is what pays.

``lean_unsupported(model, capacity)`` returns why a model cannot use it (PEFT layers, GPT-2, sliding windows
shorter than the sequence, rope scalings that depend on the sequence length, ...); the engine then uses the
model's forward, as before.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED_TYPES = ("llama", "qwen2", "qwen3", "mistral")
"""``config.model_type`` values whose decoder layer this module reproduces."""
POSITION_ONLY_ROPE = ("default", "linear", "llama3", "yarn")
"""Rope types whose cos/sin depend on the position alone (so a table computed once is exact)."""


def lean_unsupported(model: Any, capacity: int) -> str | None:
    """Why ``model`` cannot be decoded by ``LeanDecoder`` for sequences of ``capacity`` tokens; None if it can."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_TYPES:
        return f"model_type {kind!r} (supported: {', '.join(SUPPORTED_TYPES)})"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r}"
    backbone = getattr(model, "model", None)
    layers = getattr(backbone, "layers", None)
    if layers is None or not hasattr(backbone, "rotary_emb") or not hasattr(model, "lm_head"):
        return "not a *ForCausalLM with .model.layers, .model.rotary_emb and .lm_head"
    rope = getattr(backbone.rotary_emb, "rope_type", "default")
    if rope not in POSITION_ONLY_ROPE:
        return f"rope_type {rope!r} depends on the sequence length"
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears = [
            attn.q_proj,
            attn.k_proj,
            attn.v_proj,
            attn.o_proj,
            mlp.gate_proj,
            mlp.up_proj,
            mlp.down_proj,
        ]
        if any(type(m) is not torch.nn.Linear for m in linears):  # PEFT/LoRA, quantised layers, ...
            return "a projection is not a plain torch.nn.Linear (adapters or quantisation)"
        # Qwen2/Qwen3 set a per-layer window (None on full-attention layers); Mistral reads its config's.
        window = (
            attn.sliding_window
            if hasattr(attn, "sliding_window")
            else getattr(config, "sliding_window", None)
        )
        if window is not None and window < capacity:
            return f"sliding window {window} < sequence capacity {capacity}"
    return None


class LeanDecoder:
    """Decode steps for B rows whose prompts are already in a ``transformers`` cache.

    Args:
        model: a supported ``*ForCausalLM`` (check ``lean_unsupported`` first), in eval mode, under no_grad.
        prompt_cache: the cache the model's prompt forward filled, P_c rows x L prompt columns.
        prompt_mask: (P_c, L) attention mask of that forward (0 = left padding).
        repeats: each prompt row becomes ``repeats`` consecutive decode rows (G samples share the prompt).
        capacity: prompt columns + most decode steps (the buffers' length).
        static_shape: attend over all ``capacity`` columns every step (masked), the fixed shape a CUDA graph
            records; False attends over the filled columns only (less work on CPU).
        cuda_graph: capture the step in a CUDA graph and replay it (CUDA only; implies ``static_shape``).

    ``step(tokens, positions)`` feeds each row's last token at its position and returns (B, V) logits of the
    next one. Rows can be dropped with ``select_rows`` unless the shape is static.
    """

    def __init__(
        self,
        model: Any,
        prompt_cache: Any,
        prompt_mask: torch.Tensor,
        *,
        repeats: int,
        capacity: int,
        static_shape: bool = False,
        cuda_graph: bool = False,
    ):
        config, backbone = model.config, model.model
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.scaling = self.head_dim**-0.5
        self.norm_w = backbone.norm.weight
        self.embed = backbone.embed_tokens.weight
        self.head_w = model.lm_head.weight
        self.head_b = model.lm_head.bias
        self.layers = [_layer_weights(layer) for layer in backbone.layers]

        device, dtype = self.embed.device, self.embed.dtype
        positions = torch.arange(capacity, device=device).unsqueeze(0)  # (1, C)
        cos, sin = backbone.rotary_emb(torch.zeros(1, device=device, dtype=dtype), positions)
        self.cos, self.sin = cos[0], sin[0]  # (C, D)

        width = prompt_mask.shape[1]
        rows = prompt_mask.shape[0] * repeats
        self.mask = torch.zeros(rows, capacity, dtype=torch.bool, device=device)  # (B, C)
        self.mask[:, :width] = prompt_mask.bool().repeat_interleave(repeats, 0)
        # Zeros, not empty: a masked column still enters softmax(QK)V as 0 * V, and 0 * NaN garbage is NaN.
        self.keys, self.values = [], []
        for k, v in _cache_tensors(prompt_cache):  # (P_c, H_kv, L, D) each
            kb = torch.zeros(rows, self.kv_heads, capacity, self.head_dim, dtype=k.dtype, device=device)
            vb = torch.zeros_like(kb)
            kb[:, :, :width] = k.repeat_interleave(repeats, 0)
            vb[:, :, :width] = v.repeat_interleave(repeats, 0)
            self.keys.append(kb)
            self.values.append(vb)
        self.length = width  # columns filled so far (the same for every row: prompts are left-padded)
        self.capacity = capacity

        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA model, got device {device}")
        self.cuda_graph = cuda_graph
        self.static_shape = static_shape or cuda_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._tokens = torch.zeros(rows, dtype=torch.long, device=device)  # the graph's static inputs
        self._positions = torch.zeros(rows, dtype=torch.long, device=device)
        self._column = torch.zeros(1, dtype=torch.long, device=device)
        self._logits: torch.Tensor | None = None

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed (B,) ``tokens`` at (B,) ``positions``; return (B, V) next-token logits.

        With a CUDA graph the returned tensor is the graph's output buffer: read it before the next step.
        """
        if self.length >= self.capacity:
            raise RuntimeError(f"LeanDecoder is full: {self.capacity} columns")
        self._tokens.copy_(tokens)
        self._positions.copy_(positions)
        self._column.fill_(self.length)
        self.length += 1
        if not self.cuda_graph:
            return self._forward(None if self.static_shape else self.length)
        if self._graph is None:
            try:
                self._graph = self._capture()
            except RuntimeError as err:  # e.g. an op that syncs with the host: decode eagerly, same numbers
                warnings.warn(f"CUDA graph capture failed ({err}); decoding without it", stacklevel=2)
                self.cuda_graph = False
                return self._forward(None)
        self._graph.replay()
        return self._logits

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep only batch rows ``keep`` (long indices) in every buffer."""
        if self.static_shape:
            raise RuntimeError("rows cannot be dropped from a static-shape decoder (CUDA graph)")
        self.mask = self.mask[keep]
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]
        self._tokens, self._positions = self._tokens[keep], self._positions[keep]

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` columns (a multi-turn row that waits on a tool leaves masked columns behind).
        Columns are not positions: the rotary table keeps its size."""
        if self.static_shape:
            raise RuntimeError("a static-shape decoder (CUDA graph) cannot grow")
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.mask = F.pad(self.mask, (0, extra))
        self.keys = [F.pad(k, (0, 0, 0, extra)) for k in self.keys]
        self.values = [F.pad(v, (0, 0, 0, extra)) for v in self.values]
        self.capacity = capacity

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Record one step over the whole capacity (masked), after warm-up runs on a side stream."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up (cuBLAS handles, workspaces): rewrites the same column
            for _ in range(2):
                self._forward(None)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # The warm-up's stream again: cuBLAS keeps a workspace per (handle, stream), made outside the capture.
        with torch.cuda.graph(graph, stream=stream):
            self._logits = self._forward(None)
        return graph

    def _forward(self, length: int | None) -> torch.Tensor:
        """One decode step from the static inputs. ``length``: attend to the first ``length`` columns (eager
        path); None: to all ``capacity`` columns, masked (the graph's fixed shape)."""
        rows = self._tokens.shape[0]
        span = slice(None) if length is None else slice(0, length)
        self.mask.index_fill_(1, self._column, True)
        mask = self.mask[:, None, None, span]  # (B, 1, 1, T)
        cos = self.cos[self._positions].unsqueeze(1)  # (B, 1, D)
        sin = self.sin[self._positions].unsqueeze(1)
        h = F.embedding(self._tokens, self.embed)  # (B, hidden)
        q_width = self.heads * self.head_dim
        for w, kb, vb in zip(self.layers, self.keys, self.values):
            x = _rms_norm(h, w["input_norm"], self.eps)
            q = F.linear(x, w["q"], w["q_bias"]).view(rows, self.heads, self.head_dim)
            k = F.linear(x, w["k"], w["k_bias"]).view(rows, self.kv_heads, self.head_dim)
            v = F.linear(x, w["v"], w["v_bias"])
            if w["q_norm"] is not None:  # Qwen3: RMSNorm per head before the rotation
                q, k = _rms_norm(q, w["q_norm"], self.eps), _rms_norm(k, w["k_norm"], self.eps)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            kb.index_copy_(2, self._column, k.unsqueeze(2))
            vb.index_copy_(2, self._column, v.view(rows, self.kv_heads, 1, self.head_dim))
            # Grouped-query attention without copying K/V per query head: the query heads that share KV head j
            # (heads j*g .. j*g+g-1, as transformers' repeat_kv pairs them) become g query rows against it.
            attn = F.scaled_dot_product_attention(
                q.reshape(rows, self.kv_heads, self.heads // self.kv_heads, self.head_dim),  # (B, H_kv, g, D)
                kb[:, :, span],
                vb[:, :, span],
                attn_mask=mask,
                scale=self.scaling,
            )  # (B, H_kv, g, D)
            h = h + F.linear(attn.reshape(rows, q_width), w["o"], w["o_bias"])
            x = _rms_norm(h, w["post_norm"], self.eps)
            gate = F.linear(x, w["gate"], w["gate_bias"])
            up = F.linear(x, w["up"], w["up_bias"])
            h = h + F.linear(F.silu(gate) * up, w["down"], w["down_bias"])
        return F.linear(_rms_norm(h, self.norm_w, self.eps), self.head_w, self.head_b)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``transformers``' LlamaRMSNorm: normalise in float32, cast back, then scale."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of (B, H, D) ``x`` with (B, 1, D) ``cos``/``sin`` (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _layer_weights(layer: Any) -> dict[str, torch.Tensor | None]:
    """One decoder layer's weights and biases by role (the model's own tensors: no copy)."""
    attn, mlp = layer.self_attn, layer.mlp
    linears = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj, "o": attn.o_proj}
    linears.update(gate=mlp.gate_proj, up=mlp.up_proj, down=mlp.down_proj)
    weights: dict[str, torch.Tensor | None] = {}
    for name, linear in linears.items():
        weights[name], weights[f"{name}_bias"] = linear.weight, linear.bias
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    weights["q_norm"] = None if q_norm is None else q_norm.weight
    weights["k_norm"] = None if k_norm is None else k_norm.weight
    weights["input_norm"] = layer.input_layernorm.weight
    weights["post_norm"] = layer.post_attention_layernorm.weight
    return weights


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a ``transformers`` cache, across cache API versions."""
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))
