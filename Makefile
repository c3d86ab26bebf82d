# The index of what one can do with this starter pack. `make help` lists it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The first Python that runs: 3.11 or 3.12 (the bundled Triton ships Python-backend stubs for both).
PYTHON_BASE ?= $(firstword $(foreach p,python3.11 python3.12,$(shell $(p) -c 'import sys' >/dev/null 2>&1 && echo $(p))) python3.11)
VENV        ?= .venv
PY          := $(VENV)/bin/python
STATE       ?= .state
DATA        ?= data/creditcard_synthetic.csv
ROWS        ?= 60000
MODEL_REPO  ?= s3://models/triton
MODELS      ?= random_forest,extra_trees,xgboost,lightgbm
S3_ENV      := $(STATE)/s3/credentials.env
S3_READER   := $(STATE)/s3/reader-credentials.env
TRITON_KEY  := $(STATE)/triton/api-key.env
# Metaflow refuses to run without a user name and ignores "root" (containers, CI).
METAFLOW_USER ?= $(or $(filter-out root,$(USERNAME) $(USER) $(shell id -un 2>/dev/null)),fraudml)
export METAFLOW_USER := $(firstword $(METAFLOW_USER))
# Every command that talks to the local S3 reads its endpoint and credentials from here (the
# publisher's identity: read and write), and the key of the local Triton's model-repository API.
WITH_S3     := set -a; [ -f $(S3_ENV) ] && . $(S3_ENV); [ -f $(TRITON_KEY) ] && . $(TRITON_KEY); set +a;
# Triton and its reconciler read with the read-only identity (an S3 state from before it: the publisher's).
WITH_S3_RO  := set -a; if [ -f $(S3_READER) ]; then . $(S3_READER); elif [ -f $(S3_ENV) ]; then . $(S3_ENV); fi; \
               [ -f $(TRITON_KEY) ] && . $(TRITON_KEY); set +a;

