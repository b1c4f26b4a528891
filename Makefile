# Everything a fresh clone needs: `make quickstart` runs the quickstart study, `make test`
# runs the whole suite. Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch, installed before the project so that the project's torch range is
# already satisfied and pip does not pull a multi-GB CUDA build. GPU machines: install the
# CUDA torch you want first (or `make TORCH_SPEC=torch install`).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install quickstart test optuna-contract optuna-contract-full lint format bench bench-all clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/hpo run studies/quickstart.yaml --workers 2
	@echo "next: . $(VENV)/bin/activate && hpo status quickstart && hpo report quickstart"

test: install
	@# PostgreSQL is part of every developer and CI machine; start it if it is down.
	-@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start 2>/dev/null || true
	@# Headless Chromium renders optuna-dashboard in tests/test_dashboard.py (Debian's package).
	-@command -v chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null) 2>/dev/null || true
	@# Slurm and munge for tests/test_slurm.py, which starts a one-node cluster itself (Debian's).
	-@command -v slurmctld >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge \
	  >/dev/null) 2>/dev/null || true
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# Two processes, a test file each at a time: most tests wait on real subprocesses, so the
	@# suite takes about 8 minutes here instead of 13. A test that restarts the PostgreSQL
	@# server every other test shares runs on its own afterwards.
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not restarts_postgres"
	$(BIN)/python -m pytest -m restarts_postgres
	$(MAKE) --no-print-directory optuna-contract

# Optuna's own tests for what hpo replaces, run against hpo's classes: taken from the installed
# Optuna's source distribution at run time (tests/optuna_contract/fetch.py downloads it once into
# .optuna-src/), never from a copy in this repo. Each plugin puts hpo's classes in place of
# Optuna's; tests/optuna_contract/EXCEPTIONS.md lists the few that are deselected, and why.
# Samplers and pruners: about 10 s. Storage (hpo's worker storage over SQLite and the
# PostgreSQL on 127.0.0.1, HPO_TEST_PG, and the write-through fallback): about 2 minutes.
OPTUNA_CONTRACT = cd "$$($(abspath $(BIN))/python tests/optuna_contract/fetch.py)" && \
  PYTHONPATH="$(CURDIR)/tests/optuna_contract:$(CURDIR)" \
  $(abspath $(BIN))/python -m pytest -q -p no:cacheprovider -c pyproject.toml --color=no

optuna-contract: install
	$(BIN)/python tests/optuna_contract/fetch.py
	$(OPTUNA_CONTRACT) -p plugin_search tests/samplers_tests/tpe_tests tests/pruners_tests/test_hyperband.py
	$(OPTUNA_CONTRACT) -p plugin_storage \
	  tests/storages_tests/test_storages.py tests/storages_tests/test_heartbeat.py

# The above, plus Optuna's study and trial tests on every storage mode (the storage as Study and
# Trial use it): about 75 s more, so not in `make test`; run it when the storage changes.
optuna-contract-full: optuna-contract
	$(OPTUNA_CONTRACT) -p plugin_storage \
	  tests/study_tests/test_study.py tests/study_tests/test_optimize.py \
	  tests/trial_tests/test_trial.py tests/trial_tests/test_frozen.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The quick figures (about 3 minutes); bench-all reproduces every table and plot of
# BENCHMARKS.md (about 45 minutes on 2 cores; PostgreSQL on 127.0.0.1).
bench: install
	$(BIN)/python benchmarks/train_throughput.py --epochs 5 --repeats 5 --threads 1
	$(BIN)/python benchmarks/coordination.py --processes 8 --sleep 0.2 --trials 400
	$(BIN)/python benchmarks/script_overhead.py --trials 30 --reports 300

bench-all: install
	$(BIN)/python benchmarks/train_throughput.py --epochs 5 --repeats 5 --threads 1 --batch-size 16 32 64 128 256
	$(BIN)/python benchmarks/coordination.py --matrix
	$(BIN)/python benchmarks/coordination.py --sweep 1 2 4 8 16 32 --sleep 0.2 \
	  --plot benchmarks/results/coordination_sweep.png
	$(BIN)/python benchmarks/scale.py --json benchmarks/results/scale.jsonl
	$(BIN)/python benchmarks/growth.py --json benchmarks/results/growth.json \
	  --plot benchmarks/results/growth.png
	$(BIN)/python benchmarks/worker_memory.py --json benchmarks/results/memory.json --plot benchmarks/results/memory.png
	$(BIN)/python benchmarks/search_efficiency.py --json benchmarks/results/search_efficiency.json \
	  --plot benchmarks/results/search_efficiency.png
	$(BIN)/python benchmarks/script_overhead.py --trials 30 --reports 300

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache hpo.db checkpoints .optuna-src
