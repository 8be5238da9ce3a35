# cmcgate — the two set-up commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cmcgate-installed
PYTEST_ARGS ?=

.PHONY: help deps venv demo test lint typecheck pytest bench fuzz clean

help:
	@echo "make demo   run the end-to-end demo on embedded defaults (installs what it needs)"
	@echo "make test   install everything, then lint, type-check and run the tests"
	@echo "make lint   ruff + mypy only;  make bench  benchmarks (see docs/performance.md)"

deps:
	@scripts/install-deps.sh

$(STAMP): pyproject.toml scripts/bootstrap-venv.sh
	@scripts/bootstrap-venv.sh $(VENV)
	@touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

typecheck: lint

pytest: deps $(STAMP)
	@# pytest exits 5 when it collected no test: that is a failure here, never a pass.
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: deps $(STAMP) lint pytest

demo: deps $(STAMP)
	$(BIN)/python scripts/demo.py

BENCHES ?= cmc keys ca ca_cmc ra_rest dkim_signing smime broker gateway postfix_front

bench: deps $(STAMP)
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

fuzz: deps $(STAMP)
	$(BIN)/pytest -m fuzz $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-out
