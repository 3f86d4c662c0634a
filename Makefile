# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv with this project and its dependencies on first use (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test demo bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("supportflow needs Python 3.11+" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/supportflow run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/supportflow demo

bench: $(STAMP)
	$(BIN)/supportflow bench --messages 10000 --conversations 1000 --out bench/results.json

clean:
	rm -rf $(VENV) .supportflow .pytest_cache .ruff_cache
