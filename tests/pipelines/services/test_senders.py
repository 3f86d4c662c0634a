"""`supportflow senders` end to end: sf.outbound on a real tansu broker, the ledger and outbox in a
real PostgreSQL, and tests/support/http_recorder.py (a real local HTTP server) standing in for Twilio,
Slack and Meta; that server is the only stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import pytest
from typer.testing import CliRunner

from connectors.channels.outbox import mark_spoken
from connectors.kafka import TopicPlan, create_topics
from connectors.postgres import PostgresStore
from pipelines.cli import app
from pipelines.runtime.settings import PROJECT_DIR, Settings
from pipelines.runtime.topology import load_topology
from schemas import DeliveryStatus
from tests.support.http_recorder import Recorder, Reply, serve
from tests.support.senders import deliveries, eventually, finished, outbound, send, senders
from tests.support.stream import read_topics

SID = "AC0123456789abcdef0123456789abcdef"
TWILIO = f"/2010-04-01/Accounts/{SID}/Messages.json"
SLACK = "/api/chat.postMessage"
META = "/meta/106540352242922/messages"
TOPOLOGY = load_topology(PROJECT_DIR / "topology.yaml")


@pytest.fixture
def provider() -> AsyncIterator[Recorder]:
    with serve() as recorder:
        yield recorder


def settings(broker: Any, dsn: str, tmp_path: Path, provider: Recorder | None) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": broker.bootstrap,
        "kafka_exact_offsets": True,
        "database_url": dsn,
        "data_dir": tmp_path,
        "sender_min_interval_s": 0.05,
    }
    if provider is not None:
        values.update(
            twilio_account_sid=SID,
            twilio_auth_token="twilio-secret",
            twilio_from_number="+15550000001",
            twilio_api_base_url=provider.url,
            slack_bot_token="xoxb-token",
            slack_api_base_url=f"{provider.url}/api",
            meta_access_token="meta-token",
            meta_phone_number_id="106540352242922",
            meta_api_base_url=f"{provider.url}/meta",
        )
    return Settings(**values)


def bodies(provider: Recorder, path: str) -> list[str]:
    return [parse_qs(r.body.decode())["Body"][0] for r in provider.to(path)]


async def test_each_reply_is_delivered_once_even_when_the_record_comes_twice(broker, postgres_dsn, tmp_path, provider):
    provider.reply(TWILIO, *[Reply(201, {"sid": f"SM{i}"}) for i in range(1, 3)])
    provider.reply(SLACK, Reply(200, {"ok": True, "channel": "C0123ABC", "ts": "1700000001.000200"}))
    provider.reply(META, Reply(200, {"messages": [{"id": "wamid.1"}]}))
    s = settings(broker, postgres_dsn, tmp_path, provider)
    sms = outbound(
        1,
        "sms",
        "+15551230001",
        "Your order shipped. It arrives Thursday.",
        ["Your order shipped.", "It arrives Thursday."],
    )
    slack = outbound(2, "slack", "C0123ABC:1700000000.000100", "Refund approved.")
    whatsapp = outbound(3, "whatsapp", "+15551230003", "Hello!")
    webchat = outbound(4, "webchat", "session-4", "Not mine: the web chat reads sf.outbound itself.")
    async with senders(s):
        await send(s, sms, sms, slack, whatsapp, webchat)
        rows = await eventually(postgres_dsn, finished("reply-1", "reply-2", "reply-3"))
        await send(s, sms, slack)  # a replay after delivery
        await asyncio.sleep(3)
    assert bodies(provider, TWILIO) == ["Your order shipped.", "It arrives Thursday."]
    assert [json.loads(r.body) for r in provider.to(SLACK)] == [
        {"channel": "C0123ABC", "text": "Refund approved.", "thread_ts": "1700000000.000100"}
    ]
    assert [json.loads(r.body)["to"] for r in provider.to(META)] == ["15551230003"]
    assert len(provider.requests) == 4
    rows = await deliveries(postgres_dsn)
    assert set(rows) == {"reply-1", "reply-2", "reply-3"}, "webchat is left to its own reader"
    assert (rows["reply-1"]["provider"], rows["reply-1"]["provider_message_id"]) == ("twilio", "SM1,SM2")
    assert rows["reply-2"]["provider_message_id"] == "C0123ABC:1700000001.000200"
    assert rows["reply-3"]["provider"] == "meta" and rows["reply-3"]["attempts"] == 1


async def test_a_reply_to_an_unverified_recipient_is_withheld_and_never_reaches_the_provider(
    broker, postgres_dsn, tmp_path, provider
):
    """The senders' last guard: whatever built the reply, an address nobody verified gets nothing."""
    provider.reply(TWILIO, Reply(201, {"sid": "SM1"}))
    s = settings(broker, postgres_dsn, tmp_path, provider)
    async with senders(s):
        await send(s, outbound(1, "sms", "+15559999999", "Your order 1000001...", verified=False))
        await send(s, outbound(2, "sms", "+15551230002", "Hi"))
        rows = await eventually(
            postgres_dsn, lambda r: finished("reply-2")(r) and finished("reply-1", status="failed")(r)
        )
    assert bodies(provider, TWILIO) == ["Hi"], "only the verified recipient was sent to"
    assert [parse_qs(r.body.decode())["To"][0] for r in provider.to(TWILIO)] == ["+15551230002"]
    assert "not a verified address" in rows["reply-1"]["error"]


