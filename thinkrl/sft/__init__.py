"""``thinkrl sft``: supervised fine-tuning on prompt/response or chat-message rows (R1 cold start, distillation).

from thinkrl.sft import SFTTrainer, load_sft_config
SFTTrainer(load_sft_config("configs/sft.yaml", ["train.epochs=2"])).train()
"""

from thinkrl.sft.config import SFTConfig, SFTDataConfig, SFTTrainConfig, load_sft_config
from thinkrl.sft.data import SFTExample, build_examples, collate, pack, plan_epoch, tokenize_row
from thinkrl.sft.trainer import SFTTrainer, add_sft_arguments, run_sft_cli

__all__ = [
    "SFTConfig",
    "SFTDataConfig",
    "SFTExample",
    "SFTTrainConfig",
    "SFTTrainer",
    "add_sft_arguments",
    "build_examples",
    "collate",
    "load_sft_config",
    "pack",
    "plan_epoch",
    "run_sft_cli",
    "tokenize_row",
]
