"""`supportflow senders` with Teams replies: sf.outbound on a real tansu broker, the ledger and outbox
in a real PostgreSQL, and tests/support/http_recorder.py (a real local HTTP server) standing in for
Microsoft's token endpoint and Bot Connector, which cannot be reached from here; that server is
the only stand-in.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pipelines.runtime.settings import Settings
from tests.support.http_recorder import Recorder, Reply, serve
from tests.support.senders import eventually, finished, outbound, send, senders

APP_ID = "8b7c1d2e-0000-4a4a-9f9f-123456789abc"
TOKEN = "/botframework.com/oauth2/v2.0/token"
CONVERSATION = "a:1Xb2c3d4e5f6CONVERSATION"
REPLY = f"/teams/v3/conversations/{CONVERSATION}/activities/1700000000123"


@pytest.fixture
def microsoft() -> Any:
    with serve() as recorder:
        yield recorder


def settings(broker: Any, dsn: str, tmp_path: Path, microsoft: Recorder | None) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": broker.bootstrap,
        "kafka_exact_offsets": True,
        "database_url": dsn,
        "data_dir": tmp_path,
    }
    if microsoft is not None:
        values.update(
            teams_app_id=APP_ID,
            teams_app_password="app-password",
            teams_token_url=f"{microsoft.url}{TOKEN}",
            teams_allowed_service_urls=["https://smba.trafficmanager.net/*", f"{microsoft.url}/teams/*"],
        )
    return Settings(**values)


async def test_a_teams_503_is_retried_and_delivered_once(broker, postgres_dsn, tmp_path, microsoft):
    microsoft.reply(TOKEN, then=Reply(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": "t-1"}))
    microsoft.reply(REPLY, Reply(503, {"error": {"code": "ServiceError"}}), Reply(200, {"id": "1700000000999"}))
    s = settings(broker, postgres_dsn, tmp_path, microsoft)
    message = outbound(1, "teams", f"{microsoft.url}/teams/|{CONVERSATION}|1700000000123", "Refund approved.")
    async with senders(s):
        await send(s, message)
        rows = await eventually(postgres_dsn, finished("reply-1"))
        await send(s, message)  # a replay after delivery is not sent again
        await asyncio.sleep(2)
    assert [json.loads(r.body)["text"] for r in microsoft.to(REPLY)] == ["Refund approved.", "Refund approved."]
    assert {r.headers["authorization"] for r in microsoft.to(REPLY)} == {"Bearer t-1"}
    assert len(microsoft.to(TOKEN)) == 1
    assert (rows["reply-1"]["provider"], rows["reply-1"]["provider_message_id"]) == ("teams", "1700000000999")
    assert rows["reply-1"]["attempts"] == 1, "retried within one claim"


async def test_without_teams_credentials_replies_go_to_the_outbox(broker, postgres_dsn, tmp_path):
    s = settings(broker, postgres_dsn, tmp_path, microsoft=None)
    recipient = f"https://smba.trafficmanager.net/amer/|{CONVERSATION}"
    async with senders(s):
        await send(s, outbound(1, "teams", recipient, "Teams reply"))
        rows = await eventually(postgres_dsn, finished("reply-1"))
    assert rows["reply-1"]["provider"] == "outbox"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        kept = await conn.fetch("SELECT channel, recipient, text FROM channel_outbox")
    finally:
        await conn.close()
    assert [tuple(row) for row in kept] == [("teams", recipient, "Teams reply")]
