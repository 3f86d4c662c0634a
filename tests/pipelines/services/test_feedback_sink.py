"""Feedback on sf.feedback lands once in PostgreSQL (whole, for training), in chdb and in a ClickHouse 18.16
server (counted, without free text), through real `supportflow sink` processes; a replay adds no row,
and the analytics report over what the sinks wrote gives the figures worked out by hand.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from connectors.clickhouse import ChdbEventStore, ClickHouseEventStore
from pipelines.evaluation.analytics_report import build_human_report
from tests.support.analytics_events import SINCE, UNTIL, assert_human_matches, known_feedback
from tests.support.cli import replay
from tests.support.stream import produce


def postgres_feedback(dsn: str) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch("SELECT * FROM feedback ORDER BY feedback_id")]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def analytics_count(store: ChdbEventStore | ClickHouseEventStore) -> int:
    return int(asyncio.run(store.query("SELECT count() AS n FROM feedback FINAL"))[0]["n"])


def eventually(read: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = read()
        if done(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.5)


def human_figures(store: ChdbEventStore | ClickHouseEventStore) -> dict[str, Any]:
    report = asyncio.run(build_human_report(store, SINCE, UNTIL))
    return report.model_dump(mode="json")


def test_feedback_lands_once_in_postgres_chdb_and_clickhouse_and_a_replay_adds_no_row(
    broker, workers, postgres_dsn, clickhouse_server, tmp_path: Path
):
    feedback = known_feedback()  # holds two replayed actions already
    distinct = len({f.feedback_id for f in feedback})
    clickhouse_url = clickhouse_server.fresh_database()
    chdb_dir = tmp_path / "data"
    sink = workers.start_sink(
        "postgres", "clickhouse", group="embedded", DATABASE_URL=postgres_dsn, SUPPORTFLOW_DATA_DIR=str(chdb_dir)
    )
    server_sink = workers.start_sink("clickhouse", group="server", CLICKHOUSE_URL=clickhouse_url)
    produce(broker.bootstrap, "sf.feedback", [(f.partition_key(), f.to_bytes()) for f in feedback])

    rows = eventually(lambda: postgres_feedback(postgres_dsn), lambda rs: len(rs) >= distinct)
    assert len(rows) == distinct, "one row per feedback id"
    by_id = {r["feedback_id"]: r for r in rows}
    commented = next(f for f in feedback if f.comment)
    assert by_id[commented.feedback_id]["comment"] == commented.comment, "PostgreSQL keeps the words for training"
    server = ClickHouseEventStore(clickhouse_url)
    assert eventually(lambda: analytics_count(server), lambda n: n >= distinct) == distinct
    assert_human_matches(human_figures(server))

    workers.stop(sink)  # the sink has had its last batch; chdb's folder is read below
    workers.stop(server_sink)
    chdb = ChdbEventStore(chdb_dir / "chdb")
    assert analytics_count(chdb) == distinct
    assert_human_matches(human_figures(chdb))
    stored = json.dumps(asyncio.run(chdb.query("SELECT * FROM feedback FINAL")), default=str)
    assert commented.comment not in stored, "no free text reaches the analytics store"

    kafka = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true"}
    for target, env in (
        ("postgres", {**kafka, "DATABASE_URL": postgres_dsn}),
        ("clickhouse", {**kafka, "SUPPORTFLOW_DATA_DIR": str(chdb_dir)}),
        ("clickhouse", {**kafka, "CLICKHOUSE_URL": clickhouse_url}),
    ):
        done = replay("--from", "1h", "--topic", "sf.feedback", "--to", target, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"wrote {len(feedback)} record(s)" in done.stdout, done.stdout
    assert len(postgres_feedback(postgres_dsn)) == distinct
    assert analytics_count(chdb) == analytics_count(server) == distinct, "a replay is one row per feedback"
    assert_human_matches(human_figures(chdb))
