"""Intent classification clients: Triton over gRPC, onnxruntime in process, and the two together.

Tokenization happens here, in the client, with the `tokenizers` library and the version's own
`tokenizer.json` (see README, "Serving the NLU model"): the model behind Triton takes token ids.
`FallbackIntentModel` is what the `nlu_model` operator uses: callers submit one text each; a
`MicroBatcher` turns concurrent submits into one batch; the batch goes to Triton, or - when
Triton times out, is unreachable, or its circuit breaker is open - to the same `model.onnx` run
in process. Each prediction says which model answered (`model_used`). With no model at all it
answers `unavailable` predictions; it never raises to its caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tenacity import AsyncRetrying

from connectors.batching import MicroBatcher
from connectors.triton.requests import retry_budget_s, retry_policy, token_inputs

log = logging.getLogger(__name__)

__all__ = [
    "OOS_SCORE",
    "UNAVAILABLE",
    "CircuitBreaker",
    "FallbackIntentModel",
    "IntentTokenizer",
    "ModelMeta",
    "OnnxIntentModel",
    "Prediction",
    "Tokenized",
    "TritonIntentModel",
    "build_intent_model",
    "find_version_dir",
    "load_labels",
    "load_model_meta",
    "predictions",
    "softmax",
]

UNAVAILABLE = "unavailable"
OOS_SCORE = "oos_score"
"""The model output (float32 [batch, 1]) that trainers since issue 15 add: see pipelines/ml/train.py."""


@dataclass(frozen=True)
class Tokenized:
    input_ids: np.ndarray  # int64 [batch, seq], padded with the pad id
    attention_mask: np.ndarray  # int64 [batch, seq], 0 over padding


@dataclass(frozen=True)
class Prediction:
    intent: str
    confidence: float
    model_used: str
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    probabilities: tuple[float, ...] = ()
    oos_score: float | None = None
    """The model's out-of-scope score (higher: further from anything it was trained on), when it has one."""

    @property
    def available(self) -> bool:
        return self.model_used != UNAVAILABLE


