"""Built-in tasks addressable as ``builtin:NAME`` in ``data.train`` / ``data.eval``."""

from __future__ import annotations

from typing import Any


def builtin_rows(name: str, split: str) -> list[dict[str, Any]]:
    """Rows of a built-in task; ``split`` is ``train`` or ``test`` (held out, disjoint from train)."""
    if name == "demo":
        from thinkrl.demo.task import task_rows

        return task_rows(split)
    raise ValueError(f"unknown built-in dataset {name!r}; valid: demo")
