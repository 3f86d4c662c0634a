"""A real tritonserver (the nvidia-pytriton wheel's binary) on the CPU config, once per session.

`triton_server` serves the tiny test model (tests/support/triton_models.py); `project_triton` serves the
project's own `triton_models/` (the committed intent classifier), as `supportflow run` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stream import missing
from tests.support.triton_models import make_model_repository


def _require_pytriton() -> None:
    try:
        from connectors.triton import pytriton_dir

        pytriton_dir()
    except Exception as exc:  # the wheel is the only thing that may be missing, and never in CI
        missing(f"nvidia-pytriton (the tritonserver binary) is not usable: {exc}")


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_repository(tmp_path_factory.mktemp("triton_models"))


@pytest.fixture(scope="session")
def triton_server(triton_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Shared by tests that only read from it; tests that kill Triton start their own."""
    _require_pytriton()
    from connectors.triton import EmbeddedTriton

    log_file = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    server = EmbeddedTriton(triton_repository, log_file=log_file)
    server.start(timeout_s=90)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_triton(triton_repository: Path, tmp_path: Path) -> Iterator[object]:
    """A tritonserver of this test's own, free to be killed."""
    _require_pytriton()
    from connectors.triton import EmbeddedTriton

    server = EmbeddedTriton(triton_repository, log_file=tmp_path / "tritonserver.log")
    server.start(timeout_s=90)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def project_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """tritonserver on the project's model repository: the committed intent classifier."""
    _require_pytriton()
    from connectors.triton import EmbeddedTriton
    from pipelines.runtime.settings import PROJECT_DIR

    log_file = tmp_path_factory.mktemp("project-triton-log") / "tritonserver.log"
    server = EmbeddedTriton(PROJECT_DIR / "triton_models", log_file=log_file)
    server.start(timeout_s=120)
    try:
        yield server
    finally:
        server.stop()
