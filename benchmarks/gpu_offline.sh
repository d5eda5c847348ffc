#!/usr/bin/env bash
# The GPU comparison (benchmarks/gpu.sh) plus a CUDA check of the decode paths, for a GPU machine that cannot
# reach a package index (a cluster node, a sealed VM): its python3 must already hold a CUDA torch; everything else
# thinkrl and TRL need travels as wheels in .whl/ (fetch them on a connected machine with
# `bash benchmarks/gpu_wheels.sh`, then copy the repository over).
#
#   bash benchmarks/gpu_offline.sh                                   # from the repository root, on the GPU machine
#   THINKRL_EXTRA_SET="rollout.cuda_graph=true" bash benchmarks/gpu_offline.sh   # + thinkrl again with overrides
#
# STATUS: rehearsed, not run on a GPU. The whole script ran end to end on this project's 2-core CPU machine with
# DEVICE=cpu inside a Python 3.12 venv holding torch 2.11.0+cu130 (on CPU), transformers 5.17 etc. as on the GPU
# image it was written for, then the wheels installed exactly as below (see benchmarks/NOTES.md section 6).
#
# Phases, each under its own `timeout`, all under one overall deadline (TOTAL_S, default 500 s, so the script
# ends well inside 9 minutes even if everything hangs):
#   0) setup: nvidia-smi, wheels from .whl/ installed with --target $SITE (PYTHONPATH), versions, import thinkrl
#   t) tests/test_lean.py: thinkrl's decode step (eager and CUDA graph) against the model's forward, on CUDA
#   b) compare: VENV=none benchmarks/gpu.sh, thinkrl vs TRL, $CONFIGS, $STEPS measured steps
#   c) extra: only if THINKRL_EXTRA_SET is set (space-separated KEY=VALUE list): thinkrl alone again with
#      --thinkrl-set KEY=VALUE for each, on $EXTRA_CONFIGS
#   a) smoke: a tiny `python3 -m thinkrl train` (demo model, builtin:demo data, 3 steps) on $DEVICE
# Files in $OUT (default /tmp/out; at most 8): run.log (everything), test_lean.log, compare.log,
# gpu_results.json, extra.log, gpu_results_extra.json, smoke.log, smoke_metrics.jsonl.
#
# Rehearsal on a machine without a GPU (what was run):
#   DEVICE=cpu PY=/tmp/devsim/bin/python SITE=/tmp/devsim-site OUT=/tmp/devrun-out CONFIGS=4M/64 STEPS=1 \
#       THREADS=1 bash benchmarks/gpu_offline.sh
set -uo pipefail  # no -e: one failing phase must not stop the others

cd "$(dirname "$0")/.."
T0=$(date +%s)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
TEE_PID=$!

PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cuda ]; then AUTOCAST=${AUTOCAST:-bf16}; else AUTOCAST=${AUTOCAST:-none}; fi
CONFIGS=${CONFIGS:-4M/64,4M/256,30M/64,30M/256}
STEPS=${STEPS:-3}
THREADS=${THREADS:-4}
TOTAL_S=${TOTAL_S:-500}
THINKRL_EXTRA_SET=${THINKRL_EXTRA_SET:-}
EXTRA_CONFIGS=${EXTRA_CONFIGS:-$CONFIGS}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

