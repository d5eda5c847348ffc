"""The built-in "R1-Zero in miniature" demo: a tiny base model that thinkrl builds and pretrains itself.

- ``build_tokenizer`` (``tokenizer.py``): character-level, the four R1 tags as single tokens.
- ``build_model`` (``model.py``): a ~1M-parameter ``LlamaForCausalLM``.
- ``split_rows`` (``thinkrl/data/addition.py``, also ``builtin:demo``): the RL task (add four one-digit
  numbers), seeded disjoint train/held-out split.
- ``iter_documents`` (``corpus.py``): the synthetic web-like pretraining corpus (no reasoning after the R1 template).
- ``pretrain`` (``pretrain.py``): the causal-LM loop that builds the base checkpoint (``thinkrl/assets/demo-base``).
- ``probe`` (``probe.py``): the base model's mode mix on the exact RL prompt.
"""

from __future__ import annotations

from thinkrl.core import DEMO_BASE_PATH
from thinkrl.data.addition import make_row, split_rows
from thinkrl.demo.corpus import CORPUS_MIX, iter_documents, sample_documents
from thinkrl.demo.model import build_model, tiny_llama_config
from thinkrl.demo.pretrain import PRETRAIN_STEPS, pretrain
from thinkrl.demo.probe import ProbeReport, classify_completion, probe
from thinkrl.demo.tokenizer import TAG_TOKENS, build_tokenizer

__all__ = [
    "CORPUS_MIX",
    "DEMO_BASE_PATH",
    "PRETRAIN_STEPS",
    "ProbeReport",
    "TAG_TOKENS",
    "build_model",
    "build_tokenizer",
    "classify_completion",
    "iter_documents",
    "make_row",
    "pretrain",
    "probe",
    "sample_documents",
    "split_rows",
    "tiny_llama_config",
]
