"""Model and tokenizer loading, the device and dtype rules, seeding: what every command shares.

    model, tokenizer = load_model_and_tokenizer("demo", dtype="auto", device="cpu")

One rule for each choice, so ``thinkrl train``, ``thinkrl eval``, ``thinkrl sample`` and the pipeline load the
same weights the same way: :func:`resolve_model_path` (``demo`` is the built-in base model),
:func:`resolve_device` (``auto`` = CUDA when visible) and :func:`resolve_dtype` (``auto`` = bfloat16 on a CUDA
device that supports it, else float32).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEMO_MODEL = "demo"
"""The model name that stands for thinkrl's built-in tiny base model (``model.path=demo``)."""
DEMO_BASE_PATH = Path(__file__).resolve().parent.parent / "assets" / "demo-base"
"""Where the shipped demo base checkpoint lives (``thinkrl pretrain --out`` rebuilds it)."""
DTYPES = ("float32", "bfloat16", "float16")
"""Parameter dtypes a model may be loaded in (besides ``auto``)."""


def resolve_model_path(path: str) -> str:
    """The folder or hub name to load: ``demo`` becomes the built-in base model's folder.

    >>> resolve_model_path("Qwen/Qwen2.5-0.5B")
    'Qwen/Qwen2.5-0.5B'
    >>> resolve_model_path("demo") == str(DEMO_BASE_PATH)
    True
    """
    if not path:
        raise ValueError("the model path is empty; set it to a Hugging Face model folder or name, or `demo`")
    return str(DEMO_BASE_PATH) if path == DEMO_MODEL else str(path)


class ModelLoadError(ValueError):
    """A model path names nothing loadable; the message says what is there and what to pass instead."""


def looks_local(path: str) -> bool:
    """Whether a model name is meant as a local path: then it must exist, and it is never sent to the hub.

    A hub name is ``org/name`` (or ``name``); a path starts with ``/``, ``.`` or ``~``, has more than one
    ``/``, or its first part is a folder here (``runs/grpo`` when ``runs/`` exists).

    >>> looks_local("Qwen/Qwen2.5-0.5B"), looks_local("./ckpt"), looks_local("/models/x"), looks_local("a/b/c")
    (False, True, True, True)
    """
    if path.startswith(("/", ".", "~")) or path.endswith("/") or "\\" in path:
        return True
    parts = path.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def check_model_path(path: str, what: str = "model") -> str:
    """``path`` when it is a model folder or a hub name; a :class:`ModelLoadError` that says what to pass when
    it is a folder without ``config.json``, a file, or a local-looking path that does not exist."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return str(p)
    if p.is_dir():
        steps = sorted(p.glob("checkpoints/step-*/config.json")) or sorted(p.glob("*/config.json"))
        hint = (
            f"it looks like a run folder; pass one of its checkpoints, e.g. {steps[-1].parent}"
            if steps
            else "pass a folder written by save_pretrained (config.json and model*.safetensors), a hub name, or demo"
        )
        raise ModelLoadError(
            f"{what} path {path} is a folder but not a model (it has no config.json); {hint}"
        )
    if p.exists():
        raise ModelLoadError(
            f"{what} path {path} is a file; pass the folder that holds config.json and the weights"
        )
    if looks_local(path):
        raise ModelLoadError(
            f"{what} path {path!r} does not exist (relative to {Path.cwd()}); it looks like a local path, so it is not "
            "looked up on the Hugging Face hub. Check the spelling; a hub name looks like org/name"
        )
    return path


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA when a device is visible, else the CPU; any other torch device name as given.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but no CUDA device is visible; use cpu or auto")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, else float32; or one of :data:`DTYPES`.

    >>> resolve_dtype("auto", torch.device("cpu")), resolve_dtype("bfloat16", torch.device("cpu"))
    (torch.float32, torch.bfloat16)
    """
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}; valid: auto, {', '.join(DTYPES)}")
    return getattr(torch, name)


def load_model_and_tokenizer(
    path: str,
    *,
    dtype: str = "auto",
    device: str | torch.device | None = None,
    tokenizer_path: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> tuple[torch.nn.Module, Any]:
    """``AutoModelForCausalLM`` and ``AutoTokenizer`` from a folder, a hub name or ``demo``.

    The model is loaded in :func:`resolve_dtype` ``(dtype, device)`` and moved to ``device`` when one is given
    (None leaves it where ``from_pretrained`` put it: the CPU). ``tokenizer_path`` defaults to ``path``.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = check_model_path(resolve_model_path(path))
    tok_path = check_model_path(resolve_model_path(tokenizer_path), "tokenizer") if tokenizer_path else path
    target = resolve_device(device) if device is not None else torch.device("cpu")
    # transformers >= 4.56 calls it dtype; older versions torch_dtype.
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kwargs: dict[str, Any] = {
        "dtype" if (major, minor) >= (4, 56) else "torch_dtype": resolve_dtype(dtype, target),
        "trust_remote_code": trust_remote_code,
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with _loading(path, "model"):
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device is not None:
        model = model.to(target)
    with _loading(tok_path, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(tok_path, trust_remote_code=trust_remote_code)
    return model, tokenizer


@contextlib.contextmanager
def _loading(path: str, what: str) -> Iterator[None]:
    """Turn a transformers loading failure into one sentence naming the path (the cause stays chained)."""
    try:
        yield
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        where = "the folder" if Path(path).is_dir() else "the Hugging Face hub"
        raise ModelLoadError(
            f"could not load the {what} {path!r} from {where}: {first}. Check the path or name (a local path must "
            "exist; a hub name needs network access or a cached copy), or pass a folder written by save_pretrained"
        ) from e


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in ``model`` (modules and attention-dropout config fields) to 0.

    >>> m = torch.nn.Sequential(torch.nn.Dropout(0.1)); disable_dropout(m); m[0].p
    0.0
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "attn_pdrop", "hidden_dropout", "resid_pdrop", "embd_pdrop", "dropout"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)
    for module in model.modules():  # attention layers that copied the rate at construction
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash that tells one model's weights from another's (evaluation caches are keyed by it).

    Per parameter and buffer: its name, shape, dtype, float64 sum and up to 4096 evenly strided elements.
    One pass over the weights at memory speed instead of hashing every byte; two models that differ only in
    unsampled elements and have equal sums to float64 precision would collide, which training never produces.

    >>> a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    >>> weights_fingerprint(a) == weights_fingerprint(a), weights_fingerprint(a) == weights_fingerprint(b)
    (True, False)
    """
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        # parameters and buffers, not state_dict(): that reshards a gathered FSDP model, whose next forward
        # would then be a collective on the evaluating rank alone
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            t = t.to_local() if hasattr(t, "to_local") else t  # a sharded (FSDP) tensor: this rank's shard
            flat = t.detach().reshape(-1)
            # a copy: numpy must not hold the parameter's own storage (FSDP frees and resizes it)
            sample = flat[:: max(1, flat.numel() // 4096)].to("cpu", torch.float32, copy=True)
            total = float(flat.sum(dtype=torch.float64)) if flat.is_floating_point() else float(flat.sum())
            digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|{total!r}|".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
