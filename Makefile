# meas_ml: `make demo` and `make test` work on a fresh clone.
#
# The virtual environment lives in .venv/.  Where no NVIDIA GPU is visible a
# CPU build of torch 2.13.0 is installed (pip finds a local wheel on the
# project's machines; elsewhere pass TORCH_PIP_ARGS="--index-url <a CPU
# wheel index>"), instead of a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_REPO ?= demo-repo
DEMO_SIZE ?= default
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.meas_ml-installed

.PHONY: all install demo test test-full bench bench-core bench-dia bench-photoz clean distclean

all: install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing torch==$(TORCH_VERSION) with CUDA"; \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS); \
	else \
	  echo "No GPU found: installing the CPU build of torch==$(TORCH_VERSION)"; \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS) 2>&1 | grep -v '^WARNING: Location' || true; \
	fi
	$(PY) -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import lsst.meas.ml, torch, lsst.daf.butler, lsst.pipe.base; print('meas_ml installed; torch', torch.__version__)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/meas-ml demo --repo $(DEMO_REPO) --size $(DEMO_SIZE)

# The whole suite; slow end-to-end checks run in their reduced form.
test: $(STAMP)
	MEAS_ML_TEST_SCALE=reduced $(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS) tests

# The same with slow checks at full size.
test-full: $(STAMP)
	MEAS_ML_TEST_SCALE=full $(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS) tests

bench: bench-core bench-dia bench-photoz

bench-core: $(STAMP)
	$(VENV)/bin/meas-ml bench core

bench-dia: $(STAMP)
	$(VENV)/bin/meas-ml bench dia

# RAIL's estimators need their own environment (.venv-rail).
bench-photoz: $(STAMP)
	bash bench/run_photoz_rail.sh

clean:
	rm -rf $(DEMO_REPO) .pytest_cache .benchmarks build

distclean: clean
	rm -rf $(VENV) .venv-rail
