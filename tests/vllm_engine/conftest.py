"""Settings for the vLLM tests (``make test-vllm``): vLLM's CPU worker pins its OpenMP threads to cores; on a
shared machine one core is enough for these tiny models and leaves the other to everyone else."""

import os

os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0")
