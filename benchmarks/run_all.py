"""``make bench``: every benchmark, each in its own subprocess, outputs printed as they arrive.

    .venv/bin/python benchmarks/run_all.py

1. ``bench_trl.py --quick``: thinkrl vs TRL's GRPOTrainer (4M params, 64-token completions); creates
   ``.venv-trl`` with ``setup_trl.sh`` first when it is missing.
2. ``bench_generate.py``, ``bench_rewards.py`` and ``bench_lora_memory.py`` (~25 s of CPU), when present.

Exit status: 0 when every benchmark that ran succeeded, else 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(cmd: list[str]) -> int:
    """Run ``cmd`` from the repository root, streaming its output; return its exit status."""
    print(
        f"\n=== {' '.join(cmd)}  (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True
    )
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"=== exit {rc} after {time.perf_counter() - start:.0f} s", flush=True)
    return rc


def main() -> int:
    python = sys.executable
    failures = 0
    if not (ROOT / ".venv-trl" / "bin" / "python").exists():
        failures += run(["bash", str(HERE / "setup_trl.sh")]) != 0
    failures += run([python, str(HERE / "bench_trl.py"), "--quick"]) != 0
    for name in ("bench_generate.py", "bench_rewards.py", "bench_lora_memory.py"):
        if (HERE / name).exists():
            failures += run([python, str(HERE / name)]) != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
