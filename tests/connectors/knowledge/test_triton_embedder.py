"""The embedder through the real tritonserver (CPU config, python backend) and its in-process fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connectors._process import free_port
from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, OnnxEmbedder
from connectors.knowledge.triton_embedder import TritonEmbedder
from connectors.triton.client import find_version_dir

ROOT = Path(__file__).resolve().parents[3]
TEXTS = [f"question number {i}: how do refunds work for order {i}?" * (1 + i % 3) for i in range(40)]


@pytest.fixture(scope="module")
def version_dir() -> Path:
    found = find_version_dir(ROOT / "triton_models", EMBEDDER_MODEL_NAME)
    assert found is not None
    return found


def test_triton_serves_the_same_vectors_as_the_model_in_process(project_triton, version_dir: Path):
    remote = TritonEmbedder(project_triton.grpc_url, version_dir, batch_size=16)
    local = OnnxEmbedder(version_dir, intra_op_threads=1, batch_size=16)
    try:
        assert remote.ready()
        assert remote.model_id == local.model_id and remote.dimension == 384
        served = remote.embed_passages(TEXTS)
        assert np.abs(served - local.embed_passages(TEXTS)).max() < 1e-4
        assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
        assert remote.answered["triton"] == len(TEXTS) and remote.answered["onnxruntime"] == 0
    finally:
        remote.close()


def test_with_triton_unreachable_the_in_process_model_answers_and_the_breaker_opens(version_dir: Path):
    local = OnnxEmbedder(version_dir, intra_op_threads=1)
    remote = TritonEmbedder(f"127.0.0.1:{free_port()}", version_dir, timeout_s=1.0, retries=0, fallback=local)
    try:
        vectors = remote.embed_queries(TEXTS[:3])
        assert np.abs(vectors - local.embed_queries(TEXTS[:3])).max() < 1e-6
        assert remote.answered["onnxruntime"] == 3 and remote.answered["triton"] == 0
        assert remote.breaker.state == "open"
    finally:
        remote.close()


def test_without_a_fallback_a_triton_failure_is_raised(version_dir: Path):
    remote = TritonEmbedder(f"127.0.0.1:{free_port()}", version_dir, timeout_s=1.0, retries=0)
    try:
        with pytest.raises(Exception):  # noqa: B017 (tritonclient's own exception type)
            remote.embed_queries(["anything"])
    finally:
        remote.close()


def test_build_embedder_runs_in_process_unless_a_triton_url_is_configured(tmp_path: Path):
    from connectors.knowledge.triton_embedder import build_embedder

    repository = ROOT / "triton_models"
    assert isinstance(build_embedder(repository), OnnxEmbedder)
    served = build_embedder(repository, f"127.0.0.1:{free_port()}")
    assert isinstance(served, TritonEmbedder) and isinstance(served.fallback, OnnxEmbedder)
    assert served.model_id == served.fallback.model_id  # the same vectors whoever answers
    with pytest.raises(FileNotFoundError, match="supportflow kb export-embedder"):
        build_embedder(tmp_path)