async def test_a_503_is_retried_once_and_delivered(broker, postgres_dsn, tmp_path, provider):
    provider.reply(TWILIO, Reply(503, {"message": "busy", "status": 503}), Reply(201, {"sid": "SM9"}))
    s = settings(broker, postgres_dsn, tmp_path, provider)
    async with senders(s):
        await send(s, outbound(1, "sms", "+15551230001", "Hi"))
        rows = await eventually(postgres_dsn, finished("reply-1"))
        await asyncio.sleep(1)
    assert bodies(provider, TWILIO) == ["Hi", "Hi"]
    assert rows["reply-1"]["provider_message_id"] == "SM9"


async def test_a_permanent_400_is_dead_lettered_with_its_reason_and_not_retried(
    broker, postgres_dsn, tmp_path, provider
):
    provider.reply(TWILIO, Reply(400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}))
    s = settings(broker, postgres_dsn, tmp_path, provider)
    async with senders(s):
        await send(s, outbound(1, "sms", "+1555", "Hi"))
        rows = await eventually(postgres_dsn, finished("reply-1", status="failed"))
        # read off the event loop: the senders run on it and have the dead letter still to send
        letters = await asyncio.to_thread(
            read_topics, broker.bootstrap, ["sf.dlq"], until=lambda records: bool(records), timeout_s=30
        )
    assert len(provider.to(TWILIO)) == 1
    [letter] = [json.loads(r.value) for r in letters]
    assert letter["stage"] == "senders" and letter["operator"] == "twilio"
    assert letter["error_type"] == "PermanentSendError" and "21211" in letter["error"]
    assert letter["source_topic"] == "sf.outbound"
    assert json.loads(letter["original"])["reply_id"] == "reply-1"
    assert "21211" in rows["reply-1"]["error"]


async def test_without_credentials_replies_go_to_the_outbox_and_the_cli_lists_them(broker, postgres_dsn, tmp_path):
    s = settings(broker, postgres_dsn, tmp_path, provider=None)
    messages = [
        outbound(1, "sms", "+15551230001", "One two", ["One", "two"]),
        outbound(2, "slack", "C0123ABC", "Slack reply"),
        outbound(3, "whatsapp", "+15551230003", "WhatsApp reply"),
        outbound(4, "voice", "+15551230004", "Spoken reply"),
        outbound(5, "email", "a@example.com", "Not mine: email has its own sender"),
    ]
    async with senders(s):
        await send(s, *messages)
        await eventually(postgres_dsn, finished("reply-1", "reply-2", "reply-3", "reply-4"))
        await send(s, messages[0])
        await asyncio.sleep(2)

    def cli(*args: str) -> Any:
        # in a thread: the command runs its own event loop
        return CliRunner().invoke(app, list(args), env={"DATABASE_URL": postgres_dsn})

    listed = await asyncio.to_thread(cli, "outbox", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["reply_id"]: row for row in json.loads(listed.output)}
    assert set(rows) == {"reply-1", "reply-2", "reply-3", "reply-4"}
    assert rows["reply-1"]["parts"] == ["One", "two"] and rows["reply-1"]["recipient"] == "+15551230001"
    assert rows["reply-4"]["channel"] == "voice" and rows["reply-4"]["text"] == "Spoken reply"

    only_sms = await asyncio.to_thread(cli, "outbox", "--json", "--channel", "sms")
    assert [row["reply_id"] for row in json.loads(only_sms.output)] == ["reply-1"]
    table = await asyncio.to_thread(cli, "outbox", "--limit", "2")
    assert table.exit_code == 0, table.output
    assert "recipient" in table.output and table.output.count("reply-") == 2, table.output


