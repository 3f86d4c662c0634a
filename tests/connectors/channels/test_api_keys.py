"""API key scopes: who may name a customer, post as a channel address, and read conversations.

Each test runs the real ingress app (Starlette's TestClient over its ASGI interface) against a
real tansu broker, and reads `sf.ingress` to check what was (not) published.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from connectors.channels.api_keys import ALL_SCOPES, ApiKey
from pipelines.runtime.settings import Settings
from tests.support.gateway import app_for, published

WRITER = "sf-writer-key-0123456789"  # a client that posts its own users' messages
RELAY = "sf-relay-key-0123456789"  # a tenant backend trusted to act for its customers
READER = "sf-reader-key-0123456789"  # a dashboard that reads conversations
LEGACY = "sf-legacy-key-0123456789"  # configured as a bare string, as before scopes existed
KEYS = [
    {"key": WRITER, "scopes": ["messages:write"]},
    {"key": RELAY, "scopes": ["messages:write", "customers:act"]},
    {"key": READER, "scopes": ["conversations:read"]},
    LEGACY,
]


def key(value: str) -> dict[str, str]:
    return {"X-API-Key": value}


def test_a_bare_key_keeps_every_scope_and_an_unknown_scope_is_a_configuration_error():
    settings = Settings(api_keys=KEYS)
    assert settings.api_keys[3].scopes == ALL_SCOPES
    assert settings.api_keys[0].scopes == {"messages:write"}
    assert all(entry["key"] == "**********" for entry in settings.masked()["api_keys"])
    with pytest.raises(ValidationError, match="customers:act"):
        ApiKey.model_validate({"key": "k", "scopes": ["customers:everything"]})


def test_only_a_key_that_acts_for_customers_may_name_a_customer_or_a_channel_address(broker):
    """The body's customer_id no longer "wins": a plain writer gets 403 and nothing is published."""
    with TestClient(app_for(broker.bootstrap, api_keys=KEYS)) as client:
        own = client.post(
            "/v1/messages", json={"channel": "api", "sender": "user-7", "text": "hi"}, headers=key(WRITER)
        )
        claims = [
            client.post("/v1/messages", json=body, headers=key(WRITER))
            for body in (
                {"channel": "api", "sender": "user-7", "customer_id": "C000001", "text": "I am Alice"},
                {"channel": "sms", "sender": "+15550001111", "text": "send my order to this number"},
                {"channel": "webchat", "sender": "web-someone-elses-session", "text": "hi"},
            )
        ]
        relayed = client.post(
            "/v1/messages",
            json={"channel": "sms", "sender": "+15550001111", "customer_id": "C000001", "text": "where is my order?"},
            headers=key(RELAY),
        )
        legacy = client.post(
            "/v1/messages",
            json={"channel": "api", "sender": "x", "customer_id": "C000002", "text": "hi"},
            headers=key(LEGACY),
        )
        reader = client.post("/v1/messages", json={"channel": "api", "sender": "r", "text": "hi"}, headers=key(READER))
    assert own.status_code == 202
    assert [c.status_code for c in claims] == [403, 403, 403]
    assert all("customers:act" in c.json()["error"] for c in claims)
    assert (relayed.status_code, legacy.status_code, reader.status_code) == (202, 202, 403)
    records = {r["message_id"]: r for r in published(broker.bootstrap)}
    assert set(records) == {own.json()["message_id"], relayed.json()["message_id"], legacy.json()["message_id"]}
    mine = records[own.json()["message_id"]]
    assert (mine["customer_id"], mine["address_verified"]) == (None, False)
    relay = records[relayed.json()["message_id"]]
    assert relay["customer_id"] == "C000001"
    assert relay["address_verified"] is False, "a relayed number is a claim: replies go to Alice's own contacts only"


def test_conversations_and_the_outbox_need_the_read_scope(broker):
    with TestClient(app_for(broker.bootstrap, api_keys=KEYS)) as client:
        paths = ("/v1/conversations/conv-C000001/messages", "/v1/conversations/conv-C000001")
        writer = [client.get(p, headers=key(WRITER)).status_code for p in paths]
        reader = [client.get(p, headers=key(READER)).status_code for p in paths]
        refused = client.get(paths[0], headers=key(WRITER)).json()
        answer_by_writer = client.get("/v1/messages/m-1", headers=key(WRITER)).status_code
        answer_by_reader = client.get("/v1/messages/m-1", headers=key(READER)).status_code
        csat = client.post("/v1/feedback/csat", json={"conversation_id": "conv-C000001", "rating": 1},
                           headers=key(WRITER))  # fmt: skip
        spec = client.get("/openapi.json").json()
    assert writer == [403, 403], "a key that may post may not read others' conversations"
    assert reader == [404, 503], "the reader gets through (nothing seen yet; no store configured)"
    assert "conversations:read" in refused["error"]
    assert (answer_by_writer, answer_by_reader) == (200, 200)
    assert csat.status_code == 403, "rating a named conversation is acting for its customer"
    params = spec["paths"]["/v1/conversations/{conversation_id}/messages"]["get"]["parameters"]
    assert any(p["name"] == "X-Session-Token" for p in params)
