"""The GRPO training loop, checkpoints and metrics logging."""

from thinkrl.train.trainer import GRPOTrainer

__all__ = ["GRPOTrainer"]
