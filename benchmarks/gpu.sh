#!/usr/bin/env bash
# thinkrl vs TRL 1.16 on a CUDA GPU: the same side-by-side GRPO comparison as bench_trl.py on CPU.
#
#   bash benchmarks/gpu.sh                  # from the repository root, on a machine with an NVIDIA GPU
#   DRY_RUN=1 bash benchmarks/gpu.sh        # print what it would run (works anywhere; tested on CPU)
#
# STATUS: UNRUN. This project has no GPU; the script was written against bench_trl.py's CPU path, which it
# reuses unchanged apart from --device cuda / --autocast bf16. Its CPU-side logic (the flags reaching both
# workers, the dry run) is tested in tests/test_speed_paths.py; nothing here has touched a GPU yet.
#
# 1. Set-up, once (not timed; downloads a CUDA torch, ~2.5 GB): one venv, .venv-gpu, holding thinkrl, the
#    default (CUDA) torch wheel, trl 1.16.0 and the transformers version thinkrl was tested with. Both
#    frameworks run from it (bench_trl.py's THINKRL_PYTHON / TRL_PYTHON).
# 2. The comparison (target: under 5 minutes on one recent GPU): 4M and 30M params x 64 and 256 tokens,
#    8 prompts x G=8, bf16 autocast on both sides (thinkrl train.autocast=bf16, TRL bf16=True), 1 warm-up +
#    3 measured steps, each worker capped at WORKER_TIMEOUT seconds. Prints bench_trl.py's tables; the JSON
#    goes to $OUT_JSON.
#
# Settings (environment): CONFIGS, STEPS, AUTOCAST (bf16|none), WORKER_TIMEOUT, OUT_JSON, PY (python >= 3.10).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv-gpu}
CONFIGS=${CONFIGS:-4M/64,4M/256,30M/64,30M/256}
STEPS=${STEPS:-3}
AUTOCAST=${AUTOCAST:-bf16}
WORKER_TIMEOUT=${WORKER_TIMEOUT:-150}
OUT_JSON=${OUT_JSON:-benchmarks/gpu_results.json}
TRANSFORMERS=${TRANSFORMERS:-transformers==5.24.0}  # the version thinkrl's CPU venv runs (RESULTS.md)

run() {  # echo, then run unless DRY_RUN
    echo "+ $*"
    if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}

if [ -z "${DRY_RUN:-}" ]; then
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
if [ ! -x "$VENV/bin/python" ]; then
    run "$PY" -m venv "$VENV"
    run "$VENV/bin/python" -m pip install -q torch          # PyPI's default Linux wheel is the CUDA build
    run "$VENV/bin/python" -m pip install -q -e . "trl==1.16.0" "$TRANSFORMERS"
fi
if [ -z "${DRY_RUN:-}" ]; then
    "$VENV/bin/python" -c 'import torch, trl; assert torch.cuda.is_available(), "no CUDA device visible"; \
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, trl {trl.__version__}")'
fi

start=$(date +%s)
run env THINKRL_PYTHON="$VENV/bin/python" TRL_PYTHON="$VENV/bin/python" \
    "$VENV/bin/python" benchmarks/bench_trl.py --device cuda --autocast "$AUTOCAST" --configs "$CONFIGS" \
    --steps "$STEPS" --warmup 1 --threads 4 --timeout "$WORKER_TIMEOUT" --json-out "$OUT_JSON"
echo "comparison took $(( $(date +%s) - start )) s (target < 300 s); results in $OUT_JSON"
