#!/usr/bin/env bash
# Create .venv-trl: the virtual environment TRL's side of benchmarks/bench_trl.py runs in.
#
#   bash benchmarks/setup_trl.sh          (from the repository root; idempotent)
#
# torch==2.13.0 is installed FIRST: it is the local CPU wheel (/opt/wheels on the build machine, else the PyPI
# CPU wheel); installing trl first would let pip pick a CUDA torch and download gigabytes. trl is then installed
# with torch pinned again, so the resolver can never swap it. transformers is pinned to the version in thinkrl's
# .venv when that exists, so both sides run the very same Qwen2 modelling code.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=.venv-trl
TORCH=torch==2.13.0
TRL=trl==1.16.0

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "$TORCH"

pins=("$TORCH")
if [ -x .venv/bin/python ]; then
    tv=$(.venv/bin/python -c 'import transformers; print(transformers.__version__)' 2>/dev/null || true)
    [ -n "$tv" ] && pins+=("transformers==$tv")
fi
"$VENV/bin/python" -m pip install -q "$TRL" "${pins[@]}"

# Check that nothing replaced the CPU torch (a CUDA build would say e.g. 2.13.0+cu128).
"$VENV/bin/python" -m pip list 2>/dev/null | grep -E '^(torch|trl|transformers|accelerate|datasets) '
"$VENV/bin/python" - <<'EOF'
import torch
import trl

assert torch.__version__.startswith("2.13.0") and "+cu" not in torch.__version__, torch.__version__
print(f"ok: torch {torch.__version__}, trl {trl.__version__}")
EOF
