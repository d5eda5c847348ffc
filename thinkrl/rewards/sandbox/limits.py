"""The values a sandboxed run is described by: its limits, its result, the backend it runs on."""

from __future__ import annotations

from dataclasses import dataclass, field


class SandboxError(RuntimeError):
    """The sandbox itself failed to start a run (not the program's fault)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    wall_s: float = 10.0
    """Wall-clock seconds before the whole run is killed."""
    cpu_s: int = 5
    """CPU seconds per process (RLIMIT_CPU)."""
    memory_mb: int = 512
    """Address space per process (RLIMIT_AS)."""
    file_mb: int = 16
    """Largest file any process may write, stdout and stderr included (RLIMIT_FSIZE)."""
    disk_mb: int = 64
    """Size of the run's private /tmp (a tmpfs); all files together."""
    nproc: int = 16
    """Processes the run may have (RLIMIT_NPROC, counted in the run's own uid or user namespace). Memory is
    limited per process, so ``nproc * memory_mb`` bounds a run's memory."""
    output_bytes: int = 1 << 20
    """stdout/stderr/results bytes read back."""


@dataclass
class SandboxResult:
    """What one run did."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float
    results: list[str] = field(default_factory=list)
    """Lines the run wrote on its results channel (function-call tests); see ``_boot.py``."""


@dataclass(frozen=True)
class Backend:
    """A way to run programs: which isolation, with which interpreter."""

    name: str  # namespaces | bubblewrap | unisolated
    interpreter: str
    userns: bool = False
    bwrap: str | None = None
