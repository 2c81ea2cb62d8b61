# midigen - `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build here.
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) kernels ## create ./.venv and install midigen (editable) with its dev extras

kernels: $(STAMP) ## build the native sampling kernels for this machine (sampling falls back to Python without them)
	@$(VENV)/bin/midigen kernels build || echo "midigen: native sampling kernels not built; sampling uses the Python path"

data: $(STAMP) ## build the default training corpus (10 styles from music21's corpus, <= 300 pieces each) into data/corpus
	$(VENV)/bin/midigen data build

train: $(STAMP) kernels ## install, build the corpus, train the default experiment, register and sample
	$(VENV)/bin/midigen data build
	$(VENV)/bin/midigen train $(ARGS)

test: $(STAMP) kernels ## install and run the fast test suite
	$(PY) -m pytest -q -x tests

test-slow: $(STAMP) ## run the slow tests (real training runs, servers, multi-process)
	$(PY) -m pytest -q -m slow tests

# Debian's Chromium drives the browser test (a test tool's own browser download does not work here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

test-browser: $(STAMP) ## install headless Chromium + Playwright, check the MLflow UI and the studio page in a real browser
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }
	$(PIP) install -q -e '.[browser]'
	$(PY) -m pytest -q -m browser tests

generate: $(STAMP) kernels ## generate 8 MIDI ideas from the champion model (or the shipped pretrained one) into ideas/
	$(VENV)/bin/midigen generate --num 8 --bars 8 --out ideas --force $(ARGS)

studio: $(STAMP) kernels ## open the studio page on 127.0.0.1:PORT (default 5002): generate, listen, continue, keep (ARGS=--model ...)
	$(VENV)/bin/midigen studio --port $${PORT:-5002} $(ARGS)

bench: $(STAMP) kernels ## run the side-by-side benchmarks (midigen bench)
	$(VENV)/bin/midigen bench --json bench/bench.json $(ARGS)

study: $(STAMP) ## run the seed study and regenerate experiments/seed_study/REPORT.md
	bash experiments/seed_study/run.sh

study-styles: $(STAMP) kernels ## style fidelity, blends and interpolation of the shipped model: experiments/style_study/REPORT.md
	bash experiments/style_study/run.sh $(ARGS)

study-finetune: $(STAMP) kernels ## fine-tune the shipped model on 30 quartet movements vs untouched and from scratch: experiments/finetune_study/REPORT.md (~55 min)
	bash experiments/finetune_study/run.sh $(ARGS)

ui: $(STAMP) ## open the MLflow UI on 127.0.0.1 over the project's store
	$(VENV)/bin/mlflow ui --backend-store-uri "$$($(PY) -c 'from midigen.tracking import tracking_uri; print(tracking_uri())')" \
		--default-artifact-root "$$($(PY) -c 'from midigen.tracking import artifact_root; print(artifact_root())')" \
		--host 127.0.0.1 --port $${PORT:-5000}

# MLflow's scoring server starts `uvicorn` by name in a shell, so it must find the venv's on PATH:
# without it, `.venv/bin/mlflow models serve` fails (uvicorn: command not found) or runs another
# Python's uvicorn. MLFLOW_TRACKING_URI is the project's store unless already set.
MODEL ?= models:/midigen@champion

serve: $(STAMP) ## serve MODEL (default models:/midigen@champion) with MLflow's scoring server on 127.0.0.1:PORT (default 5001)
	PATH="$(abspath $(VENV))/bin:$$PATH" \
	MLFLOW_TRACKING_URI="$$($(PY) -c 'from midigen.tracking import tracking_uri; print(tracking_uri())')" \
		$(VENV)/bin/mlflow models serve -m "$(MODEL)" --env-manager local --host 127.0.0.1 --port $${PORT:-5001}

clean: ## remove caches and run outputs (keeps data/corpus and mlflow.db)
	rm -rf outputs multirun .pytest_cache data/cache

.PHONY: help install kernels data train test test-slow test-browser generate studio bench study study-styles ui serve clean
