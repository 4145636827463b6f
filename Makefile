# cdr-pipeline: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps demo test lint typecheck unit install-check bench clean

# Debian tools some tests drive: docker-compose validates deploy/compose.yaml offline,
# chromium renders the cycle report, redis-server (built with TLS) serves the
# Redis TLS test. Installed only when missing (needs root or sudo).
SYSTEM_DEPS := docker-compose chromium redis-server

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@missing=""; for tool in $(SYSTEM_DEPS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: setup
	$(BIN)/cdr-pipeline demo

lint: setup
	$(BIN)/ruff check pipeline tests benchmarks setup.py
	$(BIN)/ruff format --check pipeline tests benchmarks setup.py

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests/unit

# A normal (non-editable) install into a fresh virtualenv, run from outside the
# checkout: the wheel must carry its schemas, tariffs and sample reference data.
INSTALL_CHECK := $(CURDIR)/.install-check
install-check:
	rm -rf $(INSTALL_CHECK) && $(PYTHON) -m venv $(INSTALL_CHECK)/venv
	$(INSTALL_CHECK)/venv/bin/pip install --quiet --disable-pip-version-check . 2>&1 | grep -v "is ignored: it is neither" || true
	cd $(INSTALL_CHECK) && venv/bin/python -c "import pipeline, sys; sys.exit('editable install picked up' if '$(CURDIR)/pipeline' in pipeline.__file__ else 0)"
	cd $(INSTALL_CHECK) && venv/bin/cdr-pipeline demo --batch --events 20000 --workdir demo > demo.log 2>&1 || (cat $(INSTALL_CHECK)/demo.log; exit 1)
	@echo "install-check: non-editable install ran 'cdr-pipeline demo --batch'"
	rm -rf $(INSTALL_CHECK)

test: system-deps lint typecheck install-check
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info .install-check
