"""nlu_model: the intent from the served model through Triton, in process, or not at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connectors._process import free_port
from operators.nlu_model import NluModel, NluModelConfig
from operators.route import Route
from tests.support.operators import context, context_turn
from tests.support.triton_models import LABELS

TRITON = "triton:intent_classifier:1"
ORT = "onnxruntime:intent_classifier:1"
TEXTS = ["where is my order", "I want to cancel my order", "refund please", "change my password", "help"] * 6


def operator(repo: Path, triton_url: str | None, **fields: object) -> NluModel:
    op = NluModel(NluModelConfig(model_repository=repo, triton_url=triton_url, **fields))
    op.warm_up(context())
    return op


async def test_single_record_through_triton_matches_in_process(triton_server, triton_repository):
    remote = operator(triton_repository, triton_server.grpc_url)
    local = operator(triton_repository, None)
    try:
        turn = context_turn("where is my order 1234567?")
        a, b = await remote.run(turn, context()), await local.run(turn, context())
    finally:
        await remote.close()
        await local.close()
    assert a.nlu.model_used == TRITON and b.nlu.model_used == ORT
    assert a.nlu.intent == b.nlu.intent and a.nlu.intent in LABELS
    assert a.nlu.confidence == pytest.approx(b.nlu.confidence, abs=1e-4)
    assert a.nlu.entities == b.nlu.entities and a.nlu.sentiment == b.nlu.sentiment
    assert a.session.sentiment_trend == [a.nlu.sentiment.score]


async def test_concurrent_records_go_to_triton_in_batches(triton_server, triton_repository):
    op = operator(triton_repository, triton_server.grpc_url, max_batch=16, max_wait_ms=20)
    try:
        turns = await asyncio.gather(*(op.run(context_turn(t), context()) for t in TEXTS))
    finally:
        await op.close()
    assert {t.nlu.model_used for t in turns} == {TRITON}
    assert op.model is not None and max(op.model.batcher.batch_sizes) > 1


async def test_triton_unreachable_answers_in_process_and_says_so(triton_repository):
    op = operator(triton_repository, f"127.0.0.1:{free_port()}", timeout_s=0.3, retries=0)
    try:
        turn = await op.run(context_turn("refund please"), context())
    finally:
        await op.close()
    assert turn.nlu.model_used == ORT and turn.nlu.intent in LABELS


async def test_threshold_turns_a_weak_intent_into_out_of_scope(triton_repository):
    op = operator(triton_repository, None, out_of_scope_threshold=1.0)
    try:
        turn = await op.run(context_turn("refund please"), context())
    finally:
        await op.close()
    assert turn.nlu.intent == "out_of_scope" and turn.nlu.model_used == ORT


async def test_no_model_escalates_instead_of_crashing(tmp_path):
    op = operator(tmp_path / "nothing", f"127.0.0.1:{free_port()}")
    try:
        turn = await op.run(context_turn("where is my order"), context())
    finally:
        await op.close()
    assert (turn.nlu.intent, turn.nlu.confidence, turn.nlu.model_used) == ("out_of_scope", 0.0, "unavailable")
    routed = await Route().run(turn, context())
    assert (routed.route.branch, routed.route.reason) == ("human", "out_of_scope")


# The committed model (triton_models/intent_classifier/1): what `supportflow run` answers with.

PROJECT_REPOSITORY = Path(__file__).resolve().parents[2] / "triton_models"
REAL_ORT = "onnxruntime:intent_classifier:1"
REAL_TRITON = "triton:intent_classifier:1"
UNDERSTOOD = [
    ("I want to cancel my order", "cancel_order"),
    ("how do I get a refund?", "get_refund"),
    ("I need to talk to a human", "contact_human_agent"),
    ("change my shipping address to 5 Elm St", "change_shipping_address"),
    ("I forgot my password", "recover_password"),
    ("can I get the invoice for order 88812", "get_invoice"),
]
NOT_OURS = [
    "what's the weather like in Paris tomorrow?",
    "who won the football match yesterday",
    "asdf qwer zxcv",
    "what is 4417 plus 2290",  # issue 15: arithmetic was taken for order tracking
]


async def test_committed_model_understands_support_requests_confidently():
    op = operator(PROJECT_REPOSITORY, None)
    try:
        turns = await asyncio.gather(*(op.run(context_turn(text), context()) for text, _ in UNDERSTOOD))
    finally:
        await op.close()
    assert [t.nlu.intent for t in turns] == [intent for _, intent in UNDERSTOOD]
    assert all(t.nlu.confidence >= 0.85 and t.nlu.model_used == REAL_ORT for t in turns)


async def test_calibrated_threshold_from_the_model_turns_off_topic_text_out_of_scope():
    op = operator(PROJECT_REPOSITORY, None)
    try:
        turns = [await op.run(context_turn(text), context()) for text in NOT_OURS]
    finally:
        await op.close()
    assert op.model is not None and op.model.oos_score_threshold is not None, "labels.json carries the threshold"
    assert [t.nlu.intent for t in turns] == ["out_of_scope"] * len(NOT_OURS)
    routed = await Route().run(turns[0], context())
    assert (routed.route.branch, routed.route.reason) == ("human", "out_of_scope")


async def test_the_models_oos_score_is_what_flags_off_topic_text():
    """With the score's threshold moved out of reach, the same texts get an intent: the flag came from the score."""
    op = operator(PROJECT_REPOSITORY, None, oos_score_threshold=1e9)
    try:
        turns = [await op.run(context_turn(text), context()) for text in NOT_OURS]
    finally:
        await op.close()
    assert op.model is not None and op.model.oos_threshold == 0.0, "no confidence floor besides the score"
    assert all(t.nlu.intent != "out_of_scope" for t in turns)


