# meas_ml: `make demo` and `make test` work on a fresh clone.
#
# The virtual environment lives in .venv/ and needs Python >= 3.12 (the
# current Rubin middleware does; rubin-env is 3.13).  PYTHON is found by
# trying python3.13, python3.12, pyenv's 3.13/3.12 and python3, in that order;
# `make PYTHON=/path/to/python3.13 ...` chooses one.  torch 2.13.0 is
# installed first: pip takes a CPU wheel when one is at hand (pass
# TORCH_PIP_ARGS="--index-url <a CPU wheel index>" to prefer one), otherwise
# the package index's default build.

FIND_PYTHON = for p in python3.13 python3.12 \
	  $$(command -v pyenv >/dev/null 2>&1 && ls -d "$$(pyenv root)"/versions/3.13*/bin/python3 2>/dev/null; ls -d "$$(pyenv root)"/versions/3.12*/bin/python3 2>/dev/null) \
	  python3; do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    command -v $$p; break; fi; done
PYTHON ?= $(shell $(FIND_PYTHON))
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_REPO ?= demo-repo
DEMO_SIZE ?= default
DEMO_SHAPE ?= drp
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
STAMP := $(VENV)/.meas_ml-installed

.PHONY: all install services lint demo test test-full bench bench-core bench-dia bench-photoz bench-gpu clean distclean

all: install

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ] && [ ! -x $(PY) ]; then \
	  echo "meas_ml needs Python >= 3.12 (the current Rubin middleware does) and none was found."; \
	  echo "Install one (e.g. 'pyenv install 3.13', 'apt-get install python3.13', or use rubin-env),"; \
	  echo "then run make again, or point to it: make PYTHON=/path/to/python3.13 $(MAKECMDGOALS)"; \
	  exit 1; fi
	@if [ -x $(PY) ] && ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
	  echo "$(VENV) holds Python $$($(PY) -c 'import platform; print(platform.python_version())') (< 3.12): recreating it with $(PYTHON)"; \
	  rm -rf $(VENV); fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing torch==$(TORCH_VERSION) with CUDA"; \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS); \
	else \
	  echo "No GPU found: installing torch==$(TORCH_VERSION) (a CPU wheel where pip finds one)"; \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS) 2>&1 | grep -v '^WARNING: Location' || true; \
	fi
	$(PY) -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import lsst.meas.ml, torch, lsst.daf.butler, lsst.pipe.base; print('meas_ml installed; torch', torch.__version__)"
	touch $(STAMP)

install: $(STAMP)

# Debian's PostgreSQL, Slurm and munge for the data-centre tests (root and
# apt-get only; the tests start their own servers on loopback and skip,
# saying why, where these are missing).  .ci/run calls it before make test.
services:
	@if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make services: needs root and apt-get; the PostgreSQL/Slurm tests will skip if the servers are missing"; \
	elif command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "make services: PostgreSQL, Slurm and munge are installed"; \
	else \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql slurm-wlm munge >/dev/null) \
	    && echo "make services: installed PostgreSQL, Slurm and munge" \
	    || echo "make services: could not install PostgreSQL/Slurm/munge; their tests will skip"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/meas-ml demo --repo $(DEMO_REPO) --size $(DEMO_SIZE) --shape $(DEMO_SHAPE)

# ruff and numpydoc validation, configured in pyproject.toml as pipe_base does.
lint: $(STAMP)
	$(VENV)/bin/ruff check python tests bench
	find python -name '*.py' ! -name '__init__.py' | xargs $(PY) -m numpydoc lint

# The whole suite; slow end-to-end checks run in their reduced form.
test: $(STAMP)
	$(MAKE) --no-print-directory lint
	MEAS_ML_TEST_SCALE=reduced $(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS) tests

# The same with slow checks at full size.
test-full: $(STAMP)
	MEAS_ML_TEST_SCALE=full $(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS) tests

bench: bench-core bench-dia bench-photoz

bench-core: $(STAMP)
	$(VENV)/bin/meas-ml bench core

bench-dia: $(STAMP)
	$(VENV)/bin/meas-ml bench dia

# Every task's GPU benchmark in one run (a CUDA host; logs in bench/out/gpu).
bench-gpu: $(STAMP)
	MEAS_ML="$(VENV)/bin/meas-ml" bash bench/gpu_all.sh bench/out/gpu $(ARGS)

# RAIL's estimators need their own environment (.venv-rail).
bench-photoz: $(STAMP)
	bash bench/run_photoz_rail.sh $(ARGS)

clean:
	rm -rf $(DEMO_REPO) .pytest_cache .benchmarks build

distclean: clean
	rm -rf $(VENV) .venv-rail
