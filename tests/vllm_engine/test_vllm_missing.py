"""Without vLLM installed (the core .venv), ``rollout.engine=vllm`` fails at start with the way to install it."""

import importlib.util

import pytest

from thinkrl.config import load_config
from thinkrl.rollout import build_engine
from thinkrl.testing import char_tokenizer, tiny_model


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_engine_without_vllm_names_the_setup_script():
    tok = char_tokenizer()
    cfg = load_config(None, ["rollout.engine=vllm"])
    with pytest.raises(ImportError, match="setup_vllm.sh"):
        build_engine(cfg, tiny_model("qwen2", len(tok)), tok)
