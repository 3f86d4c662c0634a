"""The HTTP ingress against the real embedded stack: accept, answer, stream, refuse clearly."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient
from websockets.sync.client import connect

from connectors.kafka import consume_all, make_reader
from connectors.redis.rate_limit import RateLimit
from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.devstack.stack import Stack
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.ingress import build_ingress
from tests.support.hostile import HOSTILE
from tests.support.stream import read_topics


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    """Workers and ingress against configured servers (a tansu and a Redis the tests start), not embedded ones."""
    data_dir: Path = tmp_path_factory.mktemp("stack")
    with EmbeddedBroker(log_file=data_dir / "tansu.log") as broker:
        settings = Settings(
            data_dir=data_dir,
            http_port=0,
            smtp_listen_port=0,
            workspace_port=0,
            kafka_bootstrap_servers=broker.bootstrap,
            kafka_exact_offsets=True,
            redis_url=redis_url,
            # every bad request of this module is dead-lettered; the allowance has its own test
            rate_limits={"dead_letters": RateLimit(requests=1000, per_seconds=60)},
        )
        with Stack(settings) as running:
            assert running.broker is None, "the stack used the configured cluster"
            yield running


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    assert stack.ingress is not None
    with httpx.Client(base_url=stack.ingress.url, timeout=20) as client:
        yield client


def dead_letters(stack: Stack) -> list[dict]:
    reader = make_reader(stack.settings.kafka_client_config(), ["sf.dlq"], from_beginning=True)
    try:
        return [json.loads(r.value) for r in consume_all(reader, idle_s=1.0, max_s=5.0)]
    finally:
        reader.close()


def test_a_posted_message_is_answered_and_readable_back(http):
    body = {"channel": "webchat", "sender": "web-h1", "customer_id": "h1", "text": "where is my order 1234567?"}
    accepted = http.post("/v1/messages", json=body)
    assert accepted.status_code == 202
    message_id = accepted.json()["message_id"]

    status = http.get(f"/v1/messages/{message_id}", params={"wait": 15}).json()
    assert status["status"] == "replied"
    assert "1234567" in status["answer"]["text"] and status["answer"]["in_reply_to"] == message_id

    conversation = http.get("/v1/conversations/conv-h1/messages").json()
    kinds = [(i["kind"], i.get("in_reply_to")) for i in conversation["items"]]
    assert kinds == [("message", None), ("reply", message_id)]


def test_unknown_message_is_pending_and_unknown_conversation_is_404(http):
    assert http.get("/v1/messages/m-nope").json() == {"message_id": "m-nope", "status": "pending"}
    missing = http.get("/v1/conversations/conv-nobody/messages")
    assert missing.status_code == 404 and "conv-nobody" in missing.json()["error"]


def test_server_sent_events_stream_the_reply(http, stack):
    events: list[str] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{stack.ingress.url}/v1/conversations/conv-h2/stream", timeout=20) as response:
            for line in response.iter_lines():
                connected.set()
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                if "reply" in events:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert connected.wait(10)
    body = {"channel": "sms", "sender": "+15550009999", "customer_id": "h2", "text": "how do I get a refund?"}
    assert http.post("/v1/messages", json=body).status_code == 202
    listener.join(20)
    assert events[:2] == ["message", "reply"]


@pytest.mark.parametrize(
    ("content", "status", "error"),
    [
        (b'{"channel": "sms", ', 400, "malformed JSON"),
        (b'{"channel": "sms", "sender": "+1", "text": "\xff\xfe"}', 400, "not valid UTF-8"),
        (json.dumps({"channel": "pigeon", "sender": "a", "text": "hi"}).encode(), 422, "invalid message"),
        (json.dumps({"channel": "sms", "sender": 5, "text": ["x"]}).encode(), 422, "invalid message"),
        (
            json.dumps({"channel": "sms", "sender": "+1", "text": "hi", "colour": "red"}).encode(),
            422,
            "invalid message",
        ),
        (json.dumps({"channel": "sms", "sender": "+1", "text": "x" * 4001}).encode(), 413, "the limit is 4000"),
    ],
    ids=["malformed-json", "invalid-utf8", "unknown-channel", "wrong-types", "unknown-field", "oversized-text"],
)
def test_bad_requests_get_a_clear_error_and_a_dead_letter(http, stack, content, status, error):
    response = http.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert error in response.json()["error"]
    letters = [d for d in dead_letters(stack) if base64.b64decode(d["original_b64"]) == content]
    assert len(letters) == 1
    assert letters[0]["stage"] == "ingress" and error in letters[0]["error"]


def test_hostile_bodies_get_a_clear_4xx_are_dead_lettered_and_nothing_is_published(http, stack):
    """The three bodies that got a 500 (5,000 digits, a lone surrogate, 5,000-deep arrays) and the rest of the class."""
    answers = {}
    for case in HOSTILE:
        sender = f"hostile-{case.name}".encode()
        content = case.body(lambda text, s=sender: b'{"channel": "api", "sender": "' + s + b'", "text": ' + text + b"}")
        response = http.post("/v1/messages", content=content, headers={"content-type": "application/json"})
        answers[case.name] = (response.status_code, case.says in response.json()["error"])
    assert answers == {case.name: (case.status, True) for case in HOSTILE}
    assert http.get("/healthz").json() == {"status": "ok"}, "the ingress is still up"
    reasons = {letter["error"] for letter in dead_letters(stack)}
    assert all(any(case.says in reason for reason in reasons) for case in HOSTILE), "each kept with its reason"
    reader = make_reader(stack.settings.kafka_client_config(), ["sf.ingress"], from_beginning=True)
    try:
        senders = [json.loads(r.value).get("sender", "") for r in consume_all(reader, idle_s=1.0, max_s=5.0)]
    finally:
        reader.close()
    assert not [s for s in senders if s.startswith("hostile-")], "nothing refused was published"


@pytest.mark.parametrize("wait", ["nan", "-1", "soon", "-inf"])
def test_a_wait_that_is_no_number_of_seconds_is_400(http, wait):
    response = http.get("/v1/messages/m-any", params={"wait": wait})
    assert response.status_code == 400 and "wait must be a number" in response.json()["error"]


def test_a_flood_of_bad_bodies_from_one_address_is_limited_before_parsing_and_writes_at_most_the_cap(broker):
    """The address's bucket is asked before the body is read; its dead-letter allowance caps what reaches sf.dlq."""
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        kafka_exact_offsets=True,
        rate_limits={
            "source": RateLimit(requests=20, per_seconds=3600),
            "dead_letters": RateLimit(requests=5, per_seconds=3600),
        },
    )
    topology = load_topology(settings.topology_file)
    ensure_topics(settings, topology)
    with TestClient(build_ingress(settings, topology), raise_server_exceptions=False) as client:
        statuses = [
            client.post("/v1/messages", content=b'{"channel": ', headers={"content-type": "application/json"})
            for _ in range(40)
        ]
        valid = client.post("/v1/messages", json={"channel": "api", "sender": "flooder", "text": "hi"})
    assert [r.status_code for r in statuses] == [400] * 20 + [429] * 20
    refused = statuses[-1]
    assert "too many requests from this address" in refused.json()["error"] and int(refused.headers["Retry-After"]) > 0
    assert valid.status_code == 429, "past the address's limit even a valid message waits"
    letters = read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: len(rs) >= 5, timeout_s=10)
    assert len(letters) == 5, "sf.dlq grew by the dead-letter allowance, not by the flood"
    assert read_topics(broker.bootstrap, ["sf.ingress"], until=lambda rs: False, timeout_s=2) == []