left() { echo $((TOTAL_S - ($(date +%s) - T0))); }
# phase_timeout WANTED: WANTED seconds, or what is left of TOTAL_S (minus 10 s of margin) if less
# (at least 5 s: `timeout 0` would mean no limit at all)
phase_timeout() { local l; l=$(($(left) - 10)); [ "$l" -lt 5 ] && l=5; [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
banner() { echo; echo "=== $* ($(($(date +%s) - T0)) s elapsed, $(left) s left)"; }
x() { echo "+ $*"; "$@"; }  # echo, then run (set -x would also trace the helpers above)

banner "0) setup"
echo "DEVICE=$DEVICE AUTOCAST=$AUTOCAST CONFIGS=$CONFIGS STEPS=$STEPS THREADS=$THREADS TOTAL_S=$TOTAL_S" \
    "PY=$PY SITE=$SITE OUT=$OUT THINKRL_EXTRA_SET=$THINKRL_EXTRA_SET"
x uname -a
x date -u
if command -v nvidia-smi >/dev/null; then
    x timeout 20 nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm --format=csv
    x timeout 20 nvidia-smi
fi
x ls -la .whl/
x timeout "$(phase_timeout 120)" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
rc=$?
echo "pip install exit $rc"
if [ "$rc" != 0 ]; then  # every wheel here is pure Python: unpacking them is enough
    echo "pip failed: unpacking the wheels into $SITE instead"
    mkdir -p "$SITE"
    for w in .whl/*.whl; do "$PY" -m zipfile -e "$w" "$SITE" || echo "unpack failed: $w"; done
fi
x export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
x timeout "$(phase_timeout 90)" "$PY" - <<'EOF'
import importlib, importlib.metadata as md, sys, time
print("python", sys.version.split()[0], sys.executable)
for dist in ("torch", "transformers", "trl", "datasets", "omegaconf", "math-verify", "latex2sympy2_extended",
             "antlr4-python3-runtime", "py3langid", "accelerate", "huggingface_hub", "tokenizers", "safetensors",
             "numpy", "pyarrow", "pandas", "fsspec", "regex", "dill", "multiprocess", "xxhash", "peft", "sympy"):
    try:
        print(f"  {dist:24s} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"  {dist:24s} MISSING")
for mod in ("torch", "transformers", "trl", "datasets", "omegaconf", "math_verify", "py3langid", "thinkrl"):
    t = time.perf_counter()
    try:
        m = importlib.import_module(mod)
        print(f"import {mod:14s} ok  {getattr(m, '__version__', '?'):12s} {time.perf_counter() - t:5.1f} s  "
              f"{getattr(m, '__file__', '')}")
    except Exception as e:  # keep going: the log says which one broke
        print(f"import {mod:14s} FAILED: {type(e).__name__}: {e}")
import torch
print("cuda available", torch.cuda.is_available(), "cuda", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
echo "versions exit $?"

banner "t) tests/test_lean.py (the CUDA-graph decode against the model's forward, on CUDA)"
x timeout -k 5 "$(phase_timeout 100)" "$PY" -m pytest -q -p no:cacheprovider tests/test_lean.py 2>&1 | tee -a "$OUT/test_lean.log"
echo "test_lean exit ${PIPESTATUS[0]}" | tee -a "$OUT/test_lean.log"

banner "b) compare: thinkrl vs TRL via benchmarks/gpu.sh (VENV=none)"
x timeout -k 10 "$(phase_timeout 300)" env VENV=none PY="$PY" DEVICE="$DEVICE" AUTOCAST="$AUTOCAST" \
    CONFIGS="$CONFIGS" STEPS="$STEPS" THREADS="$THREADS" WORKER_TIMEOUT="${WORKER_TIMEOUT:-120}" \
    OUT_JSON="$OUT/gpu_results.json" bash benchmarks/gpu.sh 2>&1 | tee -a "$OUT/compare.log"
echo "compare exit ${PIPESTATUS[0]}" | tee -a "$OUT/compare.log"

if [ -n "$THINKRL_EXTRA_SET" ]; then
    banner "c) extra: thinkrl only with --thinkrl-set $THINKRL_EXTRA_SET"
    extra=()
    for kv in $THINKRL_EXTRA_SET; do extra+=("--thinkrl-set=$kv"); done
    VPY=$(command -v "$PY" || echo "$PY")
    x timeout -k 10 "$(phase_timeout 200)" env THINKRL_PYTHON="$VPY" "$VPY" benchmarks/bench_trl.py \
        --frameworks thinkrl --device "$DEVICE" --autocast "$AUTOCAST" --configs "$EXTRA_CONFIGS" --steps "$STEPS" \
        --warmup 1 --threads "$THREADS" --timeout "${WORKER_TIMEOUT:-120}" \
        --json-out "$OUT/gpu_results_extra.json" "${extra[@]}" 2>&1 | tee -a "$OUT/extra.log"
    echo "extra exit ${PIPESTATUS[0]}" | tee -a "$OUT/extra.log"
else
    echo "c) extra: skipped (THINKRL_EXTRA_SET is empty)"
fi

banner "a) smoke: thinkrl train, 3 steps, $DEVICE"
rm -rf /tmp/devrun-smoke
x timeout -k 5 "$(phase_timeout 50)" "$PY" -m thinkrl train thinkrl/demo/demo.yaml \
    train.steps=3 eval.every_steps=0 train.device="$DEVICE" train.autocast="$AUTOCAST" \
    train.num_threads="$THREADS" rollout.prompts_per_step=8 rollout.max_new_tokens=64 train.micro_batch_size=64 \
    log.progress=false train.output_dir=/tmp/devrun-smoke 2>&1 | tee -a "$OUT/smoke.log"
echo "smoke exit ${PIPESTATUS[0]}" | tee -a "$OUT/smoke.log"
if [ -f /tmp/devrun-smoke/metrics.jsonl ]; then
    x cp /tmp/devrun-smoke/metrics.jsonl "$OUT/smoke_metrics.jsonl"
    "$PY" -c '
import json, sys
keys = ("step", "reward/mean", "accuracy", "completion/len_mean", "loss", "time/step", "time/generate")
for line in open(sys.argv[1]):
    m = json.loads(line)
    print("metrics", {k: (round(m[k], 4) if isinstance(m[k], float) else m[k]) for k in keys if k in m})
' /tmp/devrun-smoke/metrics.jsonl | tee -a "$OUT/smoke.log"
fi

banner "summary"
"$PY" - "$OUT/gpu_results.json" "$OUT/gpu_results_extra.json" <<'EOF'
import json, os, sys
for path in sys.argv[1:]:
    if not os.path.exists(path):
        print(f"{os.path.basename(path)}: none")
        continue
    d = json.load(open(path))
    print(f"{os.path.basename(path)}: torch {d.get('torch')}, matmul peak {d.get('peak_flops', 0) / 1e12:.1f} TFLOP/s")
    for r in d["results"]:
        if "error" in r:
            print(f"  {r['config']:8s} {r['framework']:8s} ERROR {r['error'][:300]}")
        else:
            print(f"  {r['config']:8s} {r['framework']:8s} {r['s_per_step']:.3f} s/step  gen {r['gen_tok_per_s']:.0f} tok/s"
                  f"  train {r['train_tok_per_s']:.0f} tok/s  peak {r['peak_rss_mib']:.0f} MiB  wall {r['wall_s']:.0f} s")
EOF
banner "done"
ls -la "$OUT"
exec >&- 2>&-
wait "$TEE_PID"
