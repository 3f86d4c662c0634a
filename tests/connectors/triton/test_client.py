"""Triton serving of the intent model: a real tritonserver (CPU config) against in-process onnxruntime.

The model is the tiny ONNX model of tests/support/triton_models.py, with the real configs and model.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from connectors._process import free_port
from connectors.triton import (
    UNAVAILABLE,
    FallbackIntentModel,
    IntentTokenizer,
    OnnxIntentModel,
    TritonIntentModel,
    build_intent_model,
    load_labels,
)
from tests.support.triton_models import LABELS, make_model_repository

TEXTS = [
    "where is my order",
    "I want to cancel my order please",
    "refund",
    "how can I change the delivery address for my account and the invoice",
    "password",
    "track shipping of the broken item I want to return",
    "help",
    "payment for the invoice of my order",
    "unknown words only here",
    "need a refund for the broken item and I want to cancel the payment please",
]
TRITON = "triton:intent_classifier:1"
ORT = "onnxruntime:intent_classifier:1"


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def version_dir(triton_repository: Path) -> Path:
    return triton_repository / "intent_classifier" / "1"


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    np.testing.assert_allclose(softmax(a), softmax(b), atol=1e-4)


async def test_single_prediction_through_triton_equals_in_process(triton_server, version_dir):
    tokenizer = IntentTokenizer.from_version_dir(version_dir)
    local = OnnxIntentModel(version_dir)
    remote = TritonIntentModel(triton_server.grpc_url, timeout_s=5)
    try:
        for text in TEXTS:
            batch = tokenizer.encode([text])
            assert_same(
                await remote.logits(batch.input_ids, batch.attention_mask),
                local.run(batch.input_ids, batch.attention_mask),
            )
        assert remote.model_used == TRITON
    finally:
        await remote.close()


async def test_batched_predictions_through_triton_equal_in_process_one_by_one(triton_server, version_dir):
    tokenizer = IntentTokenizer.from_version_dir(version_dir)
    local = OnnxIntentModel(version_dir)
    remote = TritonIntentModel(triton_server.grpc_url, timeout_s=5)
    try:
        batch = tokenizer.encode(TEXTS)  # padded to the longest text
        through_triton = await remote.logits(batch.input_ids, batch.attention_mask)
        one_by_one = np.concatenate(
            [local.run(b.input_ids, b.attention_mask) for b in map(tokenizer.encode, ([t] for t in TEXTS))]
        )
        assert through_triton.shape == (len(TEXTS), len(LABELS))
        assert_same(through_triton, one_by_one)
    finally:
        await remote.close()


async def test_concurrent_requests_are_batched_and_answered_by_triton(triton_server, version_dir):
    model = build_intent_model(version_dir.parents[1], triton_url=triton_server.grpc_url, max_batch=16, max_wait_ms=20)
    local = OnnxIntentModel(version_dir)
    tokenizer = IntentTokenizer.from_version_dir(version_dir)
    texts = TEXTS * 4
    try:
        predictions = await model.classify_many(texts)
    finally:
        await model.close()
    assert max(model.batcher.batch_sizes) > 1, list(model.batcher.batch_sizes)
    assert sum(model.batcher.batch_sizes) == len(texts)
    assert {p.model_used for p in predictions} == {TRITON}
    expected = softmax(
        np.concatenate([local.run(b.input_ids, b.attention_mask) for b in (tokenizer.encode([t]) for t in texts)])
    )
    for prediction, probs in zip(predictions, expected, strict=True):
        assert prediction.intent == LABELS[int(probs.argmax())]
        np.testing.assert_allclose(prediction.probabilities, probs, atol=1e-4)


async def test_triton_killed_mid_run_every_record_is_answered_by_the_fallback(own_triton, version_dir):
    model = build_intent_model(
        version_dir.parents[1], triton_url=own_triton.grpc_url, timeout_s=0.5, retries=1, max_batch=8, max_wait_ms=5,
        breaker_open_s=60,
    )  # fmt: skip
    local = OnnxIntentModel(version_dir)
    tokenizer = IntentTokenizer.from_version_dir(version_dir)
    waves, answers = 10, []
    try:
        for wave in range(waves):
            if wave == 4:
                own_triton.kill()
            answers.append(await model.classify_many(TEXTS))
    finally:
        await model.close()
    flat = [p for wave in answers for p in wave]
    assert len(flat) == waves * len(TEXTS)
    assert all(p.available for p in flat)
    assert {p.model_used for p in answers[0]} == {TRITON}
    assert {p.model_used for wave in answers[4:] for p in wave} == {ORT}
    assert model.answered[TRITON] == 4 * len(TEXTS) and model.answered[ORT] == 6 * len(TEXTS)
    assert model.breaker.trips == 1 and model.breaker.state == "open"
    expected = softmax(
        np.concatenate([local.run(b.input_ids, b.attention_mask) for b in (tokenizer.encode([t]) for t in TEXTS)])
    )
    for wave in answers:
        for prediction, probs in zip(wave, expected, strict=True):
            assert prediction.intent == LABELS[int(probs.argmax())]


async def test_triton_down_from_the_start_falls_back_and_the_breaker_spares_the_timeouts(version_dir):
    model = build_intent_model(
        version_dir.parents[1], triton_url=f"127.0.0.1:{free_port()}", timeout_s=0.5, retries=2, breaker_open_s=60
    )
    try:
        first = await model.classify("where is my order")
        started = time.monotonic()
        rest = [await model.classify(text) for text in TEXTS]
        elapsed = time.monotonic() - started
    finally:
        await model.close()
    assert first.model_used == ORT and {p.model_used for p in rest} == {ORT}
    assert elapsed < 1.0, f"{len(TEXTS)} sequential records took {elapsed:.2f}s with the breaker open"
    assert model.breaker.trips == 1


async def test_breaker_probes_triton_again_and_closes_when_it_is_back(triton_server, version_dir):
    model = build_intent_model(version_dir.parents[1], triton_url=triton_server.grpc_url, breaker_open_s=0.2)
    try:
        model.breaker.failure()  # as if Triton had just failed
        assert (await model.classify("refund")).model_used == ORT
        await asyncio.sleep(0.25)
        assert (await model.classify("refund")).model_used == TRITON
        assert model.breaker.state == "closed"
    finally:
        await model.close()


async def test_no_model_at_all_answers_unavailable_without_raising(tmp_path):
    model = build_intent_model(tmp_path / "empty", triton_url=f"127.0.0.1:{free_port()}")
    try:
        predictions = await model.classify_many(["where is my order", "refund"])
    finally:
        await model.close()
    assert [(p.intent, p.confidence, p.model_used) for p in predictions] == [("out_of_scope", 0.0, UNAVAILABLE)] * 2


async def test_triton_dead_and_no_fallback_answers_unavailable(version_dir):
    model = build_intent_model(
        version_dir.parents[1],
        triton_url=f"127.0.0.1:{free_port()}",
        in_process_fallback=False,
        timeout_s=0.3,
        retries=0,
    )
    try:
        prediction = await model.classify("where is my order")
    finally:
        await model.close()
    assert (prediction.intent, prediction.model_used) == ("out_of_scope", UNAVAILABLE)


def test_labels_and_tokenizer_of_a_version_dir(tmp_path):
    version_dir = make_model_repository(tmp_path, version="3") / "intent_classifier" / "3"
    assert load_labels(version_dir) == LABELS
    batch = IntentTokenizer.from_version_dir(version_dir).encode(["where is my order", "refund"])
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, 4)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    assert isinstance(build_intent_model(tmp_path), FallbackIntentModel)


async def test_committed_model_through_triton_equals_in_process_batch_for_batch(project_triton):
    """The real int8 model, the same batches both ways: Triton's python backend adds nothing and loses nothing,
    the out-of-scope score included."""
    from pipelines.ml.evaluate import read_labelled_csv
    from pipelines.runtime.settings import PROJECT_DIR

    version_dir = PROJECT_DIR / "triton_models" / "intent_classifier" / "1"
    texts, _ = read_labelled_csv(version_dir / "test_split.csv", "text", "label")
    tokenizer = IntentTokenizer.from_version_dir(version_dir, 64)
    local = OnnxIntentModel(version_dir)
    remote = TritonIntentModel(project_triton.grpc_url, timeout_s=10)
    try:
        for start in (0, 1, 33, 97):
            batch = tokenizer.encode(texts[start : start + (1 if start == 0 else 32)])
            served, served_scores = await remote.infer(batch.input_ids, batch.attention_mask, with_oos=True)
            logits, scores = local.run_with_oos(batch.input_ids, batch.attention_mask)
            np.testing.assert_allclose(served, logits, atol=1e-4)
            assert (
                served_scores is not None and scores is not None and served_scores.shape == (batch.input_ids.shape[0],)
            )
            np.testing.assert_allclose(served_scores, scores, atol=1e-3)
    finally:
        await remote.close()
