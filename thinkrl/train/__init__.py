"""The GRPO training loop, checkpoints and metrics logging."""

from thinkrl.train.trainer import GRPOTrainer, load_model_and_tokenizer

__all__ = ["GRPOTrainer", "load_model_and_tokenizer"]