def find_version_dir(model_repository: Path, model_name: str, version: str | None = None) -> Path | None:
    """`<repo>/<model>/<version>/`, or the highest numbered version holding a `model.onnx`."""
    model_dir = Path(model_repository) / model_name
    if version is not None:
        candidate = model_dir / str(version)
        return candidate if (candidate / "model.onnx").is_file() else None
    if not model_dir.is_dir():
        return None
    versions = [p for p in model_dir.iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


@dataclass(frozen=True)
class ModelMeta:
    """What `labels.json` says about a version: how to read its logits and when to say out-of-scope.

    `temperature` is the calibration found by the trainer on held-out data (probabilities are
    softmax(logits / temperature)); `oos_threshold` is the calibrated confidence under which the
    intent is `out_of_scope`; `max_length` is the token length the model was trained with.
    `oos_score_threshold` is set when the model has an `oos_score` output (models trained since issue
    15): a score above it means out of scope, whatever the confidence.
    """

    labels: list[str]
    temperature: float = 1.0
    oos_threshold: float = 0.0
    max_length: int = 128
    oos_score_threshold: float | None = None


def load_model_meta(version_dir: Path) -> ModelMeta:
    """`labels.json`: a list of names in logit order, or {"labels": [...], "temperature": ..., ...}."""
    data: Any = json.loads((Path(version_dir) / "labels.json").read_text())
    if not isinstance(data, dict):
        return ModelMeta([str(label) for label in data])
    labels: Any = data.get("labels", data.get("id2label", data))
    if isinstance(labels, dict):
        labels = [labels[k] for k in sorted(labels, key=lambda k: int(k))]
    oos_score = data.get("oos_score")
    return ModelMeta(
        labels=[str(label) for label in labels],
        temperature=float(data.get("temperature", 1.0)),
        oos_threshold=float(data.get("oos_threshold", 0.0)),
        max_length=int(data.get("max_length", 128)),
        oos_score_threshold=float(oos_score["threshold"]) if isinstance(oos_score, dict) else None,
    )


def load_labels(version_dir: Path) -> list[str]:
    return load_model_meta(version_dir).labels


class IntentTokenizer:
    """The version's `tokenizer.json` (HF `tokenizers`), truncating and padding to the batch's longest."""

    def __init__(self, tokenizer_file: Path, max_length: int = 128) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    @classmethod
    def from_version_dir(cls, version_dir: Path, max_length: int = 128) -> IntentTokenizer:
        return cls(Path(version_dir) / "tokenizer.json", max_length)

    def encode(self, texts: Sequence[str]) -> Tokenized:
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max(1, *(len(e.ids) for e in encodings)) if encodings else 1
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return Tokenized(ids, mask)


def _model_label(kind: str, version_dir: Path) -> str:
    return f"{kind}:{version_dir.parent.name}:{version_dir.name}"


class OnnxIntentModel:
    """The version's `model.onnx` in this process (onnxruntime, CPU)."""

    def __init__(self, version_dir: Path, intra_op_threads: int = 0, model_file: str = "model.onnx") -> None:
        import onnxruntime as ort

        self.version_dir = Path(version_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # No spinning: idle onnxruntime threads would otherwise busy-wait on cores the worker needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.version_dir / model_file), options, providers=["CPUExecutionProvider"]
        )
        self.model_used = _model_label("onnxruntime", self.version_dir)
        self.has_oos_score = OOS_SCORE in {o.name for o in self.session.get_outputs()}

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        return np.asarray(self.session.run(["logits"], feeds)[0], dtype=np.float32)

    def run_with_oos(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and, when the model has that output, the out-of-scope score per text (from the same run)."""
        if not self.has_oos_score:
            return self.run(input_ids, attention_mask), None
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        logits, score = self.session.run(["logits", OOS_SCORE], feeds)
        return np.asarray(logits, dtype=np.float32), np.asarray(score, dtype=np.float32).reshape(-1)

    async def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self.run, input_ids, attention_mask)

    async def close(self) -> None:
        return None


class TritonIntentModel:
    """The model behind a Triton server, over gRPC (`tritonclient.grpc.aio`).

    Each attempt has `timeout_s`; an unreachable server, a timeout or an overloaded server is
    retried `retries` times with a short backoff; a malformed request is not. The gRPC channel
    belongs to the event loop that first calls `logits`.
    """

    def __init__(
        self,
        url: str,
        model_name: str = "intent_classifier",
        model_version: str = "",
        timeout_s: float = 1.0,
        retries: int = 1,
        retry_backoff_s: float = 0.05,
    ) -> None:
        self.url = url.removeprefix("grpc://")
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.answered_version = model_version
        self._client: Any = None

    @property
    def model_used(self) -> str:
        return f"triton:{self.model_name}:{self.answered_version or 'latest'}"

    @property
    def budget_s(self) -> float:
        """The longest one `logits` call can take, retries included."""
        return retry_budget_s(self.retries, self.retry_backoff_s, self.timeout_s) + 0.5

    def _connect(self) -> Any:
        if self._client is None:
            from tritonclient.grpc import aio as grpcclient

            self._client = grpcclient.InferenceServerClient(self.url)
        return self._client

    async def ready(self) -> bool:
        try:
            return bool(await self._connect().is_model_ready(self.model_name, self.model_version))
        except Exception:
            return False

    async def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return (await self.infer(input_ids, attention_mask, with_oos=False))[0]

    async def infer(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, with_oos: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and, with `with_oos`, the `oos_score` output of the same request."""
        from tritonclient.grpc import InferRequestedOutput

        client = self._connect()
        inputs = token_inputs(input_ids, attention_mask)
        outputs = [InferRequestedOutput("logits")] + ([InferRequestedOutput(OOS_SCORE)] if with_oos else [])
        retrying = AsyncRetrying(**retry_policy(self.retries, self.retry_backoff_s))
        result = await retrying(
            client.infer,
            self.model_name,
            inputs,
            model_version=self.model_version,
            outputs=outputs,
            client_timeout=self.timeout_s,
        )
        self.answered_version = result.get_response().model_version or self.answered_version
        logits = np.asarray(result.as_numpy("logits"), dtype=np.float32)
        score = np.asarray(result.as_numpy(OOS_SCORE), dtype=np.float32).reshape(-1) if with_oos else None
        return logits, score

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.close()
            except Exception:  # a dead server's channel may complain on close
                log.debug("closing the Triton client failed", exc_info=True)


class CircuitBreaker:
    """Open after `failures` consecutive failures; after `open_s`, let one call through to probe."""

    def __init__(self, failures: int = 1, open_s: float = 5.0) -> None:
        self.failures = failures
        self.open_s = open_s
        self.consecutive = 0
        self.opened_at: float | None = None
        self.trips = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if time.monotonic() - self.opened_at >= self.open_s else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None

    def failure(self) -> None:
        self.consecutive += 1
        if self.consecutive >= self.failures or self.opened_at is not None:
            if self.opened_at is None:
                self.trips += 1
            self.opened_at = time.monotonic()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predictions(
    logits: np.ndarray,
    labels: Sequence[str],
    model_used: str,
    temperature: float = 1.0,
    alternatives: int = 3,
    oos_scores: np.ndarray | None = None,
) -> list[Prediction]:
    """Logits [batch, n_labels] → one `Prediction` per row: calibrated softmax, top-1 and the next few."""
    probs = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    if probs.shape[1] != len(labels):
        raise ValueError(f"the model gave {probs.shape[1]} logits per text for {len(labels)} labels")
    if oos_scores is not None and len(oos_scores) != len(probs):
        raise ValueError(f"the model gave {len(oos_scores)} out-of-scope scores for {len(probs)} texts")
    out: list[Prediction] = []
    for n, row in enumerate(probs):
        order = np.argsort(-row)
        out.append(
            Prediction(
                intent=labels[order[0]],
                confidence=float(row[order[0]]),
                model_used=model_used,
                alternatives=[(labels[i], round(float(row[i]), 4)) for i in order[1 : 1 + alternatives]],
                probabilities=tuple(float(p) for p in row),
                oos_score=None if oos_scores is None else float(oos_scores[n]),
            )
        )
    return out


def unavailable(n: int) -> list[Prediction]:
    return [Prediction(intent="out_of_scope", confidence=0.0, model_used=UNAVAILABLE) for _ in range(n)]


class FallbackIntentModel:
    """Triton first, the in-process model when Triton fails, `unavailable` when neither can answer.

    Concurrent `classify` calls are batched by a `MicroBatcher` (up to `max_batch` texts or
    `max_wait_ms`). The batch function runs in the batcher's worker thread: it tokenizes, sends
    the batch to Triton on the event loop (the gRPC aio channel lives there) and waits up to the
    client's retry budget; on failure it runs the in-process model right there. A failed Triton
    call opens the circuit breaker for `breaker_open_s`, so while Triton is down batches go
    straight to the fallback instead of paying a timeout each; then one batch probes Triton again.
    """

    def __init__(
        self,
        tokenizer: IntentTokenizer | None,
        meta: ModelMeta | None,
        primary: TritonIntentModel | None = None,
        fallback: OnnxIntentModel | None = None,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        breaker: CircuitBreaker | None = None,
        name: str = "intent-model",
    ) -> None:
        self.tokenizer = tokenizer
        self.meta = meta or ModelMeta(labels=[])
        self.labels = list(self.meta.labels)
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker or CircuitBreaker()
        self.batcher: MicroBatcher[str, Prediction] = MicroBatcher(self._run_batch, max_batch, max_wait_ms, name)
        self.answered: Counter[str] = Counter()
        """Texts answered per `model_used`: for tests, metrics and the degraded-mode alert."""
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def oos_threshold(self) -> float:
        """The calibrated confidence under which the intent is out of scope (`labels.json`)."""
        return self.meta.oos_threshold

    @property
    def oos_score_threshold(self) -> float | None:
        """The `oos_score` above which the intent is out of scope (`labels.json`); None: the model has no score."""
        return self.meta.oos_score_threshold

    @property
    def available(self) -> bool:
        return self.tokenizer is not None and bool(self.labels) and (self.primary or self.fallback) is not None

    async def start(self) -> None:
        if not self.batcher.running:
            self._loop = asyncio.get_running_loop()
            self.batcher.start()

    async def classify(self, text: str) -> Prediction:
        """One text's prediction; never raises (an `unavailable` prediction instead)."""
        if not self.available:
            self.answered[UNAVAILABLE] += 1
            return unavailable(1)[0]
        try:
            if not self.batcher.running:
                await self.start()
            return await self.batcher.submit(text)
        except Exception:
            log.exception("intent model batch failed")
            self.answered[UNAVAILABLE] += 1
            return unavailable(1)[0]

    async def classify_many(self, texts: Sequence[str]) -> list[Prediction]:
        return list(await asyncio.gather(*(self.classify(t) for t in texts)))

    def _run_batch(self, texts: list[str]) -> list[Prediction]:
        assert self.tokenizer is not None
        batch = self.tokenizer.encode(texts)
        result: list[Prediction] | None = None
        # Ask for the out-of-scope score only when labels.json gives its threshold: older models lack the output.
        with_oos = self.meta.oos_score_threshold is not None
        if self.primary is not None and self._loop is not None and self.breaker.allow():
            future = asyncio.run_coroutine_threadsafe(
                self.primary.infer(batch.input_ids, batch.attention_mask, with_oos), self._loop
            )
            try:
                logits, scores = future.result(timeout=self.primary.budget_s)
                result = predictions(
                    logits, self.labels, self.primary.model_used, self.meta.temperature, oos_scores=scores
                )
                self.breaker.success()
            except Exception as exc:
                future.cancel()
                self.breaker.failure()
                log.warning("Triton failed (%s: %s); answering in process", type(exc).__name__, exc)
        if result is None and self.fallback is not None:
            try:
                logits, scores = self.fallback.run_with_oos(batch.input_ids, batch.attention_mask)
                if not with_oos:
                    scores = None
                result = predictions(
                    logits, self.labels, self.fallback.model_used, self.meta.temperature, oos_scores=scores
                )
            except Exception:
                log.exception("the in-process intent model failed")
        if result is None:
            result = unavailable(len(texts))
        self.answered[result[0].model_used] += len(result)
        return result

    async def close(self) -> None:
        await self.batcher.close()
        if self.primary is not None:
            await self.primary.close()


def build_intent_model(
    model_repository: Path,
    model_name: str = "intent_classifier",
    model_version: str | None = None,
    triton_url: str | None = None,
    in_process_fallback: bool = True,
    timeout_s: float = 1.0,
    retries: int = 1,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    breaker_open_s: float = 5.0,
    max_length: int | None = None,
) -> FallbackIntentModel:
    """Whatever of Triton / in-process onnxruntime can be had; never raises for a missing model.

    `max_length` unset: the length the version was trained with (`labels.json`).
    """
    version_dir = find_version_dir(model_repository, model_name, model_version)
    tokenizer: IntentTokenizer | None = None
    meta: ModelMeta | None = None
    fallback: OnnxIntentModel | None = None
    if version_dir is None:
        log.warning("no %s model in %s: NLU answers %r", model_name, model_repository, UNAVAILABLE)
    else:
        try:
            meta = load_model_meta(version_dir)
            tokenizer = IntentTokenizer.from_version_dir(version_dir, max_length or meta.max_length)
        except Exception:
            log.exception("cannot load the tokenizer or labels of %s", version_dir)
            tokenizer, meta = None, None
        if in_process_fallback:
            try:
                fallback = OnnxIntentModel(version_dir)
            except Exception:
                log.exception("cannot load %s/model.onnx in process", version_dir)
    primary = None
    if triton_url:
        version = model_version if model_version is not None else (version_dir.name if version_dir else "")
        primary = TritonIntentModel(triton_url, model_name, version, timeout_s, retries)
    return FallbackIntentModel(
        tokenizer,
        meta,
        primary,
        fallback,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        breaker=CircuitBreaker(open_s=breaker_open_s),
    )
