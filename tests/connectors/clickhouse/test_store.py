"""The events table: the same tests on chdb (in process) and on a real ClickHouse 18.16 server.

Each test runs once per backend through the EventStore Protocol, so the DDL and every report
query are pinned on the newest engine (chdb) and the oldest server we support (Debian's).
"""

from __future__ import annotations

import asyncio
import fcntl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.clickhouse import ChdbEventStore, ClickHouseEventStore, ddl, load_query, render
from connectors.clickhouse.rows import COLUMNS, FEEDBACK_COLUMNS, to_columns
from connectors.clickhouse.sql import missing_columns, table_columns
from connectors.clickhouse.store import _Serialized, wait_for_turn
from connectors.protocols import EventStore
from pipelines.evaluation.analytics_report import build_report
from pipelines.evaluation.question_groups import group_questions
from tests.support.analytics_events import (
    EXPECTED_WITH_FEEDBACK,
    KNOWN_CONTENT_GAP_GROUPS,
    KNOWN_CONTENT_GAPS,
    KNOWN_GAPS,
    SINCE,
    UNTIL,
    assert_report_matches,
    content_gap_events,
    knowledge_gap_events,
    known_events,
    known_feedback,
)
from tests.support.clickhouse import ClickHouseServer

COUNT = "SELECT count() AS n FROM events FINAL"


