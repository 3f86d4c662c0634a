"""`kb sync` on a real PostgreSQL with pgvector and the real embedding model: a changed source becomes a
release of what changed, a failing source does not stop the next, and a source not yet due is left alone.
The clock is injected: nothing sleeps."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.knowledge.pgvector import PgVectorStore
from connectors.knowledge.sources.spec import KnowledgeSourceSpec
from pipelines.knowledge.schedule import SyncState
from pipelines.knowledge.sync import SyncOutcome, sync_due, watch
from pipelines.runtime.settings import Settings
from tests.support.knowledge import CountingEmbedder, write_files

RETURNS = "# Returning an item\n\nPrint the prepaid label and drop the parcel at any post office within 30 days.\n"
WARRANTY = "# Warranty\n\nEvery appliance carries a two-year warranty against manufacturing defects.\n"
INVOICES = "# Invoices\n\nYour invoice is attached to the confirmation email and is in your account under Orders.\n"

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def spec(folder: Path, domain: str = "support", every: str = "1h") -> KnowledgeSourceSpec:
    return KnowledgeSourceSpec(source=str(folder), kind="folder", domain=domain, every=every)


async def test_a_folder_changed_between_two_syncs_becomes_a_release_of_only_the_changed_document(
    kb_store: PgVectorStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    folder = write_files(tmp_path / "help", {"returns.md": RETURNS, "warranty.md": WARRANTY})
    sources = [spec(folder)]
    state = SyncState(tmp_path / "kb-sync.json")
    clock = Clock(T0)

    [first] = await sync_due(sources, kb_store, lambda: embedder, state, now=clock)
    assert first.status == "synced" and first.report is not None
    assert sorted(first.report.added) == ["returns.md", "warranty.md"]
    assert first.report.new_releases == ["support@1"]

    (folder / "returns.md").write_text(RETURNS.replace("30 days", "60 days"), encoding="utf-8")
    clock.at = T0 + timedelta(hours=1)
    [second] = await sync_due(sources, kb_store, lambda: embedder, state, now=clock)
    assert second.status == "synced" and second.report is not None
    assert second.report.changed == ["returns.md"] and second.report.unchanged == ["warranty.md"]
    assert second.report.new_releases == ["support@2"]
    diff = await kb_store.diff_releases("support@1", "support@2")
    assert [doc_id for doc_id, _ in diff.changed] == ["returns.md"] and not diff.added and not diff.removed
    assert (await kb_store.live_release("support")).release_id == "support@2"


async def test_a_failing_source_is_reported_and_the_next_source_still_syncs(
    kb_store: PgVectorStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    missing = tmp_path / "gone"
    billing = write_files(tmp_path / "billing", {"invoices.md": INVOICES})
    state = SyncState(tmp_path / "kb-sync.json")

    failed, synced = await sync_due(
        [spec(missing), spec(billing, domain="billing")], kb_store, lambda: embedder, state, now=Clock(T0)
    )

    assert failed.status == "failed" and failed.error == f"{missing} is not a folder"
    assert synced.status == "synced" and synced.report is not None and synced.report.added == ["invoices.md"]
    assert (await kb_store.live_release("billing")).release_id == "billing@1"
    reread = SyncState(tmp_path / "kb-sync.json")  # the schedule outlives the process
    assert not reread.runs[str(missing)].ok and reread.runs[str(missing)].error == f"{missing} is not a folder"
    assert reread.runs[str(billing)].ok


async def test_a_source_whose_interval_has_not_passed_is_not_read(
    kb_store: PgVectorStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    folder = write_files(tmp_path / "help", {"returns.md": RETURNS})
    sources = [spec(folder, every="6h")]
    state = SyncState(tmp_path / "kb-sync.json")
    await sync_due(sources, kb_store, lambda: embedder, state, now=Clock(T0))
    (folder / "warranty.md").write_text(WARRANTY, encoding="utf-8")
    embedded = embedder.passages_embedded

    [early] = await sync_due(sources, kb_store, lambda: embedder, state, now=Clock(T0 + timedelta(hours=5, minutes=59)))
    assert early.status == "not_due" and early.next_due == T0 + timedelta(hours=6)
    assert embedder.passages_embedded == embedded
    assert (await kb_store.live_release("support")).document_count == 1

    [forced] = await sync_due(sources, kb_store, lambda: embedder, state, now=Clock(T0), every_source=True)
    assert forced.status == "synced" and forced.report is not None and forced.report.added == ["warranty.md"]


async def test_watch_repeats_each_source_at_its_own_interval(
    kb_store: PgVectorStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    hourly = write_files(tmp_path / "hourly", {"returns.md": RETURNS})
    daily = write_files(tmp_path / "daily", {"warranty.md": WARRANTY})
    sources = [spec(hourly), spec(daily, domain="products", every="1d")]
    clock = Clock(T0)
    stop = asyncio.Event()
    passes: list[list[SyncOutcome]] = []
    waits: list[float] = []

    async def fake_sleep(_: asyncio.Event, seconds: float) -> None:
        waits.append(seconds)
        clock.at += timedelta(seconds=seconds)
        if len(waits) == 3:
            stop.set()

    await watch(
        sources,
        kb_store,
        lambda: embedder,
        SyncState(tmp_path / "s.json"),
        stop,
        passes.append,
        now=clock,
        sleep=fake_sleep,
    )

    assert waits == [3600.0, 3600.0, 3600.0]  # the soonest due source sets the sleep
    assert [[o.status for o in outcomes] for outcomes in passes] == [
        ["synced", "synced"],
        ["synced", "not_due"],
        ["synced", "not_due"],
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"source": "./help", "every": "-5m"}, "every must be at least 60 s, got -300 s"),
        ({"source": "./help", "every": "10s"}, "every must be at least 60 s, got 10 s"),
        ({"source": "./help", "kind": "wiki"}, "Input should be 'folder', 'export' or 'site'"),
        ({"source": "./help", "folder": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_source_configuration_is_a_clear_error(entry: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match="knowledge_sources") as raised:
        Settings(knowledge_sources=[entry])
    assert message in str(raised.value)


def test_a_source_listed_twice_is_refused_and_intervals_take_units() -> None:
    with pytest.raises(ValidationError, match=re.escape("knowledge source './help' is listed twice")):
        Settings(knowledge_sources=[{"source": "./help"}, {"source": "./help", "domain": "billing"}])
    parsed = Settings(knowledge_sources=[{"source": "./a", "every": "90m"}, {"source": "./b", "every": 86400}])
    assert [s.every for s in parsed.knowledge_sources] == [timedelta(minutes=90), timedelta(days=1)]


async def test_a_sync_run_by_another_process_is_seen_by_the_next_pass(
    kb_store: PgVectorStore, embedder: CountingEmbedder, tmp_path: Path
) -> None:
    folder = write_files(tmp_path / "help", {"returns.md": RETURNS})
    sources = [spec(folder)]
    watching = SyncState(tmp_path / "kb-sync.json")  # read before the other one synced
    await sync_due(sources, kb_store, lambda: embedder, SyncState(tmp_path / "kb-sync.json"), now=Clock(T0))

    [outcome] = await sync_due(sources, kb_store, lambda: embedder, watching, now=Clock(T0 + timedelta(minutes=5)))
    assert outcome.status == "not_due" and outcome.next_due == T0 + timedelta(hours=1)


def test_an_unreadable_schedule_says_which_file_to_delete(tmp_path: Path) -> None:
    (tmp_path / "kb-sync.json").write_text('{"./help": {"ok": true}}', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"cannot read the sync state {tmp_path / 'kb-sync.json'}")):
        SyncState(tmp_path / "kb-sync.json")
