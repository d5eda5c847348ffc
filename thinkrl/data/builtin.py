"""Built-in tasks addressable as ``builtin:NAME`` in ``data.train`` / ``data.eval``."""

from __future__ import annotations

from typing import Any

from thinkrl.data.addition import split_rows

BUILTIN = ("demo", "multiply")


def builtin_rows(name: str, split: str) -> list[dict[str, Any]]:
    """Rows of a built-in task; ``split`` is ``train`` or ``test`` (held out, disjoint from train).

    ``demo``: add four one-digit numbers ("what is 3 plus 5 plus 8 plus 6" -> "22"), see ``thinkrl.data.addition``.
    ``multiply``: multiply two three-digit numbers (the tools demo), see ``thinkrl.data.multiplication``.
    """
    if name in BUILTIN:
        if name == "demo":
            train, held = split_rows(seed=0)
        else:
            from thinkrl.data.multiplication import split_rows as multiply_rows

            train, held = multiply_rows(seed=0)
        if split not in ("train", "test"):
            raise ValueError(f"builtin:{name} has splits 'train' and 'test', not {split!r}")
        return train if split == "train" else held
    raise ValueError(f"unknown built-in dataset {name!r}; valid: {', '.join(BUILTIN)}")