async def test_committed_model_through_triton_answers_as_in_process(project_triton):
    remote = operator(PROJECT_REPOSITORY, project_triton.grpc_url)
    local = operator(PROJECT_REPOSITORY, None)
    try:
        texts = [text for text, _ in UNDERSTOOD] + NOT_OURS
        served = await asyncio.gather(*(remote.run(context_turn(t), context()) for t in texts))
        in_process = [await local.run(context_turn(t), context()) for t in texts]
    finally:
        await remote.close()
        await local.close()
    assert {t.nlu.model_used for t in served} == {REAL_TRITON}
    assert [t.nlu.intent for t in served] == [t.nlu.intent for t in in_process]
    assert [t.nlu.intent for t in served[len(UNDERSTOOD) :]] == ["out_of_scope"] * len(NOT_OURS), "Triton's oos_score"
    # Not exactly equal: the int8 model quantizes activations per batch (see README, "Serving the NLU
    # model"), and here Triton saw one batch of nine texts where the in-process model saw nine of one.
    # The shift is largest where the model is unsure (off-topic texts, all out of scope either way);
    # tests/connectors/triton/test_client.py pins exact equality for identical batches.
    for a, b in zip(served[: len(UNDERSTOOD)], in_process, strict=False):
        assert a.nlu.confidence == pytest.approx(b.nlu.confidence, abs=0.02)


# Returns and exchanges have playbooks but no label in the committed model: the keyword rules name them.
RETURNS_AND_EXCHANGES = [
    ("I want to start a return for order 6105466", "return_items"),
    ("I'd like to send the mouse from order 6105466 back", "return_items"),
    ("can I exchange the sneakers from order 6242758? wrong size", "exchange_items"),
    ("I'd like a different size for the hoodie in 9075352", "exchange_items"),
]


async def test_a_return_or_an_exchange_reaches_its_playbook_although_the_model_has_no_label_for_it():
    op = operator(PROJECT_REPOSITORY, None)
    try:
        turns = [await op.run(context_turn(text), context()) for text, _ in RETURNS_AND_EXCHANGES]
        tracked = await op.run(context_turn("where is my order 1234567?"), context())
    finally:
        await op.close()
    assert op.model is not None and not {"return_items", "exchange_items"} & set(op.model.meta.labels)
    assert [t.nlu.intent for t in turns] == [intent for _, intent in RETURNS_AND_EXCHANGES]
    assert all(t.nlu.confidence >= 0.85 and t.nlu.model_used == "keywords-v1" for t in turns)
    assert tracked.nlu.model_used == REAL_ORT, "every other intent is still the model's"


async def test_the_reply_path_spends_no_ner_on_names_and_places_yet_keeps_the_shaped_entities():
    """Issue 15's profile: spaCy person/place NER was 1.3 ms of the agent worker's CPU per message,
    and nothing after `nlu_model` reads those entities; the order number and email still come out."""
    from pipelines.runtime.topology import load_topology

    configured = load_topology(Path(__file__).resolve().parents[2] / "topology.yaml").operator(NluModel)
    assert configured is not None and configured.config.names_and_places is False  # type: ignore[attr-defined]
    text = "Hi, this is Mr. John Smith from Boston, order #1000123, email john.smith@example.com"
    types: dict[bool, set[str]] = {}
    for names_and_places in (False, True):
        op = operator(PROJECT_REPOSITORY, None, names_and_places=names_and_places)
        try:
            turn = await op.run(context_turn(text), context())
        finally:
            await op.close()
        types[names_and_places] = {e.type for e in turn.nlu.entities}
    assert {"order_number", "email"} <= types[False] and not {"person", "place"} & types[False]
    assert {"order_number", "email", "person"} <= types[True]
