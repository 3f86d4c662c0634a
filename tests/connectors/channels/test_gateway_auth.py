"""The REST API behind API keys, readiness, the OpenAPI description, and a fuzz of the inbound endpoint.

Each test runs the real ingress app (Starlette's TestClient over its ASGI interface) against a
real tansu broker, and reads `sf.ingress` to check what was (not) published.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from connectors.postgres import migrate
from pipelines.devstack.embedded import EmbeddedBroker
from tests.support.gateway import app_for, published

KEY = "sf-test-key-0123456789"
BODY = {"channel": "webchat", "sender": "web-1", "text": "where is my order 1234567?"}


def test_with_api_keys_the_rest_api_needs_one_and_publishes_only_then(broker):
    app = app_for(broker.bootstrap, api_keys=[KEY])
    with TestClient(app) as client:
        missing = client.post("/v1/messages", json=BODY)
        wrong = client.post("/v1/messages", json=BODY, headers={"X-API-Key": "nope"})
        history = client.get("/v1/conversations/conv-x/messages")
        good = client.post("/v1/messages", json=BODY, headers={"Authorization": f"Bearer {KEY}"})
        also_good = client.post("/v1/messages", json=BODY, headers={"X-API-Key": KEY})
        open_routes = [client.get(p).status_code for p in ("/healthz", "/readyz", "/openapi.json")]
    assert (missing.status_code, wrong.status_code, history.status_code) == (401, 403, 401)
    assert "API key" in missing.json()["error"]
    assert (good.status_code, also_good.status_code) == (202, 202)
    assert open_routes == [200, 200, 200]
    ids = [r["message_id"] for r in published(broker.bootstrap)]
    assert ids == [good.json()["message_id"], also_good.json()["message_id"]], "nothing refused was published"


def test_the_openapi_description_carries_the_validated_request_schema(broker):
    with TestClient(app_for(broker.bootstrap, api_keys=[KEY])) as client:
        spec = client.get("/openapi.json").json()
    body = spec["components"]["schemas"]["InboundRequest"]
    assert set(body["required"]) == {"channel", "sender", "text"} and body["additionalProperties"] is False
    assert spec["paths"]["/v1/messages"]["post"]["security"], "the description says keys are needed"


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """One broker and one app for every example: the app's producer belongs to its client's event loop."""
    with EmbeddedBroker(log_file=tmp_path_factory.mktemp("fuzz") / "tansu.log") as broker:
        app = app_for(broker.bootstrap, rate_limits={"webchat": {"requests": 10_000, "per_seconds": 1}})
        with TestClient(app) as client:
            yield client, broker.bootstrap


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.sampled_from(["channel", "sender", "text", "customer_id", "message_id", "x"]),
                        st.one_of(st.none(), st.integers(), st.text(max_size=50), st.lists(st.integers(), max_size=3)),
                        max_size=6).map(lambda d: json.dumps(d).encode()),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]),
)  # fmt: skip
def test_fuzzed_requests_never_get_a_5xx(fuzz, body, content_type):
    client, _ = fuzz
    response = client.post("/v1/messages", content=body, headers={"content-type": content_type})
    assert response.status_code < 500, response.text
    if response.status_code != 202:
        assert "error" in response.json()


def test_after_the_fuzz_only_accepted_messages_were_published(fuzz):
    client, bootstrap = fuzz
    client.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    client.post("/v1/messages", json={**BODY, "channel": "pigeon"})
    accepted = client.post("/v1/messages", json={**BODY, "message_id": "after-the-fuzz"})
    assert accepted.status_code == 202
    ids = [r["message_id"] for r in published(bootstrap)]
    assert "after-the-fuzz" in ids
    assert all(isinstance(r.get("text"), str) and r.get("sender") for r in published(bootstrap)), (
        "every published record is a valid RawInbound"
    )


async def _outbox_with_one_sms(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO channel_outbox (reply_id, channel, recipient, text, parts) VALUES ($1, $2, $3, $4, $5)",
            "r-1",
            "sms",
            "+15550002222",
            "Refunds take 5 days.",
            json.dumps(["Refunds take 5 days."]),
        )
    finally:
        await conn.close()


def test_the_outbox_endpoint_lists_entries_behind_the_api_key(broker, postgres_dsn):
    asyncio.run(_outbox_with_one_sms(postgres_dsn))
    with TestClient(app_for(broker.bootstrap, api_keys=[KEY], database_url=postgres_dsn)) as client:
        missing = client.get("/v1/outbox")
        wrong = client.get("/v1/outbox", headers={"X-API-Key": "nope"})
        good = client.get("/v1/outbox?limit=5", headers={"X-API-Key": KEY})
        bad_limit = client.get("/v1/outbox?limit=0", headers={"X-API-Key": KEY})
        spec = client.get("/openapi.json").json()
    assert (missing.status_code, wrong.status_code, good.status_code, bad_limit.status_code) == (401, 403, 200, 400)
    [entry] = good.json()["entries"]
    assert {k: entry[k] for k in ("channel", "recipient", "text", "status")} == {
        "channel": "sms",
        "recipient": "+15550002222",
        "text": "Refunds take 5 days.",
        "status": "pending",
    }
    assert entry["created_at"] and "/v1/outbox" in spec["paths"]


def test_the_outbox_endpoint_exists_only_where_the_outbox_is_a_delivery_target(broker, postgres_dsn):
    providers = {
        "twilio_account_sid": "AC0123456789abcdef0123456789abcdef",
        "twilio_auth_token": "twilio-token",
        "twilio_from_number": "+15550000001",
        "twilio_whatsapp_from": "+15550000002",
        "slack_bot_token": "xoxb-token",
        "teams_app_id": "00000000-0000-0000-0000-000000000001",
        "teams_app_password": "teams-password",
        "smtp_relay_host": "smtp.example.com",
    }
    without_store = app_for(broker.bootstrap)
    every_channel_has_a_provider = app_for(broker.bootstrap, database_url=postgres_dsn, **providers)
    for app in (without_store, every_channel_has_a_provider):
        with TestClient(app) as client:
            assert client.get("/v1/outbox").status_code == 404
            assert "/v1/outbox" not in client.get("/openapi.json").json()["paths"]
