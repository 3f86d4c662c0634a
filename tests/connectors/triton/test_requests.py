"""The retry policy every Triton call shares, against a real tritonserver: what a retry can fix is
retried, a request for a model Triton does not have is not."""

from __future__ import annotations

import numpy as np
import pytest
from tenacity import AsyncRetrying
from tritonclient.utils import InferenceServerException

from connectors._process import free_port
from connectors.triton.requests import retry_budget_s, retry_policy, token_inputs

IDS = np.array([[101, 2054, 102]], dtype=np.int64)
MASK = np.ones_like(IDS)


async def _attempts(url: str, model: str, retries: int) -> tuple[int, InferenceServerException]:
    from tritonclient.grpc import aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    retrying = AsyncRetrying(**retry_policy(retries, 0.0))
    try:
        with pytest.raises(InferenceServerException) as failure:
            await retrying(client.infer, model, token_inputs(IDS, MASK), client_timeout=1.0)
    finally:
        await client.close()
    return retrying.statistics["attempt_number"], failure.value


async def test_an_unreachable_triton_is_tried_once_more_per_retry():
    attempts, error = await _attempts(f"127.0.0.1:{free_port()}", "intent_classifier", retries=2)
    assert attempts == 3, error


async def test_a_model_triton_does_not_have_fails_at_once_and_is_not_retried(triton_server):
    attempts, error = await _attempts(triton_server.grpc_url, "no_such_model", retries=2)
    assert attempts == 1
    assert "NOT_FOUND" in str(error.status()) or "unknown model" in str(error).lower(), error


def test_the_retry_budget_counts_every_attempt_and_every_wait():
    assert retry_budget_s(0, 0.05, 1.0) == 1.0
    assert retry_budget_s(2, 0.05, 1.0) == pytest.approx(3.0 + 0.05 + 0.10)
