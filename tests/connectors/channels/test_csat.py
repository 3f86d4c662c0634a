"""Customers' satisfaction answers: `POST /v1/feedback/csat` and the web chat `csat` frame, onto sf.feedback.

The real ingress app (Starlette's TestClient over its ASGI interface) against a real tansu broker;
`sf.feedback` is read back to check what was (not) published.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.testclient import TestClient

from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.ingress import build_ingress
from schemas import Feedback, Message, OutboundMessage
from tests.support.stream import produce, read_topics

KEY = "sf-test-key-0123456789"
AUTH = {"X-API-Key": KEY}


def app_for(bootstrap: str, **extra: object) -> Any:
    s = Settings(kafka_bootstrap_servers=bootstrap, kafka_exact_offsets=True, **extra)
    topology = load_topology(s.topology_file)
    ensure_topics(s, topology)
    return build_ingress(s, topology)


def feedback_on_topic(bootstrap: str, expected: int) -> list[Feedback]:
    """In the order they were given: records of different conversations sit in different partitions,
    which a reader may interleave either way."""
    records = read_topics(bootstrap, ["sf.feedback"], until=lambda rs: len(rs) >= expected, timeout_s=10)
    return sorted((Feedback.model_validate_json(r.value or b"") for r in records), key=lambda f: f.at)


def publish_until_seen(bootstrap: str, topic: str, records: list[Any], seen: Any, timeout_s: float = 30.0) -> None:
    """Produce the records until the ingress's view shows them: its reader starts at the topic's end once
    assigned, so a record produced before that is not read (the view keeps a re-sent record once)."""
    deadline = time.monotonic() + timeout_s
    while not seen():
        assert time.monotonic() < deadline, "the ingress never saw the records"
        produce(bootstrap, topic, [(r.customer_id, r.to_bytes()) for r in records])
        for _ in range(20):
            if seen():
                return
            time.sleep(0.1)


def test_a_csat_answer_is_published_once_per_request_id_and_bad_ones_are_refused_clearly(
    broker: EmbeddedBroker,
) -> None:
    body = {"conversation_id": "conv-alice", "rating": 4, "comment": "quick, thanks", "request_id": "survey-1"}
    with TestClient(app_for(broker.bootstrap, api_keys=[KEY])) as client:
        no_key = client.post("/v1/feedback/csat", json=body)
        refused = {
            "rating 6": client.post("/v1/feedback/csat", json={**body, "rating": 6}, headers=AUTH),
            "rating 0": client.post("/v1/feedback/csat", json={**body, "rating": 0}, headers=AUTH),
            "rating as text": client.post("/v1/feedback/csat", json={**body, "rating": "5"}, headers=AUTH),
            "rating 4.5": client.post("/v1/feedback/csat", json={**body, "rating": 4.5}, headers=AUTH),
            "no conversation": client.post("/v1/feedback/csat", json={"rating": 5}, headers=AUTH),
            "unknown field": client.post("/v1/feedback/csat", json={**body, "stars": 5}, headers=AUTH),
        }
        not_json = client.post(
            "/v1/feedback/csat", content=b"{rating", headers={**AUTH, "content-type": "application/json"}
        )
        nul = client.post("/v1/feedback/csat", json={**body, "comment": "a\x00b"}, headers=AUTH)
        first = client.post("/v1/feedback/csat", json=body, headers=AUTH)
        resent = client.post("/v1/feedback/csat", json=body, headers={"Authorization": f"Bearer {KEY}"})
        other = client.post(
            "/v1/feedback/csat", json={"conversation_id": "conv-bob", "rating": 1, "channel": "sms"}, headers=AUTH
        )
        spec = client.get("/openapi.json").json()
    assert no_key.status_code == 401
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 422)
    assert not_json.status_code == 400 and "malformed JSON" in not_json.json()["error"]
    assert nul.status_code == 422 and "U+0000" in nul.json()["error"], "the feedback store could not hold it"
    six = refused["rating 6"].json()
    assert six == {"error": "invalid CSAT answer", "details": ["rating: Input should be less than or equal to 5"]}
    assert refused["rating as text"].json()["details"] == ["rating: Input should be a valid integer"]
    assert (first.status_code, resent.status_code, other.status_code) == (202, 202, 202)
    assert first.json()["feedback_id"] == resent.json()["feedback_id"], "a resent answer keeps its id: one row"
    assert "/v1/feedback/csat" in spec["paths"] and spec["components"]["schemas"]["CsatRequest"]["properties"]

    published = feedback_on_topic(broker.bootstrap, 3)
    assert len(published) == 3, "nothing refused was published"
    alice, again, bob = published
    assert alice == again.model_copy(update={"at": alice.at}) and alice.feedback_id == first.json()["feedback_id"]
    assert (alice.kind, alice.rating, alice.comment, alice.author, alice.conversation_id) == (
        "csat", 4, "quick, thanks", "customer", "conv-alice",
    )  # fmt: skip
    assert (bob.rating, bob.channel) == (1, "sms")
    assert bob.feedback_id != alice.feedback_id


def test_the_web_chat_csat_frame_rates_the_sessions_own_conversation(broker: EmbeddedBroker) -> None:
    app = app_for(broker.bootstrap)
    with TestClient(app) as client, client.websocket_connect("/v1/chat") as socket:
        socket.send_text(json.dumps({"type": "csat", "rating": 5}))
        assert socket.receive_json() == {"type": "error", "code": "hello_first", "error": "say hello first"}
        socket.send_text(json.dumps({"type": "hello"}))
        session = socket.receive_json()["session"]
        socket.send_text(json.dumps({"type": "csat", "rating": 5}))
        assert socket.receive_json() == {
            "type": "error",
            "code": "nothing_to_rate",
            "error": "there is no conversation to rate yet",
        }
        socket.send_text(json.dumps({"type": "csat", "rating": 9}))
        bad = socket.receive_json()
        assert bad["type"] == "error" and "rating: Input should be less than or equal to 5" in bad["error"]

        # the session's conversation as the ingress learns it: from sf.messages (another customer's too)
        mine = Message(
            message_id="m-w1", conversation_id="conv-w1", customer_id="w1", channel="webchat",
            sender=f"web-{session}", text="hello", received_at=Feedback.csat("c", 1, "r").at,
        )  # fmt: skip
        theirs = mine.model_copy(update={"message_id": "m-w2", "conversation_id": "conv-w2", "sender": "web-other"})
        view = app.state.view
        publish_until_seen(
            broker.bootstrap, "sf.messages", [mine, theirs], lambda: view.conversation_of_sender(f"web-{session}")
        )

        frame = {"type": "csat", "rating": 4, "comment": "nice", "client_feedback_id": "rate-1"}
        socket.send_text(json.dumps(frame))
        ack = socket.receive_json()
        socket.send_text(json.dumps(frame))  # resent after a reconnect
        again = socket.receive_json()
        assert ack["type"] == again["type"] == "csat_ack" and ack["feedback_id"] == again["feedback_id"]
        socket.send_text(json.dumps({"type": "csat", "rating": 2, "conversation_id": "conv-w2"}))
        assert "conversation_id: Extra inputs are not permitted" in socket.receive_json()["error"]

    published = feedback_on_topic(broker.bootstrap, 2)
    assert {f.feedback_id for f in published} == {ack["feedback_id"]}, "only this session's answer, under one id"
    (answer, _) = published
    assert (answer.conversation_id, answer.rating, answer.comment, answer.channel, answer.author) == (
        "conv-w1", 4, "nice", "webchat", "customer",
    )  # fmt: skip


def test_an_answer_without_a_channel_takes_the_conversations_last_channel(broker: EmbeddedBroker) -> None:
    app = app_for(broker.bootstrap)
    reply = OutboundMessage(
        reply_id="r-1", in_reply_to="m-1", conversation_id="conv-carol", customer_id="carol", channel="whatsapp",
        recipient="+15550199", text="on its way",
    )  # fmt: skip
    with TestClient(app) as client:
        view = app.state.view
        publish_until_seen(broker.bootstrap, "sf.outbound", [reply], lambda: view.conversation("conv-carol"))
        accepted = client.post("/v1/feedback/csat", json={"conversation_id": "conv-carol", "rating": 3})
    assert accepted.status_code == 202
    (answer,) = feedback_on_topic(broker.bootstrap, 1)
    assert (answer.channel, answer.rating) == ("whatsapp", 3)