@pytest.fixture(params=["chdb", "clickhouse-server"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    """A migrated, empty events table on each backend."""
    if request.param == "chdb":
        event_store: EventStore = ChdbEventStore(tmp_path / "chdb")
    else:
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        event_store = ClickHouseEventStore(server.fresh_database())
    await event_store.migrate()
    await event_store.migrate()  # idempotent: a restarted sink migrates again
    try:
        yield event_store
    finally:
        await event_store.close()


async def test_inserting_a_batch_twice_changes_no_count(store: EventStore) -> None:
    events = known_events()
    assert await store.insert(events) == len(events)
    first = (await build_report(store, SINCE, UNTIL)).model_dump(mode="json")
    await store.insert(events)  # the sink retries a batch whose acknowledgement was lost
    await store.insert(events[:10])
    assert (await store.query(COUNT))[0]["n"] == len(events)
    assert_report_matches((await build_report(store, SINCE, UNTIL)).model_dump(mode="json"), first)


async def test_report_over_known_events_gives_the_numbers_worked_out_by_hand(store: EventStore) -> None:
    await store.insert(known_events())
    report = await build_report(store, SINCE, UNTIL)
    assert_report_matches(report.model_dump(mode="json"))


async def test_knowledge_gaps_group_handed_over_questions_by_wording_most_frequent_first(store: EventStore) -> None:
    events = knowledge_gap_events()
    await store.insert(events)
    await store.insert(events[:2])  # a retried batch counts once
    report = await build_report(store, SINCE, UNTIL)
    assert report.model_dump(mode="json")["knowledge_gaps"] == KNOWN_GAPS
    assert {"reason": "knowledge_gap", "escalations": 7} in report.model_dump()["escalation_reasons"]


async def test_a_replayed_turn_with_a_new_timestamp_counts_once_at_its_latest_version(store: EventStore) -> None:
    original = known_events()[0]
    replayed = original.model_copy(
        update={"timestamp": original.timestamp + timedelta(hours=2), "metadata": original.metadata.model_copy()}
    )
    replayed.metadata.latency_ms = 4321.0
    await store.insert([original])
    await store.insert([replayed])
    rows = await store.query(
        "SELECT timestamp, latency_ms FROM events FINAL WHERE event_id = {id:String}", {"id": "r0"}
    )
    assert rows == [{"timestamp": replayed.timestamp, "latency_ms": 4321.0}]
    report = await build_report(store, SINCE, UNTIL)
    assert (report.turns, report.reply_latency.p50_ms) == (1, 4321.0)


async def test_an_empty_window_reports_zeros_and_no_rates(store: EventStore) -> None:
    await store.insert(known_events())
    later = UNTIL + timedelta(days=30)
    report = await build_report(store, later, later + timedelta(days=1))
    assert (report.turns, report.conversations, report.total_cost_usd) == (0, 0, 0.0)
    assert report.autonomous_resolution_rate is None and report.escalation_rate is None
    assert report.cost_per_conversation_usd is None
    assert (report.reply_latency.replies, report.reply_latency.p50_ms, report.reply_latency.p99_ms) == (0, None, None)
    assert report.volume_by_channel == report.sentiment_trend == report.escalation_reasons == []


async def test_text_entities_and_absent_parts_survive_the_round_trip(store: EventStore) -> None:
    reply, closed = known_events()[0], next(e for e in known_events() if e.event_type == "session_closed")
    tricky = reply.model_copy(update={"event_id": "tricky", "message": reply.message.model_copy()})  # type: ignore[union-attr]
    tricky.message.content = "it's a \\ back'slash,\nnew line, tab\t, ünïcode ✓ and \x1f unit separator"  # type: ignore[union-attr]
    tricky.nlu.entities = [*tricky.nlu.entities, tricky.nlu.entities[0].model_copy(update={"type": "email"})]  # type: ignore[union-attr]
    await store.insert([tricky, closed])
    columns = "event_id, message_content, entity_types, intent, action_type, timestamp"
    rows = await store.query(f"SELECT {columns} FROM events FINAL ORDER BY event_id")
    assert rows == [
        {
            "event_id": "closed-c0",
            "message_content": "",
            "entity_types": [],
            "intent": "",
            "action_type": "",
            "timestamp": datetime(2025, 3, 1, 1, tzinfo=UTC),
        },
        {
            "event_id": "tricky",
            "message_content": tricky.message.content,  # type: ignore[union-attr]
            "entity_types": ["order_id", "email"],
            "intent": "track_order",
            "action_type": "",
            "timestamp": SINCE,
        },
    ]


def test_every_report_query_reads_the_table_with_final_and_the_window() -> None:
    for name in ("volume_by_channel", "volume_by_intent", "autonomous_resolution", "escalation_rate"):
        sql = load_query(name)
        assert "FROM events FINAL" in sql and "{since:DateTime('UTC')}" in sql and "{until:DateTime('UTC')}" in sql
    rendered = render(load_query("sentiment_trend"), {"since": SINCE, "until": UNTIL, "bucket_seconds": 3600})
    assert "toDateTime('2025-03-01 00:00:00', 'UTC')" in rendered and "{" not in rendered


def test_a_query_parameter_without_a_value_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="until"):
        render(load_query("escalation_rate"), {"since": SINCE})


async def test_a_shared_chdb_folder_takes_turns_between_processes(tmp_path: Path) -> None:
    """The sink keeps writing while `analytics report` or `replay` read the same folder from another process."""
    here = ChdbEventStore(tmp_path / "chdb")
    await here.migrate()
    await here.insert(known_events()[:10])
    other_process = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from connectors.clickhouse import ChdbEventStore
        from tests.support.analytics_events import known_events

        async def main():
            store = ChdbEventStore(Path({str(tmp_path / "chdb")!r}))
            for event in known_events()[10:20]:
                await store.insert([event])
            print((await store.query("{COUNT}"))[0]["n"])

        asyncio.run(main())
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", other_process], stdout=subprocess.PIPE, text=True)
    seen = [(await here.query(COUNT))[0]["n"] for _ in range(5)]  # reads interleave with the other's writes
    out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0
    assert int(out.strip()) == 20
    assert seen == sorted(seen) and 10 <= seen[0] <= 20
    assert (await here.query(COUNT))[0]["n"] == 20


async def test_feedback_counts_once_per_id_and_gives_the_figures_worked_out_by_hand(store: EventStore) -> None:
    feedback = known_feedback()
    assert await store.insert([*known_events(), *feedback]) == len(known_events()) + len(feedback)
    await store.insert(feedback[:5])  # a retried batch
    distinct = len({f.feedback_id for f in feedback})
    assert (await store.query("SELECT count() AS n FROM feedback FINAL"))[0]["n"] == distinct
    report = await build_report(store, SINCE, UNTIL)
    assert_report_matches(report.model_dump(mode="json"), EXPECTED_WITH_FEEDBACK)


async def test_no_free_text_of_a_feedback_reaches_the_analytics_table(store: EventStore) -> None:
    (csat,) = [f for f in known_feedback() if f.comment][:1]
    untimed = next(f for f in known_feedback() if f.kind == "resolution" and f.handle_time_s is None)
    await store.insert([csat, untimed])
    rows = await store.query("SELECT * FROM feedback FINAL ORDER BY kind")
    assert [sorted(row) for row in rows] == [sorted([*FEEDBACK_COLUMNS])] * 2 and "comment" not in FEEDBACK_COLUMNS
    assert not any(csat.comment in str(value) for row in rows for value in row.values())
    assert (rows[0]["kind"], rows[0]["rating"], rows[0]["has_comment"], rows[0]["channel"]) == ("csat", 5, 1, "webchat")
    assert (rows[1]["handle_time_s"], rows[1]["first_response_s"], rows[1]["message_id"]) == (-1.0, -1.0, "")


async def test_a_store_migrated_before_feedback_existed_reports_no_human_figures(tmp_path: Path) -> None:
    """An events table from an older sink: the report still runs (the next sink start adds the table)."""
    store = ChdbEventStore(tmp_path / "chdb")
    await store.query(ddl()[0])
    await store.insert(known_events())
    try:
        assert_report_matches((await build_report(store, SINCE, UNTIL)).model_dump(mode="json"))
    finally:
        await store.close()


async def test_a_busy_shared_store_keeps_its_turn_between_calls_and_gives_it_up_when_idle(tmp_path: Path) -> None:
    """Reopening the folder for every sink batch cost a quarter of a core; others still get their turn."""
    store = ChdbEventStore(tmp_path / "chdb", idle_release_s=0.5, max_hold_s=30.0)
    await store.migrate()
    await store.insert(known_events()[:5])
    with open(tmp_path / ".chdb.lock", "a+b") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held between calls
        deadline = time.monotonic() + 10
        while True:  # released once idle: another process's `analytics report` gets in
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the idle store kept the folder"
                await asyncio.sleep(0.05)
        fcntl.flock(other, fcntl.LOCK_UN)
    assert (await store.query(COUNT))[0]["n"] == 5  # and takes it again on the next call
    await store.close()


async def test_a_store_held_past_its_longest_turn_lets_a_waiting_process_in(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path / "chdb", idle_release_s=30.0, max_hold_s=0.2)
    await store.migrate()
    got_in = threading.Event()

    def take_turn() -> None:
        with open(tmp_path / ".chdb.lock", "a+b") as other:
            wait_for_turn(tmp_path / "chdb", other)  # blocks until the store lets go
            got_in.set()
            fcntl.flock(other, fcntl.LOCK_UN)

    waiter = threading.Thread(target=take_turn)
    waiter.start()
    await asyncio.sleep(0.3)
    assert not got_in.is_set()  # busy and idle_release_s far off: still held
    await store.query(COUNT)  # past max_hold_s: this call first gives the folder up
    waiter.join(timeout=10)
    assert got_in.is_set()
    await store.close()


async def test_a_busy_store_nobody_waits_for_keeps_its_turn_past_its_longest_hold(tmp_path: Path) -> None:
    """Reopening the folder every `max_hold_s` cost more as the data grew: the sink's CPU doubled in a long run."""
    store = ChdbEventStore(tmp_path / "chdb", idle_release_s=30.0, max_hold_s=0.1)
    await store.migrate()
    free_moments = []
    stop = threading.Event()

    def try_lock_without_asking() -> None:  # a raw flock says nothing, unlike `wait_for_turn`
        with open(tmp_path / ".chdb.lock", "a+b") as other:
            while not stop.is_set():
                try:
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    time.sleep(0.005)
                    continue
                free_moments.append(time.monotonic())
                fcntl.flock(other, fcntl.LOCK_UN)
                time.sleep(0.005)

    prober = threading.Thread(target=try_lock_without_asking)
    prober.start()
    for event in known_events()[:6]:
        await store.insert([event])
        await asyncio.sleep(0.1)  # each call comes after max_hold_s
    stop.set()
    prober.join(timeout=10)
    assert free_moments == []
    assert (await store.query(COUNT))[0]["n"] == 6
    await store.close()


LLM_COLUMNS = ("llm_tier", "llm_model", "llm_tokens_in", "llm_tokens_out")
KNOWLEDGE_COLUMNS = (
    "knowledge_used",
    "knowledge_confidence",
    "knowledge_threshold",
    "knowledge_answered",
    "knowledge_domain",
    "knowledge_cited",
)
ADDED_COLUMNS = LLM_COLUMNS + KNOWLEDGE_COLUMNS  # what releases before the LLM layer did not have


def _old_events_ddl() -> str:
    """The events table as releases before the language-model and knowledge columns created it."""
    return "\n".join(line for line in ddl()[0].splitlines() if not line.strip().startswith(ADDED_COLUMNS))


@pytest.fixture(params=["chdb", "clickhouse-server"])
async def old_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[_Serialized]:
    """A store whose events table an older release created and filled (no LLM columns), not migrated yet."""
    if request.param == "chdb":
        event_store: _Serialized = ChdbEventStore(tmp_path / "chdb")
    else:
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        event_store = ClickHouseEventStore(server.fresh_database())
    await event_store._call(event_store._execute, _old_events_ddl())
    old_columns = tuple(c for c in COLUMNS if c not in ADDED_COLUMNS)
    batch = {name: values for name, values in to_columns(known_events(), 1_700_000_000).items() if name in old_columns}
    await event_store._call(event_store._insert_table, "events", old_columns, batch)
    try:
        yield event_store
    finally:
        await event_store.close()


async def _event_columns(store: EventStore) -> list[str]:
    """The table's columns in order (system.columns lists them in table order on both backends)."""
    rows = await store.query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events'")
    return [row["name"] for row in rows]


async def test_llm_usage_lands_in_its_columns_and_a_turn_without_a_model_gets_blanks(store: EventStore) -> None:
    events = known_events()
    small, paired, handed_over = events[0], events[95], next(e for e in events if e.event_type == "escalated")
    await store.insert([small, paired, handed_over])
    rows = await store.query(f"SELECT event_id, cost_usd, {', '.join(LLM_COLUMNS)} FROM events FINAL ORDER BY event_id")
    assert rows == [
        {"event_id": "r0", "cost_usd": 0.001, "llm_tier": "small", "llm_model": "small-model"}
        | {"llm_tokens_in": 300, "llm_tokens_out": 50},
        {"event_id": "r95", "cost_usd": 0.006, "llm_tier": "large+small", "llm_model": "large-model"}
        | {"llm_tokens_in": 900, "llm_tokens_out": 150},
        {"event_id": "x1", "cost_usd": 0.0, "llm_tier": "", "llm_model": ""}
        | {"llm_tokens_in": 0, "llm_tokens_out": 0},
    ]


async def test_migrating_a_table_of_an_older_release_adds_the_llm_and_knowledge_columns_and_keeps_its_rows(
    old_store: _Serialized,
) -> None:
    assert not set(ADDED_COLUMNS) & set(await _event_columns(old_store))
    unmigrated = await build_report(old_store, SINCE, UNTIL)  # `analytics report` before the new sink started
    assert (unmigrated.turns, unmigrated.turns_by_llm_tier) == (104, [])
    assert unmigrated.cost_per_conversation_usd == pytest.approx(0.02)
    await old_store.migrate()
    await old_store.migrate()  # nothing left to add: a no-op
    assert await _event_columns(old_store) == list(COLUMNS)  # each added after its DDL neighbour
    assert (await old_store.query(COUNT))[0]["n"] == len(known_events())
    blanks = await old_store.query(
        "SELECT count() AS n FROM events FINAL WHERE llm_tier = '' AND llm_model = '' AND llm_tokens_in = 0 "
        "AND llm_tokens_out = 0"
    )
    assert blanks[0]["n"] == len(known_events())  # rows written before: no LLM recorded
    unsearched = await old_store.query(
        "SELECT count() AS n FROM events FINAL WHERE knowledge_used = 0 AND knowledge_domain = '' "
        "AND empty(knowledge_cited)"
    )
    assert unsearched[0]["n"] == len(known_events())  # and no knowledge base search
    old = await build_report(old_store, SINCE, UNTIL)
    assert (old.turns, old.total_cost_usd) == (104, pytest.approx(0.2))
    assert [(t.tier, t.turns, t.share, t.tokens_in) for t in old.turns_by_llm_tier] == [("none (no LLM)", 104, 1.0, 0)]
    await old_store.insert(known_events())  # the new sink writes the same events again, with their LLM usage
    assert_report_matches((await build_report(old_store, SINCE, UNTIL)).model_dump(mode="json"))


async def test_a_column_another_process_added_meanwhile_does_not_fail_the_migration(old_store: _Serialized) -> None:
    """18.16 has no ADD COLUMN IF NOT EXISTS: two sinks starting together both see the column missing."""
    stale = await old_store._call(old_store._present_columns)
    await old_store._call(old_store._execute, "ALTER TABLE events ADD COLUMN llm_tier String AFTER cost_usd")
    seen = iter([stale])
    real = old_store._present_columns
    old_store._present_columns = lambda: next(seen, None) or real()  # type: ignore[method-assign]
    await old_store.migrate()
    assert await _event_columns(old_store) == list(COLUMNS)


def test_the_migration_adds_only_the_missing_columns_after_their_ddl_neighbours() -> None:
    present = {"events": set(COLUMNS) - {"llm_model", "llm_tokens_out"}, "feedback": set(FEEDBACK_COLUMNS)}
    assert missing_columns(present) == [
        "ALTER TABLE events ADD COLUMN llm_model String AFTER llm_tier",
        "ALTER TABLE events ADD COLUMN llm_tokens_out UInt32 AFTER llm_tokens_in",
    ]
    assert missing_columns({}) == []  # no tables yet: CREATE makes them whole
    assert [name for name, _ in table_columns()["events"]] == list(COLUMNS)
    assert [name for name, _ in table_columns()["feedback"]] == list(FEEDBACK_COLUMNS)


async def test_an_empty_window_has_no_llm_tiers(store: EventStore) -> None:
    await store.insert(known_events())
    later = UNTIL + timedelta(days=30)
    report = await build_report(store, later, later + timedelta(days=1))
    assert report.turns_by_llm_tier == [] and report.llm_share is None


@pytest.mark.parametrize("by", ["meaning", "shared words"])
async def test_the_content_gap_report_groups_rewordings_flags_weak_answers_and_splits_by_domain(
    store: EventStore, by: str, request: pytest.FixtureRequest
) -> None:
    embed = request.getfixturevalue("onnx_embedder").embed_queries if by == "meaning" else None
    events = content_gap_events()
    await store.insert(events)
    await store.insert(events[:3])  # a retried batch counts once
    report = await build_report(store, SINCE, UNTIL, embed)
    as_json = report.model_dump(mode="json")
    assert as_json["knowledge_gaps"] == KNOWN_CONTENT_GAP_GROUPS
    knowledge = as_json["knowledge"]
    assert knowledge["grouping"].startswith(f"by {by}")
    assert knowledge["low_confidence"] == KNOWN_CONTENT_GAPS["low_confidence"]
    assert [a["question"] for a in knowledge["low_confidence"]] == ["how long do refunds take"], (
        "the confident answer (0.90 against 0.50) is not a weak one"
    )
    assert knowledge["by_domain"] == [
        {**row, "mean_confidence": pytest.approx(row["mean_confidence"])} for row in KNOWN_CONTENT_GAPS["by_domain"]
    ]
    assert knowledge["articles"] == [
        {**row, "mean_confidence": pytest.approx(row["mean_confidence"])} for row in KNOWN_CONTENT_GAPS["articles"]
    ]


async def test_a_wider_margin_counts_the_confident_answer_as_weak_too(store: EventStore) -> None:
    await store.insert(content_gap_events())
    report = await build_report(store, SINCE, UNTIL, low_confidence_margin=0.5)
    assert [(a.question, a.answers) for a in report.knowledge.low_confidence] == [
        ("how long do refunds take", 1),
        ("where do i send a return", 1),
    ]
    assert report.knowledge.low_confidence_margin == 0.5


async def test_the_knowledge_columns_carry_the_turns_search_and_blanks_without_one(store: EventStore) -> None:
    answered = content_gap_events()[4]
    await store.insert([answered, known_events()[0]])
    rows = await store.query(f"SELECT event_id, {', '.join(KNOWLEDGE_COLUMNS)} FROM events FINAL ORDER BY event_id")
    assert rows == [
        {"event_id": "q5", "knowledge_used": 1, "knowledge_confidence": 0.55, "knowledge_threshold": 0.5}
        | {"knowledge_answered": 1, "knowledge_domain": "shop", "knowledge_cited": ["returns.md"]},
        {"event_id": "r0", "knowledge_used": 0, "knowledge_confidence": 0.0, "knowledge_threshold": 0.0}
        | {"knowledge_answered": 0, "knowledge_domain": "", "knowledge_cited": []},
    ]


def test_grouping_is_the_same_whatever_order_the_wordings_come_in() -> None:
    questions = ["do you sell lawn mowers", "can i buy a lawn mower from you", "is the café open on sundays"]
    groups, grouping = group_questions(questions)
    assert (groups, grouping.method) == ([[0, 1], [2]], "jaccard")
    assert group_questions(questions) == (groups, grouping)
