# dcim: the two commands of the README, and a few helpers.
#   make demo   install into .venv and run the whole system on the reference site
#   make test   install into .venv (plus Debian's influxdb, mbpoll) and run every test

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SITE   ?= config/cyberport5.yaml

.PHONY: demo test install system-deps node-deps bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

system-deps:
	./scripts/install-system-deps.sh

node-deps:
	./scripts/install-node-deps.sh

demo: install
	$(BIN)/dcim demo $(SITE)

test: install system-deps node-deps
	$(BIN)/pytest

bench: install system-deps
	$(BIN)/python bench/storage.py

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
