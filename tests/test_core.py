"""The bottom layer: one loader for every command (dtype rule, device, the demo alias), one tokenising rule."""

from __future__ import annotations

import pytest
import torch

from thinkrl.core import (
    DEMO_BASE_PATH,
    adds_special_tokens,
    load_model_and_tokenizer,
    prompt_token_ids,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)
from thinkrl.testing import char_tokenizer, tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tok = char_tokenizer()
    tiny_model("qwen2", len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize(("dtype", "want"), [("auto", torch.float32), ("bfloat16", torch.bfloat16)])
def test_loader_applies_the_dtype_rule_and_device(saved, dtype, want):
    model, tok = load_model_and_tokenizer(str(saved), dtype=dtype, device="cpu")
    assert {p.dtype for p in model.parameters()} == {want}  # auto on a CPU: float32
    assert next(model.parameters()).device.type == "cpu" and tok.decode(tok("ab")["input_ids"]) == "ab"


def test_train_eval_and_pipeline_load_the_same_weights(saved):
    """The trainer's loader (a model config) and eval's (a path) are the same function: equal weights."""
    from thinkrl.config import ModelConfig
    from thinkrl.train.setup import load_policy

    a, _ = load_policy(ModelConfig(path=str(saved)))
    b, _ = load_model_and_tokenizer(str(saved), device="auto")
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w.to(v.device)), k


def test_bad_inputs_name_the_fix():
    assert resolve_model_path("demo") == str(DEMO_BASE_PATH)
    with pytest.raises(ValueError, match="model path is empty"):
        resolve_model_path("")
    with pytest.raises(ValueError, match="dtype 'fp8'; valid: auto, float32, bfloat16, float16"):
        resolve_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device is visible; use cpu or auto"):
            resolve_device("cuda:1")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_one_special_token_rule_for_rl_eval_and_sft():
    tok = char_tokenizer()
    tok.add_bos_token = True  # a tokenizer that adds BOS by default, as Llama's does
    ids = prompt_token_ids(tok, ["ab", "<bos>ab"], "plain")
    assert ids[1] == tok("<bos>ab", add_special_tokens=False)["input_ids"]  # already rendered: no second BOS
    assert not adds_special_tokens(tok, "ab", "chat")  # a chat template writes its own