def test_validation_errors_name_the_fields(http):
    response = http.post("/v1/messages", json={"channel": "sms", "sender": 5, "text": ["x"]})
    details = response.json()["details"]
    assert any(d.startswith("sender:") for d in details) and any(d.startswith("text:") for d in details)


def test_an_oversized_body_is_refused_before_it_is_read(http):
    response = http.post("/v1/messages", content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_health_and_metrics(http):
    http.post("/v1/messages", json={"channel": "webchat", "sender": "w-m", "text": "hello"})
    assert http.get("/healthz").json() == {"status": "ok"}
    metrics = http.get("/metrics").text
    assert 'supportflow_ingress_requests_total{channel="webchat",status="202"}' in metrics


def test_a_sender_over_the_channel_limit_gets_429_with_retry_after(http):
    body = {"channel": "sms", "sender": "+15557770000", "text": "where is my order 1234567?"}
    statuses = [http.post("/v1/messages", json=body).status_code for _ in range(11)]
    assert statuses == [202] * 10 + [429], "SMS allows 10 a minute per sender"
    refused = http.post("/v1/messages", json=body)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 6
    assert "too many sms messages" in refused.json()["error"]
    other = http.post("/v1/messages", json={**body, "sender": "+15557770001"})
    assert other.status_code == 202, "another sender is not affected"


def test_a_conversation_snapshot_comes_from_the_store_and_is_reused_from_redis(http, stack, redis_url):
    body = {"channel": "sms", "sender": "+14155550111", "customer_id": "h-snap", "text": "where is my order 7654321?"}
    message_id = http.post("/v1/messages", json=body).json()["message_id"]
    assert http.get(f"/v1/messages/{message_id}", params={"wait": 15}).json()["status"] == "replied"

    deadline = time.monotonic() + 30
    while True:  # the sink stores the turn shortly after the reply goes out
        redis.Redis.from_url(redis_url).flushdb()
        first = http.get("/v1/conversations/conv-h-snap")
        if (first.status_code == 200 and len(first.json()["messages"]) == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert first.status_code == 200, first.text
    assert first.headers["X-Cache"] == "miss"
    roles = [(m["role"], m["text"]) for m in first.json()["messages"]]
    assert roles[0] == ("customer", "where is my order 7654321?") and roles[1][0] == "agent"

    again = http.get("/v1/conversations/conv-h-snap")
    assert again.headers["X-Cache"] == "hit" and again.json() == first.json()
    missing = http.get("/v1/conversations/conv-nobody")
    assert missing.status_code == 404 and "conversation store" in missing.json()["error"]

    # the redaction stage runs in its own low-priority worker, in a consumer group of its own
    reader = make_reader(stack.settings.kafka_client_config(), ["sf.events"], from_beginning=True)
    try:
        events = [json.loads(r.value) for r in consume_all(reader, idle_s=2.0, max_s=20.0)]
    finally:
        reader.close()
    assert message_id in {e["message"]["id"] for e in events if e.get("message")}
    assert "analytics, knowledge" in stack.describe_workers() and len(stack.workers) == 3


def _chat(stack: Stack) -> Any:
    assert stack.ingress is not None
    return connect(stack.ingress.url.replace("http://", "ws://") + "/v1/chat", open_timeout=10)


def _say(socket: Any, frame: dict) -> dict:
    socket.send(json.dumps(frame))
    return json.loads(socket.recv(timeout=10))


def test_a_conversation_is_read_with_its_own_session_token_and_no_other_and_not_after_logout(http, stack):
    """Conversation ids are predictable; reading one takes its own session token (or the read scope)."""
    with _chat(stack) as socket:
        alice = _say(socket, {"type": "hello"})
        ack = _say(socket, {"type": "message", "text": "how do I get a refund?", "client_message_id": "r1"})
        assert ack["type"] == "ack"
        while (frame := json.loads(socket.recv(timeout=30)))["type"] not in ("reply", "escalation"):
            pass
        conversation = frame["conversation_id"]
        with _chat(stack) as other:
            stranger = _say(other, {"type": "hello"})

        path = f"/v1/conversations/{conversation}/messages"
        own = http.get(path, headers={"X-Session-Token": alice["token"]})
        others = http.get(path, headers={"X-Session-Token": stranger["token"]})
        forged = http.get(path, headers={"X-Session-Token": "not-a-token"})
        assert own.status_code == 200
        assert [i["id"] for i in own.json()["items"]] == [ack["message_id"], frame["id"]]
        assert (others.status_code, forged.status_code) == (403, 403)
        assert "not this conversation's" in others.json()["error"]

        assert _say(socket, {"type": "logout"}) == {"type": "logged_out"}
        after = http.get(path, headers={"X-Session-Token": alice["token"]})
        assert after.status_code == 403 and after.json()["code"] == "session_token_revoked"
        again = _say(socket, {"type": "hello", "token": alice["token"]})
        assert again["code"] == "session_token_revoked", "the revocation is kept in Redis, where every replica looks"


def test_a_host_logs_a_session_out_over_rest_and_every_token_of_it_is_refused(http, stack):
    """A host site whose user signs out while no chat page is open ends the session with DELETE /v1/session."""
    with _chat(stack) as socket:
        bob = _say(socket, {"type": "hello"})
    json_type = {"Content-Type": "application/json"}  # the Origin policy's rule for every state-changing call

    def logout(token: str | None) -> httpx.Response:
        return http.delete("/v1/session", headers=json_type | ({"X-Session-Token": token} if token else {}))

    assert logout(None).status_code == 401, "the token names the session"
    forged = logout(bob["token"][:-4] + "AAAA")
    assert forged.status_code == 401 and forged.json()["code"] == "session_token_bad_signature"

    assert logout(bob["token"]).status_code == 204
    assert logout(bob["token"]).status_code == 204, "a retry"
    with _chat(stack) as socket:
        assert _say(socket, {"type": "hello", "token": bob["token"]})["code"] == "session_token_revoked"
    assert "delete" in http.get("/openapi.json").json()["paths"]["/v1/session"]
