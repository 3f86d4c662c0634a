"""The text embedder served by Triton (`triton_models/text_embedder/`), with the in-process model behind it.

As for the intent classifier (connectors/triton/client.py), the client tokenizes (the version's
`tokenizer.json`, with `embedder.json`'s prefixes and token limit) and Triton runs the graph on
token ids; the graph pools and normalises, so Triton returns the final vectors. Calls are
synchronous gRPC (the `Embedder` contract is synchronous: ingest batches run in a worker thread)
with a per-attempt timeout and retries for what a retry can fix. When Triton fails and an
in-process `OnnxEmbedder` of the same version is given, the batch is embedded there and the
circuit breaker keeps the next batches off Triton for a while; both give the same vectors (the
same `model.onnx`), so `model_id` does not change with who answered.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tenacity import Retrying

from connectors.knowledge.embedding import (
    EMBEDDER_MODEL_NAME,
    OnnxEmbedder,
    TextTokenizer,
    TokenBatch,
    l2_normalise,
    length_sorted_batches,
    load_embedder_meta,
)
from connectors.triton.client import CircuitBreaker
from connectors.triton.requests import retry_policy, token_inputs

__all__ = ["TritonEmbedder", "build_embedder"]

log = logging.getLogger(__name__)


class TritonEmbedder:
    """`Embedder` over Triton's gRPC API; `fallback` (optional) answers when Triton cannot."""

    def __init__(
        self,
        url: str,
        version_dir: Path,
        model_name: str = EMBEDDER_MODEL_NAME,
        model_version: str = "",
        batch_size: int = 32,
        timeout_s: float = 10.0,
        retries: int = 1,
        retry_backoff_s: float = 0.05,
        fallback: OnnxEmbedder | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = url.removeprefix("grpc://")
        self.version_dir = Path(version_dir)
        self.meta = load_embedder_meta(self.version_dir)
        self.tokenizer = TextTokenizer(self.version_dir / "tokenizer.json", self.meta.max_length)
        self.model_name = model_name
        self.model_version = model_version
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.fallback = fallback
        self.breaker = breaker or CircuitBreaker(failures=1, open_s=5.0)
        self.answered: Counter[str] = Counter()
        """Texts embedded per answerer ("triton", "onnxruntime"): for tests and the degraded-mode metric."""
        self._client: Any = None

    @property
    def model_id(self) -> str:
        return self.meta.model_id

    @property
    def dimension(self) -> int:
        return self.meta.dimension

    def _connect(self) -> Any:
        if self._client is None:
            import tritonclient.grpc as grpcclient

            self._client = grpcclient.InferenceServerClient(self.url)
        return self._client

    def ready(self) -> bool:
        try:
            return bool(self._connect().is_model_ready(self.model_name, self.model_version))
        except Exception:
            return False

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self.meta.passage_prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self.meta.query_prefix + t for t in texts])

    def infer(self, batch: TokenBatch) -> np.ndarray:
        """One batch through Triton: the `embedding` output [batch, dimension]; raises when Triton fails."""
        from tritonclient.grpc import InferRequestedOutput

        client = self._connect()
        inputs = token_inputs(batch.input_ids, batch.attention_mask)
        outputs = [InferRequestedOutput(self.meta.output)]
        retrying = Retrying(**retry_policy(self.retries, self.retry_backoff_s))
        result = retrying(
            client.infer,
            self.model_name,
            inputs,
            model_version=self.model_version,
            outputs=outputs,
            client_timeout=self.timeout_s,
        )
        return np.asarray(result.as_numpy(self.meta.output), dtype=np.float32)

    def _run(self, batch: TokenBatch) -> np.ndarray:
        if self.breaker.allow():
            try:
                vectors = self.infer(batch)
                self.breaker.success()
                self.answered["triton"] += len(vectors)
                return l2_normalise(vectors)
            except Exception as exc:
                self.breaker.failure()
                if self.fallback is None:
                    raise
                log.warning("Triton embedder failed (%s: %s); embedding in process", type(exc).__name__, exc)
        if self.fallback is None:
            raise RuntimeError("the Triton embedder's circuit breaker is open and there is no in-process fallback")
        self.answered["onnxruntime"] += len(batch.input_ids)
        return self.fallback.run(batch)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        result = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for rows in length_sorted_batches(self.tokenizer.lengths(texts), self.batch_size):
            result[rows] = self._run(self.tokenizer.encode([texts[i] for i in rows]))
        return result

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                client.close()
            except Exception:  # a dead server's channel may complain on close
                log.debug("closing the Triton client failed", exc_info=True)


def build_embedder(
    model_repository: Path,
    triton_url: str | None = None,
    *,
    model_name: str = EMBEDDER_MODEL_NAME,
    model_version: str | None = None,
    intra_op_threads: int = 0,
) -> OnnxEmbedder | TritonEmbedder:
    """The knowledge base's embedder, chosen as the intent model's client is (connectors/triton/client.py):
    Triton at `triton_url` with the same `model.onnx` in process behind it, or in process only when no
    Triton is configured. Raises FileNotFoundError (saying how to make one) when the repository has no
    exported version."""
    from connectors.triton.client import find_version_dir

    version_dir = find_version_dir(model_repository, model_name, model_version)
    if version_dir is None:
        raise FileNotFoundError(f"no {model_name} model in {model_repository}: run `supportflow kb export-embedder`")
    in_process = OnnxEmbedder(version_dir, intra_op_threads=intra_op_threads)
    if not triton_url:
        return in_process
    return TritonEmbedder(triton_url, version_dir, model_name, model_version or version_dir.name, fallback=in_process)
