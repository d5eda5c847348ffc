"""The ``rewards`` and ``grading`` sections: which rewards, and the time bounds and sandbox they run under."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardSpec:
    name: str = "accuracy"
    """A name from ``thinkrl.rewards.REWARDS`` (e.g. accuracy, format, countdown, code, language_consistency)
    or ``thinkrl.rewards.REWARD_FACTORIES`` (``reward_model``), or your own ``module:function`` (or
    ``path/file.py:function``), which runs in worker processes under ``grading.timeout_s``."""
    weight: float = 1.0
    """Weight of this reward in the sum that forms each completion's reward."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Arguments of a reward that is built, e.g. ``{path: /models/rm, score_on: answer}`` for ``reward_model``
    (docs/rewards.md lists them); plain rewards take none and reject any."""


@dataclass
class SandboxConfig:
    backend: str = "auto"
    """Where code rewards run model-written programs: ``auto`` (Linux namespaces: directly as root, through
    unprivileged user namespaces otherwise; else bubblewrap), ``namespaces`` or ``bubblewrap`` only."""
    allow_unisolated: bool = False
    """Run programs WITHOUT isolation when no backend works, instead of refusing at start. Only time, memory,
    file-size limits and a stripped environment remain: the program can read the host's files and reach the
    network. Warned about at every step and recorded; see docs/rewards.md."""
    wall_s: float = 10.0
    """Wall-clock seconds one program run may take; it is then killed with everything it started."""
    memory_mb: int = 512
    """Address space of each process of a program run (RLIMIT_AS)."""


@dataclass
class GradingConfig:
    timeout_s: float = 60.0
    """Wall-clock limit of one call of a custom reward function (a Python callable or ``module:function``) on
    ``rows_per_call`` rows, in a worker process; past it the worker is killed and the rows score
    ``on_timeout``. Built-in rewards carry their own limits (``math_timeout_s``, ``sandbox.wall_s``)."""
    on_timeout: str = "zero"
    """Score of a row whose custom reward timed out or whose worker died: ``zero`` or ``none`` (not
    applicable: left out of that reward's mean). Counted in ``reward/timeouts/<name>`` either way."""
    on_error: str = "raise"
    """When a custom reward raises: ``raise`` (stop, naming the function and row), or score the rows
    ``zero`` / ``none`` and count them in ``reward/errors/<name>``."""
    rows_per_call: int = 8
    """Rows per call of a custom reward (a hung call costs these rows); 0 = the whole batch in one call, for
    functions that compare rows with each other."""
    workers: int = 2
    """Processes that grade at once: custom-reward workers, math-verify checks and sandboxed programs."""
    math_timeout_s: float = 5.0
    """Wall-clock limit of one math-verify check; a hung check scores 0 and costs this once, in parallel with
    other hung checks (counted in ``reward/timeouts/<name>``)."""
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    """Isolation of code rewards."""
