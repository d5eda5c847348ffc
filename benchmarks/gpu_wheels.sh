#!/usr/bin/env bash
# Fetch, on a machine with internet, the wheels that benchmarks/gpu_offline.sh installs on a GPU machine without
# one: what thinkrl and TRL need beyond an image that already holds a CUDA torch, accelerate, huggingface_hub,
# tokenizers, safetensors, numpy, pyarrow, pandas, xxhash, fsspec, regex, pyyaml, sympy, matplotlib and psutil.
# All pure Python (~21 MB); the versions are the ones thinkrl's CPU venv and the TRL comparison venv run.
#
#   bash benchmarks/gpu_wheels.sh                 # -> .whl/ (git-ignored); PYVER=3.11 for another Python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
PYVER=${PYVER:-3.12}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    transformers==5.24.0 trl==1.16.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
    omegaconf==2.4.0 antlr4-python3-runtime==4.13.2 math-verify==0.9.0 latex2sympy2_extended==1.11.0 \
    py3langid==0.4.0
ls -la .whl
