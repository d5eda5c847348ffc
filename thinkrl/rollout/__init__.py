"""From prompts to scored trajectories: engines, environments and the collector.

- ``base.py``: the engine interface, ``RolloutEngine.generate(prompt_ids, SamplingParams) -> Rollout``;
  ``hf.py`` (built-in, KV-cached; ``lean.py`` its fast decode step, ``token_draw.py`` logits -> token) and
  ``vllm.py`` implement it.
- ``environment.py``: what an episode is (``SingleTurn``: the R1 task); ``python_tool.py``: the Python tool
  environment (multi-turn); ``episodes.py`` (+ ``hf_turns.py`` for the built-in engine) runs multi-turn
  episodes token-in, token-out.
- ``collect.py``: the collector, prompts -> environment + engine -> rewards -> DAPO filtering.
- ``trajectories.py``: what it returns to the learner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thinkrl.rollout.base import Rollout, RolloutEngine, SamplingParams
from thinkrl.rollout.collect import CORRECTNESS_REWARDS, Collector, Prompts, Sharding, score
from thinkrl.rollout.environment import Environment, Episode, SingleTurn, Turn, is_multi_turn
from thinkrl.rollout.episodes import Episodes, generate_episodes
from thinkrl.rollout.hf import HFEngine
from thinkrl.rollout.trajectories import Trajectories

if TYPE_CHECKING:
    import torch

    from thinkrl.config import Config

__all__ = [
    "CORRECTNESS_REWARDS",
    "ENGINES",
    "Collector",
    "Environment",
    "Episode",
    "Episodes",
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
    "build_environment",
    "generate_episodes",
    "is_multi_turn",
    "score",
]


def _builtin(cfg: Config, model: torch.nn.Module, tokenizer: Any) -> RolloutEngine:
    """``HFEngine`` over the transformers model itself (a PEFT wrapper's adapters stay active)."""
    from thinkrl.core.lora import base_model

    r = cfg.rollout
    return HFEngine(
        base_model(model), tokenizer, max_batch_size=r.max_batch_size, seed=cfg.train.seed,
        fast_decode=r.fast_decode, cuda_graph=r.cuda_graph,
    )  # fmt: skip


def _vllm(cfg: Config, model: torch.nn.Module, tokenizer: Any) -> RolloutEngine:
    """``VLLMEngine``, which copies the weights in now and on every ``sync_weights()``; an ImportError names
    ``scripts/setup_vllm.sh`` when vLLM is not installed."""
    from thinkrl.rollout.vllm import VLLMEngine

    r = cfg.rollout
    extra = dict(r.vllm_kwargs)
    if r.max_batch_size is not None:  # rows decoded at once, as for the built-in engine
        extra.setdefault("max_num_seqs", r.max_batch_size)
    return VLLMEngine(
        model, tokenizer, seed=cfg.train.seed, dtype=r.vllm_dtype, max_model_len=r.vllm_max_model_len,
        kv_cache_gib=r.vllm_kv_cache_gib, gpu_memory_utilization=r.vllm_gpu_memory_utilization,
        enforce_eager=r.vllm_enforce_eager, sleep=r.vllm_sleep, vllm_kwargs=extra,
    )  # fmt: skip


ENGINES: dict[str, Callable[[Config, torch.nn.Module, Any], RolloutEngine]] = {
    "builtin": _builtin,
    "vllm": _vllm,
}
"""``rollout.engine`` name -> ``(cfg, policy, tokenizer) -> RolloutEngine``; a new engine registers here."""


def build_engine(cfg: Config, model: torch.nn.Module, tokenizer: Any) -> RolloutEngine:
    """The engine ``cfg.rollout.engine`` names (:data:`ENGINES`), sampling from ``model`` (the policy)."""
    if cfg.rollout.engine not in ENGINES:
        raise ValueError(f"rollout.engine={cfg.rollout.engine!r}; valid: {', '.join(sorted(ENGINES))}")
    return ENGINES[cfg.rollout.engine](cfg, model, tokenizer)


def build_environment(cfg: Config, tokenizer: Any) -> Environment:
    """The environment of a run: the R1 single-turn task, or the Python tool (``tools.enabled``) with the
    ``tools`` limits and the ``grading.sandbox`` policy. With tools, the sandbox is probed now, so a machine
    where code may not run fails at start (``SandboxUnavailable`` names the fixes), not at the first call."""
    d, t = cfg.data, cfg.tools
    if not t.enabled:
        return SingleTurn(tokenizer, d.template, d.system_prompt)
    from thinkrl.rewards.sandbox import Sandbox
    from thinkrl.rollout.python_tool import PythonTool

    policy = cfg.grading.sandbox
    sandbox = Sandbox(policy.backend, policy.allow_unisolated)
    sandbox.chosen()
    return PythonTool(tokenizer, d.template, d.system_prompt, stateful=t.stateful, limits=t, sandbox=sandbox)
