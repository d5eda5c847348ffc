#!/usr/bin/env bash
# The R1 pipeline in miniature on CPU (configs/pipelines/tiny-cpu.yaml): eval base -> cold-start data (the base's
# own correct samples) -> cold-start SFT -> reasoning RL -> eval -> rejection sampling -> SFT from the base ->
# RL at temperature 0.7 -> eval. One torch thread, niced: the machine is shared. Rerun to resume after a kill;
# finished stages are skipped. Extra arguments go to `thinkrl pipeline` (e.g. output_dir=runs/x --force cold_start).
# Results: runs/pipelines/tiny-cpu/summary.md (numbers in docs/pipeline.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
mkdir -p runs
/usr/bin/time -v -o runs/tiny_pipeline.time nice -n 10 "$PY" -m thinkrl pipeline configs/pipelines/tiny-cpu.yaml "$@"
grep -E "Elapsed|Maximum resident" runs/tiny_pipeline.time
