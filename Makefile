# xfel-assets: the two set-up commands are `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := $(CURDIR)/demo
export XFEL_BEAMTIME ?= $(DEMO)/beamtime/beamtime.yaml
export DAGSTER_HOME ?= $(DEMO)/dagster_home

TEST_TMP ?= $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm || echo /tmp)

.PHONY: install constraints demo demo-slurm test ui notebooks bench clean-demo docs

# uv installs the pinned set (constraints.txt: every package, the transitive ones too) in seconds, pip in minutes.
# --compile-bytecode writes the .pyc files (30 s): where PYTHONDONTWRITEBYTECODE is set, as on this VM, every
# process would compile Dagster, pandas and xarray from source again (1.6 s of CPU per process start, measured).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.9
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --constraints constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## After changing a pin in pyproject.toml and testing: write the installed set to constraints.txt.
constraints: $(STAMP)
	@{ sed -n 1,2p constraints.txt; $(BIN)/uv pip freeze --python $(BIN)/python --exclude-editable --exclude uv; } > constraints.new
	mv constraints.new constraints.txt

## The documentation site (docs/, mkdocs.yml) on http://127.0.0.1:8000, rebuilt as its pages change.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

## Generate the demo beamtime and materialize every asset of every run through Dagster.
demo: $(STAMP)
	$(BIN)/xfel-assets demo $(DEMO)/beamtime

## Run the whole test suite in two worker processes, each taking whole test files, the longest first
## (tests/conftest.py): the browser tests of the web UI (marker e2e) and the SLURM tests (marker slurm:
## they start a local single-node cluster and stop it) among them.
## Their temporary files (every Dagster home, beamtime and cluster the tests make) go to a folder on tmpfs where the
## machine has one, removed at the end: each SQLite commit of a Dagster event took 23 ms here on disk (fsync), 1.6 ms
## on tmpfs (measured), and the suite took 18.8 min with them on disk.
test: $(STAMP)
	$(BIN)/python -m compileall -q xfel_core xfel_assets tests
	$(BIN)/ruff check xfel_core xfel_assets
	@tmp=$$(mktemp -d $(TEST_TMP)/xfel-tests.XXXXXX) && chmod 755 $$tmp && trap 'rm -rf $$tmp' EXIT && \
	echo "test temporary files: $$tmp" && TMPDIR=$$tmp $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

## The demo beamtime with its heavy assets as jobs on a local single-node SLURM cluster (as root:
## deploy/slurm/start-local-cluster.sh installs and starts it; it is stopped at the end in every case).
demo-slurm: $(STAMP)
	@set -e; cluster=$(DEMO)/slurm-cluster; \
	deploy/slurm/start-local-cluster.sh $$cluster >/dev/null; \
	trap "deploy/slurm/stop-local-cluster.sh $$cluster" EXIT; \
	rm -rf $(DEMO)/beamtime-slurm $(DEMO)/dagster_home_slurm; \
	$(BIN)/xfel-assets demo-beamtime $(DEMO)/beamtime-slurm --slurm-cluster $$cluster; \
	DAGSTER_HOME=$(DEMO)/dagster_home_slurm $(BIN)/xfel-assets materialize --beamtime $(DEMO)/beamtime-slurm/beamtime.yaml

## Dagster web UI (127.0.0.1:3000) and daemon, on the demo beamtime.
ui: $(STAMP)
	@test -f $(XFEL_BEAMTIME) || $(BIN)/xfel-assets demo-beamtime $(DEMO)/beamtime
	$(BIN)/xfel-assets ui --host 127.0.0.1 --port 3000

## JupyterLab on notebooks/ (the demo beamtime's outputs; made first if missing), on 127.0.0.1 with a token.
notebooks: $(STAMP)
	@test -f $(DEMO)/beamtime/beamtime.yaml || $(BIN)/xfel-assets demo $(DEMO)/beamtime
	@grep -q '^events:' $(DEMO)/beamtime/beamtime.yaml || { echo "$(DEMO)/beamtime predates the demo's event-file runs: make clean-demo demo, then make notebooks" >&2; exit 1; }
	$(BIN)/jupyter lab --notebook-dir=notebooks --ip=127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root)

## Reduction benchmark: prints a table and ratios (BENCH_ARGS="--size-gb 1" for a quicker run).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_reduce.py $(BENCH_ARGS)

clean-demo:
	rm -rf $(DEMO)
