"""LoRA through PEFT: adapters train, the base stays frozen and serves as the reference, checkpoints load."""

from __future__ import annotations

import pytest
import torch
from conftest import make_trainer as make_grpo_trainer
from transformers import AutoModelForCausalLM

from thinkrl.config import ConfigError, load_config
from thinkrl.testing import tiny_model
from thinkrl.train.checkpoint import latest_checkpoint

pytest.importorskip("peft", reason="LoRA needs the optional peft package (pip install thinkrl[peft])")

LORA = ["model.lora_r=4", "model.lora_alpha=8", "algorithm.beta=0.01"]


def make_trainer(tmp_path, *overrides: str, seed: int = 0):
    return make_grpo_trainer(tmp_path, "train.steps=1", *LORA, *overrides, seed=seed)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.tensor([[2, 5, 6, 7, 3, 4]])
    with torch.no_grad():
        return model(input_ids=x).logits


def test_only_adapters_train_and_the_reference_is_the_initial_policy(tmp_path):
    tr = make_trainer(tmp_path, "train.steps=2")
    initial = tiny_model("llama", len(tr.tokenizer), seed=0)
    assert {id(p) for g in tr.optimizer.param_groups for p in g["params"]} == {id(p) for p in tr.trainable}
    assert tr.trainable and all("lora_" in n for n, p in tr.model.named_parameters() if p.requires_grad)
    assert tr.reference is None  # no second copy of the model
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    history = tr.train()
    after = tr.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed), sorted(changed)
    assert "train/kl" in history[-1]

    from thinkrl.core.lora import reference_mode

    with reference_mode(tr.model):  # adapters off: exactly the initial weights
        torch.testing.assert_close(_logits(tr.model), _logits(initial), rtol=0, atol=0)
    assert not torch.allclose(_logits(tr.model), _logits(initial))  # adapters on: the policy moved


def test_checkpoint_has_a_merged_hf_model_and_resumes(tmp_path):
    tr = make_trainer(tmp_path / "a", "train.steps=2")
    tr.train()
    ckpt = latest_checkpoint(tmp_path / "a" / "run")
    assert (ckpt / "adapter" / "adapter_model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(ckpt)  # a plain HF folder: no peft needed to load it
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(_logits(merged), _logits(tr.model), rtol=0, atol=1e-5)

    part = make_trainer(tmp_path / "b", "train.steps=1")
    part.train()
    resumed = make_trainer(tmp_path / "b", "train.steps=2", "train.resume=true")
    assert resumed.step == 1
    resumed.train()
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=0, atol=1e-6)


def test_lora_reference_cannot_be_refreshed(tmp_path):
    with pytest.raises(ConfigError, match="ref_refresh_steps=0"):
        load_config(None, [*LORA, "algorithm.ref_refresh_steps=10"])
