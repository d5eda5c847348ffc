"""A trainer state (step, data position, scheduler, optimizer, RNG states) as JSON plus safetensors: no pickle.

``torch.load`` of a pickled state runs whatever code the file names, so resuming a checkpoint someone handed
you would trust them with your shell. Here the structure goes to ``NAME.json`` (dicts, lists, numbers,
strings; tuples, int-keyed dicts and NumPy arrays tagged) and every tensor to ``NAME.safetensors``, read back
without executing anything. Floats round-trip exactly (JSON writes ``repr``), tensors bit for bit.

>>> import tempfile
>>> state = {"step": 3, "betas": (0.9, 0.999), "optimizer": {0: {"exp_avg": torch.ones(2)}}}
>>> folder = Path(tempfile.mkdtemp())
>>> write_state(folder, "trainer_state", state)
>>> back = read_state(folder, "trainer_state")
>>> back["betas"], back["optimizer"][0]["exp_avg"].tolist()
((0.9, 0.999), [1.0, 1.0])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

_TENSOR, _TUPLE, _ITEMS, _ARRAY = "__tensor__", "__tuple__", "__items__", "__ndarray__"


class StateFileError(ValueError):
    """A state file is unreadable or holds something a trainer state cannot hold; the message names it."""


def write_state(folder: Path, name: str, state: dict[str, Any]) -> None:
    """Write ``state`` as ``folder/name.json`` and ``folder/name.safetensors`` (tensors on the CPU)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    text = json.dumps(_encode(state, tensors, "state"))
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(text)


def read_state(folder: Path, name: str) -> dict[str, Any]:
    """The state :func:`write_state` wrote; a file that does not parse is a :class:`StateFileError`."""
    from safetensors.torch import load_file

    json_path, tensor_path = folder / f"{name}.json", folder / f"{name}.safetensors"
    try:
        tree = json.loads(json_path.read_text())
        tensors = load_file(str(tensor_path))
        return _decode(tree, tensors)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        if isinstance(e, StateFileError):
            raise
        raise StateFileError(
            f"{json_path} / {tensor_path.name} cannot be read ({type(e).__name__}: {e})"
        ) from None


def _encode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = (
            obj.detach().to("cpu").clone().contiguous()
        )  # its own storage: safetensors refuses shared
        return {_TENSOR: key}
    if isinstance(obj, np.ndarray):
        return {_ARRAY: obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {
            _ITEMS: [
                [_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")] for k, v in obj.items()
            ]
        }
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise StateFileError(
        f"{where} is a {type(obj).__name__}; a trainer state holds numbers, strings, tensors"
    )


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if _ARRAY in obj:
        return np.array(obj[_ARRAY], dtype=np.dtype(obj["dtype"]))
    if _TUPLE in obj:
        return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if _ITEMS in obj:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in obj[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)) or isinstance(key, torch.Tensor):
        raise StateFileError(f"a dict key decoded to a {type(key).__name__}")
    return key
