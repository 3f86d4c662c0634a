"""What every Triton call of ours shares: the token inputs it sends and the retries it allows.

The intent model (async, on the event loop) and the text embedder (sync, in a batcher's thread)
send the same two INT64 tensors and retry the same failures; both build on these two functions so
a change to what is retried reaches both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tenacity import retry_if_exception, stop_after_attempt, wait_exponential

NOT_RETRIED = ("StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.UNIMPLEMENTED")
"""A request Triton refused as malformed or for a model it does not have fails the same way again."""


def token_inputs(input_ids: np.ndarray, attention_mask: np.ndarray) -> list[Any]:
    """`input_ids` and `attention_mask` as the INT64 gRPC inputs both our encoder models take."""
    from tritonclient.grpc import InferInput

    inputs = [InferInput("input_ids", list(input_ids.shape), "INT64"),
              InferInput("attention_mask", list(attention_mask.shape), "INT64")]  # fmt: skip
    inputs[0].set_data_from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64))
    inputs[1].set_data_from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64))
    return inputs


def is_retried(exc: BaseException) -> bool:
    """A Triton error a second attempt can fix: unavailable, timed out, overloaded."""
    from tritonclient.utils import InferenceServerException

    return isinstance(exc, InferenceServerException) and exc.status() not in NOT_RETRIED


def retry_policy(retries: int, backoff_s: float) -> dict[str, Any]:
    """Keyword arguments for tenacity's `Retrying` or `AsyncRetrying`: `retries` more attempts after
    the first, exponential backoff from `backoff_s`, and the last error re-raised, not wrapped."""
    return {
        "stop": stop_after_attempt(retries + 1),
        "wait": wait_exponential(multiplier=backoff_s),
        "retry": retry_if_exception(is_retried),
        "reraise": True,
    }


def retry_budget_s(retries: int, backoff_s: float, timeout_s: float) -> float:
    """The longest one call under `retry_policy` can take: every attempt's timeout plus the waits."""
    return (retries + 1) * timeout_s + sum(backoff_s * 2**i for i in range(retries))
