"""The ingress's Origin policy: foreign web pages refused, listed ones served with CORS, JSON required.

Each test runs the real ingress app (Starlette's TestClient over its ASGI interface, whose own
origin is http://testserver) against a real tansu broker, and reads `sf.ingress` and `sf.dlq` to
check that a refused request published nothing.
"""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.ingress import build_ingress
from tests.support.stream import read_topics

SHOP = "https://shop.example.com"
EVIL = "https://evil.example"
BODY = {"channel": "webchat", "sender": "web-1", "text": "where is my order 1234567?"}


def app_for(bootstrap: str, **extra: object):
    s = Settings(kafka_bootstrap_servers=bootstrap, kafka_exact_offsets=True, allowed_origins=[SHOP], **extra)
    topology = load_topology(s.topology_file)
    ensure_topics(s, topology)
    return build_ingress(s, topology)


def published(bootstrap: str) -> dict[str, list[dict]]:
    records = read_topics(bootstrap, ["sf.ingress", "sf.dlq"], until=lambda rs: False, timeout_s=2)
    out: dict[str, list[dict]] = {"sf.ingress": [], "sf.dlq": []}
    for record in records:
        out[record.topic].append(json.loads(record.value))
    return out


def test_a_cross_site_post_is_refused_and_publishes_nothing(broker):
    with TestClient(app_for(broker.bootstrap)) as client:
        forged = client.post("/v1/messages", json={**BODY, "message_id": "forged"}, headers={"origin": EVIL})
        csat = client.post(
            "/v1/feedback/csat", json={"conversation_id": "conv-1", "rating": 1}, headers={"origin": EVIL}
        )
        null_origin = client.post("/v1/messages", json={**BODY, "message_id": "sandboxed"}, headers={"origin": "null"})
        own = client.post("/v1/messages", json={**BODY, "message_id": "own"}, headers={"origin": "http://testserver"})
        listed = client.post("/v1/messages", json={**BODY, "message_id": "listed"}, headers={"origin": SHOP})
        backend = client.post("/v1/messages", json={**BODY, "message_id": "backend"})  # no Origin: not a browser
    assert (forged.status_code, csat.status_code, null_origin.status_code) == (403, 403, 403)
    assert "SUPPORTFLOW_ALLOWED_ORIGINS" in forged.json()["error"]
    assert (own.status_code, listed.status_code, backend.status_code) == (202, 202, 202)
    assert listed.headers["access-control-allow-origin"] == SHOP, "a listed site may read the answer"
    assert "access-control-allow-origin" not in forged.headers
    seen = published(broker.bootstrap)
    assert [r["message_id"] for r in seen["sf.ingress"]] == ["own", "listed", "backend"]
    assert seen["sf.dlq"] == [], "a forged request is refused at the door, not kept"


def test_a_preflight_is_answered_for_a_listed_origin_and_refused_for_another(broker):
    asked = {"access-control-request-method": "POST", "access-control-request-headers": "content-type, x-api-key"}
    with TestClient(app_for(broker.bootstrap)) as client:
        listed = client.options("/v1/messages", headers={"origin": SHOP, **asked})
        foreign = client.options("/v1/messages", headers={"origin": EVIL, **asked})
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == SHOP
    assert "POST" in listed.headers["access-control-allow-methods"]
    assert "x-api-key" in listed.headers["access-control-allow-headers"].lower()
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers


FORM_TYPES = [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]


@pytest.mark.parametrize("content_type", FORM_TYPES)
def test_a_write_that_is_not_json_gets_415_and_publishes_nothing(broker, content_type):
    """The content types a cross-site form may send without a preflight cannot reach the API."""
    headers = {"content-type": content_type} if content_type else {}
    with TestClient(app_for(broker.bootstrap)) as client:
        message = client.post("/v1/messages", content=json.dumps(BODY).encode(), headers=headers)
        csat = client.post("/v1/feedback/csat", content=b'{"conversation_id": "c-1", "rating": 5}', headers=headers)
        charset = client.post(
            "/v1/messages",
            content=json.dumps({**BODY, "message_id": "with-charset"}).encode(),
            headers={"content-type": "application/json; charset=utf-8"},
        )
    assert (message.status_code, csat.status_code) == (415, 415)
    assert "application/json" in message.json()["error"]
    assert charset.status_code == 202
    seen = published(broker.bootstrap)
    assert [r["message_id"] for r in seen["sf.ingress"]] == ["with-charset"] and seen["sf.dlq"] == []


def test_the_web_chat_socket_refuses_a_foreign_origin_and_serves_its_own(broker):
    with TestClient(app_for(broker.bootstrap)) as client:
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/v1/chat", headers={"origin": EVIL}) as socket,
        ):
            socket.send_text(json.dumps({"type": "hello"}))
            socket.receive_json()
        for origin in ("http://testserver", SHOP):
            with client.websocket_connect("/v1/chat", headers={"origin": origin}) as socket:
                socket.send_text(json.dumps({"type": "hello"}))
                assert socket.receive_json()["type"] == "welcome", origin
    assert refused.value.code == 4403


def test_webhooks_are_exempt_from_the_origin_policy(broker):
    """A provider's call is server-to-server and signed: an Origin header does not refuse it, its own checks do."""
    with TestClient(app_for(broker.bootstrap)) as client:
        twilio = client.post(
            "/webhooks/twilio/messages",
            content=b"From=%2B15550001111&Body=hi",
            headers={"origin": EVIL, "content-type": "application/x-www-form-urlencoded"},
        )
    assert twilio.status_code == 503, "answered by the webhook (no Twilio token configured), not by the policy"
