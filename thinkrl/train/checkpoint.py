"""Checkpoints that resume exactly and never leave a broken "latest".

Layout of ``RUN/checkpoints/step-000040/``: the policy as a plain Hugging Face folder (``model.safetensors``,
``config.json``, tokenizer files: loads with ``AutoModelForCausalLM.from_pretrained``), ``trainer_state.pt``
(optimizer, scheduler, step, data position, every RNG state) and, when the reference was refreshed,
``reference/``. A checkpoint is written to ``step-000040.tmp`` and renamed when complete; ``latest`` is a
text file replaced atomically after the rename, so a kill at any moment leaves the previous one usable.

With ``train.fsdp`` the optimizer state is not in ``trainer_state.pt``: every rank writes its shards of the
model and optimizer to ``sharded/`` (``torch.distributed.checkpoint``), see ``thinkrl/train/fsdp.py``; the
Hugging Face folder is the same.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
LATEST = "latest"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a run resumed with fewer visible GPUs than it saved with restores the ones it has
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    *,
    reference: torch.nn.Module | None = None,
    keep_last: int = 2,
    staged: bool = False,
) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, delete all but the last ``keep_last``.

    ``staged``: :func:`staging_dir` already holds files of this checkpoint (FSDP shards); keep them.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = staging_dir(run_dir, step, clear=not staged)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if reference is not None:
        reference.save_pretrained(tmp / "reference", safe_serialization=True)
    torch.save({**trainer_state, "rng": rng_state()}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / (LATEST + ".tmp")
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / LATEST)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))[
        :-keep_last
    ]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def staging_dir(run_dir: str | Path, step: int, *, clear: bool = False) -> Path:
    """``checkpoints/step-N.tmp``, where checkpoint ``step`` is written before its rename (created; emptied
    first with ``clear``)."""
    tmp = Path(run_dir) / "checkpoints" / f"step-{step:06d}.tmp"
    if clear:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if (path / STATE_FILE).exists():
            return path
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a checkpoint folder's safetensors weights into ``model`` in place; a mismatch is an error
    (a tied ``lm_head`` is saved once, so its absence is expected)."""
    missing, unexpected = model.load_state_dict(read_weights(path), strict=False)
    if unexpected or any("lm_head" not in k for k in missing):
        raise RuntimeError(
            f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}"
        )


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face folder's ``model*.safetensors`` files, on CPU."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for f in sorted(Path(path).glob("model*.safetensors")):
        weights.update(load_file(str(f)))
    if not weights:
        raise FileNotFoundError(f"no model*.safetensors in {path}")
    return weights


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    # weights_only=False: the state holds numpy RNG tuples; the file is our own, written by save_checkpoint.
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
