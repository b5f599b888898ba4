# A fresh clone needs two commands; each creates .venv and installs the package when missing.
#   make quickstart   train the CPU quickstart (configs/quickstart.yaml); extra overrides: ARGS="train.epochs=1"
#   make test         run the test suite (pytest collecting no test is a failure); pytest options: ARGS="-x -k loss"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# written after a successful install; setup.py newer than it (new dependencies, new commands) installs again
INSTALLED := $(VENV)/.installed
ARGS ?=

.PHONY: quickstart test install

quickstart: $(INSTALLED)
	$(BIN)/reid-train --config configs/quickstart.yaml $(ARGS)

test: $(INSTALLED)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure" >&2; exit 1; fi; \
	exit $$rc

install: $(INSTALLED)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): setup.py | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]"
	touch $@