.PHONY: help venv data train s3 s3-stop serve serve-stop query lineage versions rollback \
        demo test test-unit lint benchmark benchmark-quick k8s-check argo-template \
        reliability clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON_BASE) -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null || { echo "error: no Python 3.11 or 3.12 found ($(PYTHON_BASE)); install one or pass PYTHON_BASE=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps $$(sed -n 's/^# no-deps: //p' requirements.txt)
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(VENV)/.installed ## create .venv from requirements*.txt (done by every target that needs it)

$(DATA): | $(VENV)/.installed
	$(PY) -m fraudml.data generate --rows $(ROWS) --out $(DATA)

data: $(VENV)/.installed ## generate the synthetic creditcard-schema dataset (ROWS=284807 for full size)
	$(PY) -m fraudml.data generate --rows $(ROWS) --out $(DATA)

train: $(VENV)/.installed $(DATA) ## run the training flow (publishes to MODEL_REPO when S3 is up)
	$(WITH_S3) $(PY) train/flow.py run --data $(DATA) --models $(MODELS) --model-repo $(MODEL_REPO)

s3: $(VENV)/.installed ## start the local SeaweedFS S3 on 127.0.0.1:8333 (credentials in .state/s3)
	$(PY) -m serve.s3 start --state-dir $(STATE)/s3

s3-stop: ## stop the local S3
	-@[ -x $(PY) ] && $(PY) -m serve.s3 stop --state-dir $(STATE)/s3

serve: $(VENV)/.installed ## start the bundled tritonserver on MODEL_REPO (HTTP 8000, gRPC 8001, metrics 8002) and its reconciler (8003)
	$(WITH_S3_RO) $(PY) -m serve.triton start --model-repo $(MODEL_REPO) --state-dir $(STATE)/triton
	$(WITH_S3_RO) $(PY) -m serve.reconciler start --model-repo $(MODEL_REPO) --state-dir $(STATE)/reconciler

serve-stop: ## stop the local Triton and its reconciler
	-@[ -x $(PY) ] && $(PY) -m serve.reconciler stop --state-dir $(STATE)/reconciler
	-@[ -x $(PY) ] && $(PY) -m serve.triton stop --state-dir $(STATE)/triton

query: $(VENV)/.installed ## send 5 test-set rows to Triton and print answers with their lineage
	$(WITH_S3) $(PY) -m serve.client --rows 5 --data $(DATA)

lineage: $(VENV)/.installed ## trace the served version back to its Metaflow run (VERSION=n for another)
	$(WITH_S3) $(PY) -m serve.lineage --model-repo $(MODEL_REPO) $(if $(VERSION),--version $(VERSION),)

versions: $(VENV)/.installed ## list the published versions and which one is serving
	$(WITH_S3) $(PY) -m serve.models list --model-repo $(MODEL_REPO)

rollback: $(VENV)/.installed ## serve an earlier version (restored from the archive if needed): make rollback VERSION=n
	@[ -n "$(VERSION)" ] || { echo "usage: make rollback VERSION=<n>" >&2; exit 2; }
	$(WITH_S3) $(PY) -m serve.models rollback --model-repo $(MODEL_REPO) --version $(VERSION)

demo: $(VENV)/.installed ## the whole job: data -> S3 -> flow -> publish -> Triton -> query -> lineage -> quick benchmark
	$(PY) -m serve.demo --rows $(ROWS) --data $(DATA) --models $(MODELS) --state-dir $(STATE)

test: $(VENV)/.installed ## the whole test suite (starts every server it needs itself)
	@$(MAKE) --no-print-directory native-backend || echo "notice: the native fil backend cannot be built here; its tests are skipped"
	$(PY) -m pytest

test-unit: $(VENV)/.installed ## only the tests that need no server
	$(PY) -m pytest tests/unit tests/data

# -- the native fil backend (serve/backends/fil_native): serve, demo and the tests use it when it builds
NLOHMANN_JSON := /usr/include/nlohmann/json.hpp
APT_GET       := $(if $(filter 0,$(shell id -u)),,sudo -n) env DEBIAN_FRONTEND=noninteractive apt-get -q
.PHONY: native-backend
native-backend: $(VENV)/.installed ## build the native C++ fil backend (libtriton_fil.so; installs nlohmann-json3-dev if missing)
	@[ -f $(NLOHMANN_JSON) ] || { echo "installing nlohmann-json3-dev (the native fil backend's JSON library)"; \
	  $(APT_GET) install -y nlohmann-json3-dev >/dev/null 2>&1 || \
	  { $(APT_GET) update >/dev/null 2>&1 && $(APT_GET) install -y nlohmann-json3-dev >/dev/null 2>&1; } || \
	  { echo "error: $(NLOHMANN_JSON) is missing and apt-get could not install it; run as root: apt-get install -y nlohmann-json3-dev" >&2; exit 1; }; }
	$(PY) -m serve.fil_backend build

lint: $(VENV)/.installed ## ruff
	$(PY) -m ruff check train serve benchmark tests k8s

benchmark: $(VENV)/.installed ## full benchmark: Triton HTTP/gRPC vs FastAPI (sklearn, treelite), sequential + load
	$(PY) -m benchmark.run --state-dir $(STATE)

benchmark-quick: $(VENV)/.installed ## the same in under 2 minutes
	$(PY) -m benchmark.run --quick --state-dir $(STATE)

k8s-check: $(VENV)/.installed ## offline: kustomize + kubernetes-validate (strict) every kustomization, hadolint, pins, PromQL (tests/k8s)
	$(PY) -m pytest -q tests/k8s -m "not slow"

argo-template: $(VENV)/.installed ## compile the flow into an Argo WorkflowTemplate offline (k8s/argo/)
	$(PY) k8s/argo_template.py --state-dir $(STATE)

# make test runs the reliability cases marked quick with a 20 s soak and 50 fuzz examples per target.
RELIABILITY_SOAK_SECONDS  ?= 180
RELIABILITY_FUZZ_EXAMPLES ?= 300
reliability: $(VENV)/.installed ## the whole reliability suite (pytest -m reliability); summary in .state/reliability/summary.md
	RELIABILITY_SOAK_SECONDS=$(RELIABILITY_SOAK_SECONDS) RELIABILITY_FUZZ_EXAMPLES=$(RELIABILITY_FUZZ_EXAMPLES) \
	  $(PY) -m pytest -m reliability

clean: s3-stop serve-stop ## stop servers, remove state, results and the venv
	rm -rf $(STATE) $(VENV) .metaflow .pytest_cache
