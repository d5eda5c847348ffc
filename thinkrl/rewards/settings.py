"""Grading settings (the config's ``grading`` section): validation, and what each built-in reward is given.

The fields themselves are documented where they are defined, in ``thinkrl.config.GradingConfig`` and
``SandboxConfig``; this module only reads them, so any object with those attributes works.

>>> from thinkrl.config import GradingConfig
>>> validate_grading(GradingConfig(on_timeout="skip"))
Traceback (most recent call last):
...
thinkrl.config.loading.ConfigError: grading.on_timeout='skip'; valid: zero, none
"""

from __future__ import annotations

import threading
from typing import Any

from thinkrl.rewards.sandbox import BACKENDS, Sandbox, SandboxLimits

ON_TIMEOUT = {"zero": 0.0, "none": None}
ON_ERROR = ("raise", "zero", "none")
_SANDBOXES: dict[tuple[str, bool], Sandbox] = {}
_LOCK = threading.Lock()


def default_grading() -> Any:
    from thinkrl.config import GradingConfig

    return GradingConfig()


def validate_grading(g: Any) -> None:
    """ConfigError naming the field and the fix for a bad value in the ``grading`` section."""
    from thinkrl.config import ConfigError

    checks = [
        (g.timeout_s > 0, f"grading.timeout_s={g.timeout_s} must be > 0 (seconds per call of a custom reward)"),
        (g.on_timeout in ON_TIMEOUT, f"grading.on_timeout={g.on_timeout!r}; valid: {', '.join(ON_TIMEOUT)}"),
        (g.on_error in ON_ERROR, f"grading.on_error={g.on_error!r}; valid: {', '.join(ON_ERROR)}"),
        (g.rows_per_call >= 0, f"grading.rows_per_call={g.rows_per_call} must be >= 0 (0 = whole batch)"),
        (g.workers >= 1, f"grading.workers={g.workers} must be >= 1"),
        (g.math_timeout_s > 0, f"grading.math_timeout_s={g.math_timeout_s} must be > 0"),
        (g.sandbox.backend in BACKENDS, f"grading.sandbox.backend={g.sandbox.backend!r}; valid: {', '.join(BACKENDS)}"),
        (g.sandbox.wall_s > 0, f"grading.sandbox.wall_s={g.sandbox.wall_s} must be > 0"),
        (g.sandbox.memory_mb >= 64, f"grading.sandbox.memory_mb={g.sandbox.memory_mb} must be >= 64 (Python needs it)"),
    ]  # fmt: skip
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def sandbox_for(g: Any) -> Sandbox:
    """The process's sandbox for this policy (one per backend/opt-in pair, so each is probed once)."""
    key = (g.sandbox.backend, bool(g.sandbox.allow_unisolated))
    with _LOCK:
        if key not in _SANDBOXES:
            _SANDBOXES[key] = Sandbox(*key)
        return _SANDBOXES[key]


def bound_settings(name: str, g: Any) -> dict[str, Any]:
    """Keyword arguments that built-in reward ``name`` takes from the grading settings."""
    math = {"math_timeout_s": g.math_timeout_s, "math_workers": g.workers}
    limits = SandboxLimits(
        wall_s=g.sandbox.wall_s, cpu_s=max(1, int(g.sandbox.wall_s)), memory_mb=g.sandbox.memory_mb
    )
    code = {"code_limits": limits, "code_sandbox": sandbox_for(g), "code_workers": g.workers}
    return {"accuracy": math, "code": code, "code_partial": code, "routed": {**math, **code}}.get(name, {})
