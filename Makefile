# Two commands on a fresh machine (Python 3.11 + pip only): `make demo` and `make test`.
SHELL := /bin/bash
# Cached bytecode makes every test process start seconds faster (ccxt alone compiles for ~5 s).
unexport PYTHONDONTWRITEBYTECODE
UV := $(shell scripts/ensure-uv)
export DAGSTER_HOME ?= $(CURDIR)/.tradai/dagster
REPLAY_PORT ?= 8765

.PHONY: setup demo test test-all test-browser browser test-stack services lint validate ui mlflow-ui replay bench bench-stack clean \
	stack-up stack-down stack-status stack-demo

setup:  ## install the locked environment into .venv
	$(UV) sync --frozen
	mkdir -p "$(DAGSTER_HOME)"
	ln -sf "$(CURDIR)/dagster.yaml" "$(DAGSTER_HOME)/dagster.yaml"

demo: setup  ## materialize the graph offline from the bundled recorded candles
	$(UV) run --frozen python -m tradai.demo

test: setup  ## the fast suite (excludes tests marked slow, browser or stack)
	$(UV) run --frozen pytest

test-all: setup lint validate browser services  ## everything CI runs: lint, definitions, every test (slow, browser, stack)
	$(UV) run --frozen pytest -m "(slow or not slow) and not stack"
	$(UV) run --frozen pytest -m stack  # a session of its own: one stack, up only while its tests run

test-stack: setup services  ## the tests against the real production stack (started and stopped by the tests)
	$(UV) run --frozen pytest -m stack

test-browser: setup browser  ## only the real-browser UI tests (screenshots in .tradai/test-artifacts/browser/)
	$(UV) run --frozen pytest -m browser

services:  ## Debian's postgresql and redis-server for the stack tests (apt, needs root or sudo)
	deploy/stack.sh install

browser:  ## Debian's chromium + chromium-driver for the browser tests (apt, needs root or sudo)
	scripts/install-browser

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

validate: setup  ## `dg check defs`: the code location loads and its definitions are valid
	set -a && source offline.env && set +a && $(UV) run --frozen dg check defs

replay: setup  ## serve the bundled candles as a Binance REST replay on 127.0.0.1:$(REPLAY_PORT)
	$(UV) run --frozen python -m tradai_replay --candles-dir demo_data/binance_spot_1h --port $(REPLAY_PORT)

ui: setup  ## the Dagster UI on http://127.0.0.1:3000, offline against the replay server (REPLAY_PORT=8765)
	@scripts/replay-port free $(REPLAY_PORT)
	set -a && source offline.env && set +a && \
	export TRADAI_EXCHANGE_BASE_URL=http://127.0.0.1:$(REPLAY_PORT) && \
	{ $(UV) run --frozen python -m tradai_replay --candles-dir demo_data/binance_spot_1h --port $(REPLAY_PORT) & \
	replay=$$!; trap "kill $$replay 2>/dev/null" EXIT; \
	scripts/replay-port wait $(REPLAY_PORT) $$replay && \
	$(UV) run --frozen dg dev --host 127.0.0.1 --port 3000; }

mlflow-ui: setup  ## the MLflow UI on http://127.0.0.1:5000 over the local store
	$(UV) run --frozen mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.tradai/mlflow.db --port 5000

bench: setup  ## benchmarks, printed as ratios against same-run baselines
	$(UV) run --frozen python -m bench

bench-stack: setup  ## the production stack's figures (starts and stops a stack of its own; ingests the demo twice)
	$(UV) run --frozen python -m bench stack

stack-up: setup  ## the production profile on 127.0.0.1: Postgres, Redis, S3 (moto), MLflow, Dagster, Celery
	deploy/stack.sh up

stack-down:  ## stop every service stack-up started (TERM, wait, KILL)
	deploy/stack.sh down

stack-status:
	deploy/stack.sh status

stack-demo: stack-up  ## the demo against the running stack (candles into ArcticDB on S3, runs in Postgres)
	set -a && source deploy/stack.env && set +a && $(UV) run --frozen python -m tradai.demo

clean:  ## remove all local state (candles, runs, experiments) but keep the environment
	rm -rf .tradai/arcticdb .tradai/dagster .tradai/mlflow.db .tradai/mlartifacts .tradai/data
