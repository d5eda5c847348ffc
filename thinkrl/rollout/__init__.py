"""From prompts to scored trajectories: engines, environments and the collector.

- ``base.py``: the engine interface, ``RolloutEngine.generate(prompt_ids, SamplingParams) -> Rollout``;
  ``hf.py`` (built-in, KV-cached; ``lean.py`` its fast decode step, ``token_draw.py`` logits -> token) and
  ``vllm.py`` implement it.
- ``environment.py``: what an episode is (``SingleTurn``: the R1 task).
- ``collect.py``: the collector, prompts -> environment + engine -> rewards -> DAPO filtering.
- ``trajectories.py``: what it returns to the learner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thinkrl.rollout.base import Rollout, RolloutEngine, SamplingParams
from thinkrl.rollout.collect import CORRECTNESS_REWARDS, Collector, Prompts, Sharding, score
from thinkrl.rollout.environment import Environment, SingleTurn, Turn
from thinkrl.rollout.hf import HFEngine
from thinkrl.rollout.trajectories import Trajectories

if TYPE_CHECKING:
    import torch

    from thinkrl.config import Config

__all__ = [
    "CORRECTNESS_REWARDS",
    "Collector",
    "Environment",
    "HFEngine",
    "Prompts",
    "Rollout",
    "RolloutEngine",
    "SamplingParams",
    "Sharding",
    "SingleTurn",
    "Trajectories",
    "Turn",
    "build_engine",
    "score",
]


def build_engine(cfg: Config, model: torch.nn.Module, tokenizer: Any) -> RolloutEngine:
    """The engine ``cfg.rollout.engine`` names, sampling from ``model`` (the trainer's policy).

    ``builtin``: ``HFEngine`` over the transformers model itself (a PEFT wrapper's adapters stay active).
    ``vllm``: ``VLLMEngine``, which copies the weights in now and on every ``sync_weights()``; it raises an
    ImportError naming ``scripts/setup_vllm.sh`` when vLLM is not installed.
    """
    from thinkrl.core.lora import base_model

    r, seed = cfg.rollout, cfg.train.seed
    if r.engine == "builtin":
        return HFEngine(
            base_model(model),
            tokenizer,
            max_batch_size=r.max_batch_size,
            seed=seed,
            fast_decode=r.fast_decode,
            cuda_graph=r.cuda_graph,
        )
    if r.engine == "vllm":
        from thinkrl.rollout.vllm import VLLMEngine

        extra = dict(r.vllm_kwargs)
        if r.max_batch_size is not None:  # rows decoded at once, as for the built-in engine
            extra.setdefault("max_num_seqs", r.max_batch_size)
        return VLLMEngine(
            model,
            tokenizer,
            seed=seed,
            dtype=r.vllm_dtype,
            max_model_len=r.vllm_max_model_len,
            kv_cache_gib=r.vllm_kv_cache_gib,
            gpu_memory_utilization=r.vllm_gpu_memory_utilization,
            enforce_eager=r.vllm_enforce_eager,
            sleep=r.vllm_sleep,
            vllm_kwargs=extra,
        )
    raise ValueError(f"rollout.engine={r.engine!r}; valid: builtin, vllm")
