#!/usr/bin/env bash
# thinkrl vs TRL 1.16 on a CUDA GPU: the same side-by-side GRPO comparison as bench_trl.py on CPU.
#
#   bash benchmarks/gpu.sh                  # from the repository root, on a machine with an NVIDIA GPU
#   DRY_RUN=1 bash benchmarks/gpu.sh        # print what it would run (works anywhere; tested on CPU)
#
# STATUS: UNRUN. This project has no GPU; the script was written against bench_trl.py's CPU path, which it
# reuses unchanged apart from --device cuda / --autocast bf16. Its CPU-side logic (the flags reaching both
# workers, the dry run) is tested in tests/test_speed_paths.py; nothing here has touched a GPU yet. Its
# VENV=none path ran end to end (DEVICE=cpu) inside benchmarks/gpu_offline.sh's CPU rehearsal.
#
# 1. Set-up, once (not timed; downloads a CUDA torch, ~2.5 GB): one venv, .venv-gpu, holding thinkrl, the
#    default (CUDA) torch wheel, trl 1.16.0 and the transformers version thinkrl was tested with. Both
#    frameworks run from it (bench_trl.py's THINKRL_PYTHON / TRL_PYTHON).
# 2. The comparison (target: under 5 minutes on one recent GPU): 4M and 30M params x 64 and 256 tokens,
#    8 prompts x G=8, bf16 autocast on both sides (thinkrl train.autocast=bf16, TRL bf16=True), 1 warm-up +
#    3 measured steps, each worker capped at WORKER_TIMEOUT seconds. Prints bench_trl.py's tables; the JSON
#    goes to $OUT_JSON.
#
# Settings (environment): CONFIGS, STEPS, AUTOCAST (bf16|none), WORKER_TIMEOUT, OUT_JSON, PY (python >= 3.10),
# FRAMEWORKS (default thinkrl,trl), EXTRA_ARGS (more bench_trl.py flags, split on spaces), VENV, THREADS (4),
# DEVICE (cuda; cpu only to rehearse this script on a machine without a GPU, with AUTOCAST=none).
#
#   VENV=none PY=python3 bash benchmarks/gpu.sh     # no venv, no installs: $PY (which already has a CUDA torch,
#                                                    # thinkrl's dependencies and trl, e.g. via PYTHONPATH) runs
#                                                    # both frameworks; the sanity check and the comparison still run
#   EXTRA_ARGS="--thinkrl-set rollout.x=y" FRAMEWORKS=thinkrl bash benchmarks/gpu.sh
#   bash benchmarks/gpu.sh --thinkrl-set train.fused_lm_head=false   # arguments are passed on to bench_trl.py
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv-gpu}
CONFIGS=${CONFIGS:-4M/64,4M/256,30M/64,30M/256}
STEPS=${STEPS:-3}
AUTOCAST=${AUTOCAST:-bf16}
WORKER_TIMEOUT=${WORKER_TIMEOUT:-150}
OUT_JSON=${OUT_JSON:-benchmarks/gpu_results.json}
FRAMEWORKS=${FRAMEWORKS:-thinkrl,trl}
DEVICE=${DEVICE:-cuda}
THREADS=${THREADS:-4}
EXTRA_ARGS=${EXTRA_ARGS:-}
TRANSFORMERS=${TRANSFORMERS:-transformers==5.24.0}  # the version thinkrl's CPU venv runs (RESULTS.md)

run() {  # echo, then run unless DRY_RUN
    echo "+ $*"
    if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}

if [ -z "${DRY_RUN:-}" ]; then
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
fi
if [ "$VENV" = none ]; then  # an existing python: no venv, no installs
    case "$PY" in
        */*) VPY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;;  # absolute: bench_trl.py checks it exists
        *) VPY=$(command -v "$PY" || echo "$PY") ;;
    esac
    echo "VENV=none: using $VPY for everything (no venv created, nothing installed)"
else
    VPY=$VENV/bin/python
    if [ ! -x "$VPY" ]; then
        run "$PY" -m venv "$VENV"
        run "$VPY" -m pip install -q torch          # PyPI's default Linux wheel is the CUDA build
        run "$VPY" -m pip install -q -e . "trl==1.16.0" "$TRANSFORMERS"
    fi
fi
if [ -z "${DRY_RUN:-}" ]; then
    if [[ ",$FRAMEWORKS," == *,trl,* ]]; then check_trl='import trl; v = trl.__version__'; else check_trl='v = "not needed"'; fi
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$VPY" -c "import torch, thinkrl; $check_trl
cuda = '$DEVICE' == 'cuda'
assert torch.cuda.is_available() or not cuda, 'no CUDA device visible'
print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name() if cuda else \"cpu\"}, trl {v}')"
fi

start=$(date +%s)
# shellcheck disable=SC2086  # EXTRA_ARGS is split on spaces on purpose
run env THINKRL_PYTHON="$VPY" TRL_PYTHON="$VPY" \
    "$VPY" benchmarks/bench_trl.py --device "$DEVICE" --autocast "$AUTOCAST" --configs "$CONFIGS" \
    --frameworks "$FRAMEWORKS" --steps "$STEPS" --warmup 1 --threads "$THREADS" --timeout "$WORKER_TIMEOUT" \
    --json-out "$OUT_JSON" $EXTRA_ARGS "$@"
echo "comparison took $(( $(date +%s) - start )) s (target < 300 s); results in $OUT_JSON"
