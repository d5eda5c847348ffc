"""The bottom layer: what every command shares and nothing in thinkrl sits under.

- ``models.py``: model and tokenizer loading (one dtype rule), device resolution, seeding, the ``demo`` alias.
- ``tokens.py``: prompt tokenising (one special-token rule, the length check).
- ``timing.py``: wall-clock timing of a step's stages.
- ``lora.py``: LoRA adapters through PEFT (the policy, its reference mode, merged weights).

It imports nothing from the rest of thinkrl (``tests/test_layers.py`` checks every layer's imports).
"""

from thinkrl.core.models import (
    DEMO_BASE_PATH,
    DEMO_MODEL,
    DTYPES,
    disable_dropout,
    load_model_and_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    seed_everything,
)
from thinkrl.core.timing import timed
from thinkrl.core.tokens import adds_special_tokens, prompt_token_ids

__all__ = [
    "DEMO_BASE_PATH",
    "DEMO_MODEL",
    "DTYPES",
    "adds_special_tokens",
    "disable_dropout",
    "load_model_and_tokenizer",
    "prompt_token_ids",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_path",
    "seed_everything",
    "timed",
]
