"""Shared fixtures: every Kafka test runs against a real tansu broker started here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.embedded import EmbeddedBroker
from tests.support import WorkerPool


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh in-memory tansu broker per test, so tests never see each other's records."""
    with EmbeddedBroker(log_file=tmp_path / "tansu.log") as started:
        yield started


@pytest.fixture
def workers(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[WorkerPool]:
    pool = WorkerPool(broker.bootstrap, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()
