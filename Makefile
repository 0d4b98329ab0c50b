# dcim: the two commands of the README, and a few helpers.
#   make demo   install into .venv and run the whole system on the reference site
#   make test   install into .venv (plus Debian's influxdb, mbpoll) and run every test

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SITE   ?= config/cyberport5.yaml

.PHONY: demo test install install-test system-deps node-deps bench clean

# The demo installs what it runs; the tests add their own tools (pytest, mypy, ...).
# pip -qq: errors only (a failed install still stops make with pip's error).
PIP = $(BIN)/pip --quiet --quiet --disable-pip-version-check

$(BIN)/.installed: pyproject.toml
	@echo "installing dcim into $(VENV) (about 2 minutes the first time) ..."
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed
	@echo "installing the test tools into $(VENV) ..."
	$(PIP) install -e '.[test]'
	touch $@

install: $(BIN)/.installed

install-test: $(BIN)/.installed-test

system-deps:
	./scripts/install-system-deps.sh

node-deps:
	./scripts/install-node-deps.sh

demo: install
	$(BIN)/dcim demo $(SITE)

# Two workers, one test file each at a time (a file's fixtures and order stay together): most
# tests wait on servers and browsers, so two at once take about half the time on 2 cores.
test: install-test system-deps node-deps
	$(BIN)/pytest -n 2 --dist loadfile

bench: install-test system-deps
	$(BIN)/python bench/storage.py

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
