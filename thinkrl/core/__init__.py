"""The bottom layer: what every command shares and nothing in thinkrl sits under.

- ``models.py``: model and tokenizer loading (one dtype rule), device resolution, seeding, the ``demo`` alias.
- ``tokens.py``: prompt tokenising (one special-token rule, the length check).
- ``timing.py``: wall-clock timing of a step's stages; ``notes.py``: the one-line warnings users must see.
- ``lora.py``: LoRA adapters through PEFT (the policy, its reference mode, merged weights).

It imports nothing from the rest of thinkrl (``tests/test_layers.py`` checks every layer's imports).
"""

from thinkrl.core.models import (
    DEMO_BASE_PATH,
    DEMO_MODEL,
    DTYPES,
    ModelLoadError,
    check_model_path,
    disable_dropout,
    load_model_and_tokenizer,
    looks_local,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
    seed_everything,
    weights_fingerprint,
)
from thinkrl.core.notes import warn
from thinkrl.core.timing import timed
from thinkrl.core.tokens import LengthError, adds_special_tokens, check_positions, prompt_token_ids

__all__ = [
    "DEMO_BASE_PATH",
    "DEMO_MODEL",
    "DTYPES",
    "LengthError",
    "ModelLoadError",
    "adds_special_tokens",
    "check_model_path",
    "check_positions",
    "disable_dropout",
    "load_model_and_tokenizer",
    "looks_local",
    "prompt_token_ids",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_path",
    "seed_everything",
    "timed",
    "warn",
    "weights_fingerprint",
]
