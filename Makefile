# Ziggurat developer commands. `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
MODELS ?= bench-models

.PHONY: setup test test-numerics test-fast serve bench lint format check-models conformance clean

setup: $(STAMP)

# Idempotent: re-installs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The whole suite, in parallel on all cores. pytest exits 5 when it collects no tests: that fails.
# ZIGGURAT_GOMP_SPINCOUNT=0: the parallel test workers oversubscribe the cores, where OpenMP
# workers spinning between oneDNN calls only slow each other down (backends/cpu/dnnl.py).
test: setup
	ZIGGURAT_GOMP_SPINCOUNT=0 $(BIN)/python -m pytest -n auto -q -p no:cacheprovider

# The numerically sensitive tests (kernels, conformance, real models) again under another BLAS
# kernel, one BLAS thread and a fixed order: their outcome must not depend on the BLAS's rounding
# (docs/architecture.md, Testing). CI runs this after `make test`.
NUMERIC_TESTS := tests/conformance tests/models tests/ops tests/passes tests/runtime tests/backends
test-numerics: setup
	ZIGGURAT_GOMP_SPINCOUNT=0 OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE_ALT:-Prescott} OPENBLAS_NUM_THREADS=1 \
	  $(BIN)/python -m pytest -n auto -q -p no:cacheprovider -p no:randomly $(NUMERIC_TESTS)

serve: setup
	$(BIN)/python scripts/make_demo_model.py
	$(BIN)/ziggurat serve

# Node conformance count (also part of `make test`).
conformance: setup
	$(BIN)/python tests/conformance/runner.py

bench: setup
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/engine.py all --models $(MODELS) \
	  --engines ziggurat,ziggurat-bf16,onnxruntime,openvino,openvino-fp32

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# Exports the benchmark models from ../shared (needs torch in a throw-away venv; not part of CI)
# and checks each against onnxruntime.
check-models: setup
	bash ../shared/models/make_models.sh $(MODELS)
	$(BIN)/python benchmarks/check_models.py $(MODELS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
