"""Checkpoints that resume exactly, are verified before use, and never leave a broken or foreign "latest".

Layout of ``RUN/checkpoints/step-000040/``:

- the policy as a plain Hugging Face folder (``model.safetensors``, ``config.json``, tokenizer files: loads with
  ``AutoModelForCausalLM.from_pretrained``);
- ``trainer_state.json`` + ``trainer_state.safetensors``: optimizer, scheduler, step, data position, every RNG
  state, the run's config identity (``state_file.py``: JSON and safetensors, nothing is unpickled);
- ``reference/`` once the KL reference was refreshed (before that it is the initial policy, ``model.path``);
- ``sharded/`` with ``train.fsdp`` (``fsdp.py``: every rank's model and optimizer shards);
- ``manifest.json``, written last: the run id, the step, and every file's size and SHA-256.

A checkpoint is written to ``step-000040.tmp``, its files synced, the manifest written atomically, then the
folder is renamed: a folder named ``step-N`` with a manifest is complete, and :func:`checkpoint_problem`
re-hashes its files before a resume trusts it (a flipped byte, a truncated or missing file is named). A
write that fails (a full disk) removes the staging folder and leaves every earlier checkpoint as it was.
``keep_last`` deletes only this run's checkpoints (manifest run id), oldest step first.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinkrl.train.state_file import read_state, write_state

STATE_NAME = "trainer_state"
STATE_FILES = (f"{STATE_NAME}.json", f"{STATE_NAME}.safetensors")
"""The trainer state's files (``pipeline`` exports a checkpoint without them)."""
MANIFEST = "manifest.json"
LATEST = "latest"
FORMAT = 2
"""Checkpoint format: 2 = manifest + JSON/safetensors state (1, before it: a pickled ``trainer_state.pt``)."""
_STEP_DIR = re.compile(r"step-(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or used; the message names the path, the problem and the fix."""


# ------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]  # JSON gives lists where random.setstate wants tuples
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a run resumed with fewer visible GPUs than it saved with restores the ones it has
        torch.cuda.set_rng_state_all(list(state["cuda"])[: torch.cuda.device_count()])


# ------------------------------------------------------------------------------------------------ write
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
    run_id: str = "",
) -> Path:
    """Write checkpoint ``step`` of run ``run_id`` atomically (module docstring), then delete all but this
    run's last ``keep_last``.

    ``staged``: :func:`staging_dir` already holds files of this checkpoint (FSDP shards); keep them.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = staging_dir(run_dir, step, clear=not staged)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if reference is not None:
            reference.save_pretrained(tmp / "reference", safe_serialization=True)
        write_state(tmp, STATE_NAME, {**trainer_state, "rng": rng_state()})
        write_manifest(tmp, step, run_id)
    except Exception as e:  # a full disk surfaces as OSError, or as safetensors' / torch's own errors
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(e, root, step) from e
    if final.exists():  # this run redoing a step after a resume replaces it; another run's is set aside
        if (read_manifest(final) or {}).get("run_id") == run_id:
            shutil.rmtree(final)
        else:
            set_aside(final, "other-run")
    os.replace(tmp, final)
    _fsync_dir(root)
    try:  # for people and scripts; resume reads the manifests, so a pointer the disk had no room for is harmless
        latest_tmp = root / (LATEST + ".tmp")
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, root / LATEST)
    except OSError:
        pass
    mine = [p for _, p in list_checkpoints(run_dir) if (read_manifest(p) or {}).get("run_id") == run_id]
    for old in mine[:-keep_last]:
        if old != final:
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


def write_manifest(folder: Path, step: int, run_id: str) -> None:
    """Hash (and sync) every file under ``folder``, then write ``manifest.json`` atomically: the last file."""
    files = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        with f.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            os.fsync(fh.fileno())
        files[f.relative_to(folder).as_posix()] = {"bytes": f.stat().st_size, "sha256": digest}
    manifest = {"format": FORMAT, "run_id": run_id, "step": step,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": files}  # fmt: skip
    tmp = folder / (MANIFEST + ".tmp")
    with tmp.open("w") as fh:
        fh.write(json.dumps(manifest, indent=1) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / MANIFEST)


def write_error(e: BaseException, root: Path, step: int) -> CheckpointError:
    """The sentence for a checkpoint write that failed: a full disk names the disk and its free space."""
    previous = [p for _, p in list_checkpoints(root.parent)]
    kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
    if is_disk_full(e):
        where = root if root.exists() else root.parent
        usage = shutil.disk_usage(where)
        return CheckpointError(
            f"no space left on the disk mounted at {mount_point(where)} while writing checkpoint step {step} to "
            f"{root} ({usage.free / 2**20:.1f} MiB free of {usage.total / 2**20:.0f} MiB); {kept}. Free space "
            "there (or lower train.keep_last), or move the run to a larger disk (train.output_dir), then rerun "
            "with --resume"
        )
    return CheckpointError(
        f"writing checkpoint step {step} to {root} failed ({type(e).__name__}: {e}); {kept}; fix the cause and "
        "rerun with --resume"
    )


def is_disk_full(e: BaseException | None) -> bool:
    """Whether ``e`` (or what caused it) says the disk or quota is full; libraries that wrap the OSError
    (safetensors, torch's zip writer) keep only its text."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if any(s in text for s in ("No space left", "os error 28", "StorageFull", "Disk quota exceeded")):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path``."""
    p = Path(os.path.realpath(path))
    while not os.path.ismount(p):
        p = p.parent
    return p


def set_aside(path: Path, tag: str) -> Path:
    """Rename ``path`` to ``path.TAG`` (``.TAG-2``, ... when taken), never deleting it; returns the new path."""
    target, n = path.with_name(f"{path.name}.{tag}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{tag}-{n}")
    os.replace(path, target)
    return target


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------- read
def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoints/step-N`` folder (complete or not), by step."""
    root = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("step-*") if (m := _STEP_DIR.fullmatch(p.name))]
    return sorted(p for p in found if p[1].is_dir())


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A checkpoint's manifest, or None when it has none (or it does not parse)."""
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (one with a manifest) of a run, or None; :func:`checkpoint_problem`
    verifies its files."""
    done = [p for _, p in list_checkpoints(run_dir) if (p / MANIFEST).is_file()]
    return done[-1] if done else None


def checkpoint_problem(path: Path) -> str | None:
    """None when every file of checkpoint ``path`` has the size and SHA-256 its manifest lists, else what is
    wrong (a sentence fragment naming the file)."""
    manifest = read_manifest(path)
    if manifest is None:
        if (path / "trainer_state.pt").exists():
            return (
                "it has the format of thinkrl before checkpoint manifests (a pickled trainer_state.pt, which is "
                "not loaded: unpickling runs code); its weights still load as a model folder (model.path)"
            )
        return (
            "it has no readable manifest.json (its write was interrupted, or it is not a thinkrl checkpoint)"
        )
    for name, info in manifest["files"].items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        size = f.stat().st_size
        if size != info.get("bytes"):
            return f"{name} has {size} bytes, the manifest says {info.get('bytes')} (truncated or replaced)"
        with f.open("rb") as fh:
            if hashlib.file_digest(fh, "sha256").hexdigest() != info.get("sha256"):
                return f"{name} does not match its checksum in the manifest (corrupted)"
    for name in STATE_FILES:
        if name not in manifest["files"]:
            return f"its manifest lists no {name}"
    return None


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """The trainer state of checkpoint ``path`` (JSON + safetensors; no code runs while reading it)."""
    return read_state(Path(path), STATE_NAME)


# ---------------------------------------------------------------------------------------------- weights
def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a checkpoint folder's weights into ``model`` in place, through the model's own key mapping
    (:func:`read_model_weights`); a missing or unexpected weight is an error naming them (a weight tied to
    one that is present, such as a tied ``lm_head``, is saved once and may be absent)."""
    weights = read_model_weights(model, path)
    own = model.state_dict()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    present = {own[k].data_ptr() for k in weights if k in own}
    missing = [k for k in missing if own[k].data_ptr() not in present]
    if unexpected or missing:
        raise CheckpointError(
            f"checkpoint {path} does not match the model ({type(model).__name__}): missing {missing}, unexpected "
            f"{unexpected}; resume with the model.path the run started from"
        )


def read_model_weights(model: torch.nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a Hugging Face folder under ``model``'s own state-dict keys.

    ``save_pretrained`` writes some architectures under other names than their modules' (transformers' weight
    conversions: GPT-NeoX's ``lm_head`` is saved as ``embed_out``), so the file keys are mapped back the way
    ``save_pretrained`` mapped them; a conversion that is more than a rename (fused experts) is undone by
    loading the folder with the model class's own ``from_pretrained``.
    """
    weights = read_weights(path)
    own = model.state_dict()
    if set(weights) <= set(own) or not hasattr(model, "config"):
        return weights
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers < 5 loads and saves under the module names
        return weights
    saved = revert_weight_conversion(model, dict(own))  # model key -> file key, tensor by tensor
    model_key = {id(t): k for k, t in own.items()}
    if all(id(t) in model_key for t in saved.values()):
        rename = {file_key: model_key[id(t)] for file_key, t in saved.items()}
        return {rename.get(k, k): v for k, v in weights.items()}
    dtype = next(iter(own.values())).dtype
    return type(model).from_pretrained(path, config=model.config, dtype=dtype).state_dict()


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face folder's ``model*.safetensors`` files, on CPU, under the file keys."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for f in sorted(Path(path).glob("model*.safetensors")):
        weights.update(load_file(str(f)))
    if not weights:
        raise CheckpointError(f"no model*.safetensors in {path}; it is not a checkpoint or model folder")
    return weights