async def test_the_senders_command_starts_delivers_and_stops_on_sigterm(broker, postgres_dsn, tmp_path):
    """The command line `supportflow run` is to start: ready file, then a clean exit on SIGTERM."""
    s = settings(broker, postgres_dsn, tmp_path, provider=None)
    create_topics(s.kafka_client_config(), [TopicPlan("sf.outbound", 8), TopicPlan("sf.dlq", 4)])
    ready = tmp_path / "senders.ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    env.update(
        {
            "PYTHONPATH": str(PROJECT_DIR),
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "DATABASE_URL": postgres_dsn,
            "SUPPORTFLOW_DATA_DIR": str(tmp_path),
        }
    )
    argv = [sys.executable, "-m", "pipelines.cli", "senders", "--ready-file", str(ready)]
    log = (tmp_path / "senders.log").open("wb")
    process = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "senders.log").read_text()
            await asyncio.sleep(0.1)
        await send(s, outbound(1, "sms", "+15551230001", "Hi"))
        await eventually(postgres_dsn, finished("reply-1"))
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0, (tmp_path / "senders.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


async def outbox_ids(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r["reply_id"] for r in await conn.fetch("SELECT reply_id FROM channel_outbox")}
    finally:
        await conn.close()


async def test_a_voice_reply_spoken_in_the_call_stays_out_of_the_outbox_and_a_late_one_is_kept(
    broker, postgres_dsn, tmp_path
):
    s = settings(broker, postgres_dsn, tmp_path, provider=None)
    spoken_first = outbound(1, "voice", "+15551230001", "Your order is cancelled.")
    missed = outbound(2, "voice", "+15551230002", "Your refund is on its way.")
    spoken_later = outbound(3, "voice", "+15551230003", "Your parcel arrives Thursday.")
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        async with senders(s):  # migrates, so the ledger exists from here
            await mark_spoken(pool, "reply-1", "CA1")  # the ingress spoke it before the senders saw it
            await send(s, spoken_first, missed, spoken_later)
            await eventually(postgres_dsn, finished("reply-1", "reply-2", "reply-3"))
            await mark_spoken(pool, "reply-3", "CA3")  # spoken after the senders kept it
            await send(s, spoken_first, missed)  # a replay changes nothing
            await asyncio.sleep(2)
    finally:
        await pool.close()
    rows = await deliveries(postgres_dsn)
    assert {r: (rows[r]["provider"], rows[r]["provider_message_id"]) for r in rows} == {
        "reply-1": ("twilio-call", "call:CA1"),
        "reply-2": ("outbox", "outbox:reply-2"),
        "reply-3": ("twilio-call", "call:CA3"),
    }
    assert await outbox_ids(postgres_dsn) == {"reply-2"}, "only what the call never heard waits for a call back"


async def test_deliveries_lists_each_part_with_the_status_twilio_reported(broker, postgres_dsn, tmp_path, provider):
    provider.reply(TWILIO, Reply(201, {"sid": "SM1"}), Reply(201, {"sid": "SM2"}))
    s = settings(broker, postgres_dsn, tmp_path, provider).model_copy(
        update={"public_base_url": "https://support.example.com"}
    )
    async with senders(s):
        await send(s, outbound(1, "sms", "+15551230001", "One two", ["One", "two"]))
        await eventually(postgres_dsn, finished("reply-1"))
    assert {parse_qs(r.body.decode())["StatusCallback"][0] for r in provider.to(TWILIO)} == {
        "https://support.example.com/webhooks/twilio/status"
    }
    store = PostgresStore(postgres_dsn, pool_size=2)
    try:
        callbacks = [("SM2", "failed", 30003), ("SM1", "delivered", None), ("SM1", "sent", None)]
        for sid, state, error in callbacks:
            await store.write("sf.delivery", [DeliveryStatus(message_sid=sid, status=state, error_code=error)])
    finally:
        await store.close()

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, list(args), env={"DATABASE_URL": postgres_dsn, "COLUMNS": "200"})

    listed = await asyncio.to_thread(cli, "deliveries", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["reply_id"], row["provider"], row["status"], row["provider_message_id"]) == (
        "reply-1",
        "twilio",
        "delivered",
        "SM1,SM2",
    )
    assert row["parts"] == [
        {"message_sid": "SM1", "status": "delivered", "error_code": None},
        {"message_sid": "SM2", "status": "failed", "error_code": 30003},
    ]
    table = await asyncio.to_thread(cli, "deliveries")
    assert table.exit_code == 0 and "delivered, failed (error 30003)" in table.output, table.output


async def test_a_reply_the_outbox_cannot_hold_is_dead_lettered_and_the_replies_behind_it_go_out(
    broker, postgres_dsn, tmp_path
):
    s = settings(broker, postgres_dsn, tmp_path, provider=None)
    poison = outbound(1, "sms", "+15551230001", "refund\x00approved")
    same_recipient = outbound(2, "sms", "+15551230001", "And a second reply to the same customer.")
    others = [outbound(n, "sms", f"+1555123{n:04d}", f"Reply {n}") for n in range(3, 9)]
    async with senders(s):
        await send(s, poison, same_recipient)
        await send(s, *others)
        rows = await eventually(postgres_dsn, finished(*(f"reply-{n}" for n in range(2, 9)), status="delivered"))
        # read off the event loop: the senders run on it and have the dead letter still to send
        letters = await asyncio.to_thread(
            read_topics, broker.bootstrap, ["sf.dlq"], until=lambda records: bool(records), timeout_s=30
        )
    assert len(letters) == 1, (rows.get("reply-1"), letters)
    [letter] = [json.loads(r.value) for r in letters]
    assert (letter["stage"], letter["operator"]) == ("senders", "write")
    assert letter["error_type"] == "CharacterNotInRepertoireError" and "0x00" in letter["error"]
    assert letter["source_topic"] == "sf.outbound" and letter["offset"] is not None
    assert json.loads(letter["original"])["reply_id"] == "reply-1"
    assert rows["reply-1"]["status"] == "sending", "not delivered: its replay from sf.dlq would send it"
