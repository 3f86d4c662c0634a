"""A real tritonserver (the nvidia-pytriton wheel's binary) on the CPU config, once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.triton_models import make_model_repository


def _require_pytriton() -> None:
    try:
        from connectors.triton import pytriton_dir

        pytriton_dir()
    except Exception as exc:  # the wheel is the only thing that may be missing
        pytest.skip(f"nvidia-pytriton (the tritonserver binary) is not importable: {exc}")


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
