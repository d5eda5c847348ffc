"""Generation engines behind one interface: ``RolloutEngine.generate(prompt_ids, SamplingParams) -> Rollout``."""

from thinkrl.rollout.base import Rollout, RolloutEngine, SamplingParams
from thinkrl.rollout.hf import HFEngine

__all__ = ["HFEngine", "Rollout", "RolloutEngine", "SamplingParams"]
