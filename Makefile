# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
STAMP_BENCH := $(VENV)/.installed-bench

.PHONY: demo test lint typecheck bench attacks accuracy recordings clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

# make demo ARGS="--base-port 4600 --providers 5": the cluster's options (dhtscope demo --help).
demo: $(STAMP_RUN)
	$(BIN)/dhtscope demo $(ARGS)

# make test: lint, types, then the suite; each must be clean. The suite runs in TEST_WORKERS
# processes (pytest-xdist): most tests wait on sockets and timers, so two halve the time on 2 cores.
TEST_WORKERS ?= 2
test: lint typecheck
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: $(STAMP_TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy resolves dhtscope.* through a tree of links named as the packages install
# (the sources sit at the repository root as node/, tracing/ and tui/).
TYPECHECK := $(VENV)/typecheck
typecheck: $(STAMP_TEST)
	@mkdir -p $(TYPECHECK)/dhtscope
	@for d in node tracing tui; do ln -sfn ../../../$$d $(TYPECHECK)/dhtscope/$$d; done
	cd $(TYPECHECK) && ../bin/mypy --config-file ../../pyproject.toml -p dhtscope

$(STAMP_BENCH): pyproject.toml | $(BIN)/python
	@dpkg -s libgmp-dev >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq gcc libgmp-dev)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(STAMP_TEST) $(STAMP_RUN)

# make bench: quick mode (under 10 minutes on 2 cores); make bench FULL=1: everything.
bench: $(STAMP_BENCH)
	$(BIN)/python bench/run.py $(if $(FULL),--full,)

# make attacks: issue 13's attacks against a real node (about 7 minutes); rewrites BENCHMARKS.md.
attacks: $(STAMP_TEST)
	$(BIN)/python bench/attacks/run.py

# make accuracy: every scenario recorded 5 times and diagnosed; the table goes into BENCHMARKS.md (about 10 minutes).
accuracy: $(STAMP_RUN)
	$(BIN)/python bench/accuracy.py

SCENARIOS := healthy no-accept stream-limit loss alpn-mismatch stall bad-certificate flow-control blackhole one-way-loss

# make recordings: regenerate recordings/<scenario>/ for every scenario (about 3 minutes).
recordings: $(STAMP_RUN)
	@for s in $(SCENARIOS); do \
		rm -rf recordings/$$s; \
		$(BIN)/dhtscope cluster --scenario $$s --record recordings/$$s --base-port 4700 | tail -1 || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info
