"""The GRPO training loop, checkpoints and metrics logging."""

from thinkrl.train.setup import load_model_and_tokenizer
from thinkrl.train.trainer import GRPOTrainer

__all__ = ["GRPOTrainer", "load_model_and_tokenizer"]
