"""The knowledge base as a stream, end to end: a real tansu broker, a real `supportflow worker` running the
`knowledge` stage, a real PostgreSQL with pgvector and the real embedding model.

Documents published to the compacted `sf.knowledge` become searchable; an update changes only its document;
a tombstone removes one; a redelivered record changes nothing; a malformed record is dead-lettered and the
stage goes on; and a worker killed mid-ingest loses no chunk and duplicates none.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from connectors.knowledge.pgvector import PgVectorStore, vector_table_name
from connectors.knowledge.sources.folder import FolderSource
from pipelines.cli import app
from pipelines.knowledge.ingest import default_chunker, ingest
from pipelines.knowledge.publish import KNOWLEDGE_APPLIED_TOPIC, KNOWLEDGE_TOPIC, PublishReport, publish_source
from schemas import DeadLetter
from schemas.knowledge import KnowledgeApplied, KnowledgeDocument, KnowledgeRecord
from tests.support.knowledge import write_files
from tests.support.postgres import _admin, with_database
from tests.support.stream import produce, read_topics

REFUNDS = """# Getting a refund

You can ask for a refund within 30 days of delivery. The money goes back to the card you paid with, or to
your gift card balance when you paid with a gift card. A refund covers the price of the item and, when the
whole order comes back, the standard shipping you paid. We send you an email when the refund is issued.
"""
SHIPPING = """# Shipping times

Standard parcels arrive in three to five working days. Express delivery arrives the next day.
"""
SHIPPING_EDITED = """# Shipping times

Standard parcels arrive in two to four working days. Express delivery arrives the same evening.
"""
PASSWORD = """# Resetting your password

Click "Forgot password" on the sign-in page and follow the link we email you.
"""


@pytest.fixture
def stage(workers, postgres_dsn: str):
    """A worker running only the `knowledge` stage on the test's database; returns a starter for more."""

    def start():
        return workers.start(stages=("knowledge",), DATABASE_URL=postgres_dsn)

    start.first = start()  # type: ignore[attr-defined]
    return start


@pytest.fixture
def second_dsn(postgres_server: str) -> Iterator[str]:
    """Another empty database on the same server (the direct ingest's, to compare with)."""
    name = f"sf_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_server, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(postgres_server, name)
    finally:
        asyncio.run(_admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def publish(root: Path, dsn: str, bootstrap: str, wait: bool = True, timeout_s: float = 300) -> PublishReport:
    async def run() -> PublishReport:
        store = await PgVectorStore.open(dsn)
        try:
            return await publish_source(
                FolderSource(root, domain="support"),
                "support",
                store,
                {"bootstrap.servers": bootstrap},
                exact_offsets=True,
                wait=wait,
                wait_timeout_s=timeout_s,
            )
        finally:
            await store.close()

    return asyncio.run(run())


async def _on_store(dsn: str, job):
    store = await PgVectorStore.open(dsn)
    try:
        return await job(store)
    finally:
        await store.close()


def on_store(dsn: str, job):
    return asyncio.run(_on_store(dsn, job))


def searched(dsn: str, query: str) -> list[str]:
    """The documents of the live releases a lexical search for `query` finds."""
    return on_store(dsn, lambda store: _lexical(store, query))


async def _lexical(store: PgVectorStore, query: str) -> list[str]:
    return [p.doc_id for p in await store.lexical_search("", query, 5)]


def chunk_rows(dsn: str) -> dict[str, list[str]]:
    """The store's chunks as lists (a duplicate would show twice): every chunk, every vector, and the chunks
    of each document's head version, with the document's head hash."""

    async def read() -> dict[str, list[str]]:
        conn = await asyncpg.connect(dsn)
        try:
            (index,) = await conn.fetch("SELECT name, table_name FROM kb_indexes")
            vectors = await conn.fetch(f'SELECT chunk_id FROM "{index["table_name"]}" ORDER BY chunk_id')
            chunks = await conn.fetch("SELECT chunk_id FROM kb_chunks ORDER BY chunk_id")
            heads = await conn.fetch(
                """
                SELECT vc.chunk_id FROM kb_documents d
                JOIN kb_version_chunks vc ON vc.doc_id = d.doc_id AND vc.content_hash = d.content_hash
                WHERE NOT d.deleted ORDER BY vc.chunk_id
                """
            )
            documents = await conn.fetch("SELECT doc_id || '@' || content_hash AS d FROM kb_documents ORDER BY 1")
            releases = await conn.fetch(
                "SELECT release_id || ':' || doc_id || '@' || content_hash AS r FROM kb_release_documents ORDER BY 1"
            )
        finally:
            await conn.close()
        assert vector_table_name(index["name"]) == index["table_name"]
        return {
            "chunks": [r["chunk_id"] for r in chunks],
            "vectors": [r["chunk_id"] for r in vectors],
            "head_chunks": [r["chunk_id"] for r in heads],
            "documents": [r["d"] for r in documents],
            "released": [r["r"] for r in releases],
        }

    return asyncio.run(read())


def applied_reports(bootstrap: str, until=lambda reports: False, timeout_s: float = 5) -> list[KnowledgeApplied]:
    def parse(records) -> list[KnowledgeApplied]:
        return [KnowledgeApplied.model_validate_json(r.value) for r in records if r.value]

    records = read_topics(bootstrap, [KNOWLEDGE_APPLIED_TOPIC], until=lambda rs: until(parse(rs)), timeout_s=timeout_s)
    return parse(records)


def test_published_documents_become_searchable_an_update_changes_only_its_document_and_a_tombstone_removes_one(
    broker, stage, postgres_dsn: str, tmp_path: Path
) -> None:
    root = write_files(tmp_path / "kb", {"refunds.md": REFUNDS, "shipping.md": SHIPPING, "password.md": PASSWORD})

    first = publish(root, postgres_dsn, broker.bootstrap)
    assert not first.failed and not first.pending, (first.failed, first.pending)
    assert first.applied is not None
    assert first.applied.added == ["password.md", "refunds.md", "shipping.md"]
    assert first.applied.new_releases == ["support@1"]
    assert [r.release_id for r in first.applied.releases] == ["support@1"]
    assert searched(postgres_dsn, "express delivery")[0] == "shipping.md"
    assert searched(postgres_dsn, "forgot password")[0] == "password.md"
    before = chunk_rows(postgres_dsn)

    # an edit: only its document is written again; the others keep their chunks and vectors
    (root / "shipping.md").write_text(SHIPPING_EDITED)
    second = publish(root, postgres_dsn, broker.bootstrap)
    assert second.applied is not None and not second.failed
    assert (second.applied.changed, second.applied.unchanged) == (["shipping.md"], ["password.md", "refunds.md"])
    assert second.applied.new_releases == ["support@2"] and second.applied.embedded >= 1
    after = chunk_rows(postgres_dsn)
    untouched = [c for c in before["head_chunks"] if not c.startswith("shipping.md")]
    assert [c for c in after["head_chunks"] if not c.startswith("shipping.md")] == untouched
    assert set(after["head_chunks"]) - set(before["head_chunks"]) == {
        c for c in after["head_chunks"] if c.startswith("shipping.md")
    }
    assert searched(postgres_dsn, "same evening")[0] == "shipping.md"

    # a document the source no longer has: a tombstone, and the new release no longer holds it
    (root / "password.md").unlink()
    third = publish(root, postgres_dsn, broker.bootstrap)
    assert third.tombstones == ["password.md"]
    assert third.applied is not None and third.applied.deleted == ["password.md"]
    assert third.applied.new_releases == ["support@3"]
    assert "password.md" not in searched(postgres_dsn, "forgot password")

    # a rollback survives publishing the unchanged source again: no new release, the pointer stays
    on_store(postgres_dsn, lambda store: store.rollback("support@2"))
    again = publish(root, postgres_dsn, broker.bootstrap)
    assert again.applied is not None and again.applied.new_releases == [] and again.applied.embedded == 0
    assert again.applied.unchanged == ["refunds.md", "shipping.md"]
    live = on_store(postgres_dsn, lambda store: store.live_release("support"))
    assert live.release_id == "support@2"
    assert searched(postgres_dsn, "forgot password")[0] == "password.md", "support@2 still holds it"

    # the same from the command line: `kb ingest --via-stream --wait` reports what the stage did
    (root / "shipping.md").write_text(SHIPPING)
    env = {
        "DATABASE_URL": postgres_dsn,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true",
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(
        app, ["kb", "ingest", str(root), "--domain", "support", "--via-stream", "--wait"], env=env
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "published 2 document(s) and 0 tombstone(s) to sf.knowledge" in output
    assert "1 changed, 1 unchanged, 0 deleted" in output
    assert "release support@4 (2 documents) — new, live" in output


def test_a_redelivered_record_changes_nothing_and_a_malformed_one_is_dead_lettered(
    broker, stage, postgres_dsn: str, tmp_path: Path
) -> None:
    root = write_files(tmp_path / "kb", {"refunds.md": REFUNDS, "shipping.md": SHIPPING})
    first = publish(root, postgres_dsn, broker.bootstrap)
    assert first.applied is not None and first.applied.new_releases == ["support@1"]
    before = chunk_rows(postgres_dsn)

    # every record of that publish, delivered again as it is (a consumer that crashed before committing)
    records = read_topics(broker.bootstrap, [KNOWLEDGE_TOPIC], until=lambda rs: len(rs) >= 3, timeout_s=10)
    assert len(records) == 3
    produce(broker.bootstrap, KNOWLEDGE_TOPIC, [(r.key.decode(), r.value) for r in records])
    # ... and a tombstone of a document never stored, twice
    ghost = KnowledgeRecord.tombstone("ghost.md", publish_id="redelivery")
    produce(broker.bootstrap, KNOWLEDGE_TOPIC, [(ghost.partition_key(), ghost.to_bytes())] * 2)
    reports = applied_reports(
        broker.bootstrap, until=lambda rs: sum(r.publish_id == "redelivery" for r in rs) >= 2, timeout_s=60
    )
    replayed = [r for r in reports if r.publish_id == first.publish_id][3:]
    assert sorted((r.kind, r.action, r.embedded) for r in replayed) == [
        ("document", "unchanged", 0),
        ("document", "unchanged", 0),
        ("release", "kept", 0),
    ]
    assert [r.action for r in reports if r.publish_id == "redelivery"] == ["absent", "absent"]
    assert chunk_rows(postgres_dsn) == before
    releases = on_store(postgres_dsn, lambda store: store.list_releases("support"))
    assert [r.release_id for r in releases] == ["support@1"]

    # not JSON; not a KnowledgeRecord; a document the chunker makes nothing of: each dead-lettered with its
    # reason, and the stage goes on with the document after them
    empty = KnowledgeDocument(
        doc_id="empty.md", title="Empty", body="", source="test", content_hash="sha256:empty", domain="support"
    )
    after = KnowledgeDocument(
        doc_id="warranty.md",
        title="Warranty",
        body="Every appliance carries a two-year warranty against manufacturing defects.",
        source="test",
        content_hash="sha256:warranty",
        domain="support",
    )
    produce(
        broker.bootstrap,
        KNOWLEDGE_TOPIC,
        [
            ("broken.md", b"{not json"),
            ("odd.md", json.dumps({"kind": "document", "doc_id": "odd.md"}).encode()),
            ("empty.md", KnowledgeRecord.of(empty, "bad").to_bytes()),
            ("warranty.md", KnowledgeRecord.of(after, "bad").to_bytes()),
            ("kb-release:support", KnowledgeRecord.release("support", publish_id="bad").to_bytes()),
        ],
    )
    reports = applied_reports(
        broker.bootstrap, until=lambda rs: any(r.publish_id == "bad" and r.kind == "release" for r in rs), timeout_s=60
    )
    ours = [(r.kind, r.action, r.doc_id or r.release_id) for r in reports if r.publish_id == "bad"]
    assert ours == [("document", "added", "warranty.md"), ("release", "released", "support@2")]
    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: len(rs) >= 3, timeout_s=30)
    ]
    by_key = {letter.key: letter for letter in letters}
    assert set(by_key) == {"broken.md", "odd.md", "empty.md"}
    assert by_key["broken.md"].operator == "decode" and "Invalid JSON" in by_key["broken.md"].error
    assert by_key["odd.md"].operator == "decode" and "a document record carries its document" in by_key["odd.md"].error
    assert by_key["empty.md"].operator == "index_document" and "no chunks" in by_key["empty.md"].error
    assert all(letter.stage == "knowledge" and letter.source_topic == KNOWLEDGE_TOPIC for letter in letters)
    assert searched(postgres_dsn, "two-year warranty")[0] == "warranty.md"

    # Kafka's own tombstone, a null value under a document's key, deletes it too; under a release key it
    # means nothing and is dead-lettered
    produce(broker.bootstrap, KNOWLEDGE_TOPIC, [("warranty.md", None), ("kb-release:support", None)])
    reports = applied_reports(
        broker.bootstrap, until=lambda rs: any(r.kind == "delete" and r.doc_id == "warranty.md" for r in rs)
    )
    assert [r.action for r in reports if r.kind == "delete" and r.doc_id == "warranty.md"] == ["deleted"]
    assert on_store(postgres_dsn, lambda store: store.document_head("warranty.md")).deleted
    letters = read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: len(rs) >= 4, timeout_s=30)
    assert sorted(r.key for r in letters) == [b"broken.md", b"empty.md", b"kb-release:support", b"odd.md"]


def article_body(n: int) -> str:
    """A distinct article of two sections, each long enough to be a chunk of its own."""
    words = " ".join(f"term{n}x{i}" for i in range(130))
    return (
        f"# Article {n}\n\nThis article number {n} explains topic {n} in plain words: {words}.\n\n"
        f"## Details of {n}\n\nThe second section of article {n} adds the details: {words} again, and more.\n"
    )


def test_a_worker_killed_during_ingest_loses_no_chunk_and_duplicates_none(
    broker, workers, stage, postgres_dsn: str, second_dsn: str, onnx_embedder, tmp_path: Path
) -> None:
    count = 240
    root = write_files(tmp_path / "kb", {f"a/{n:03d}.md": article_body(n) for n in range(count)})
    outcome: dict[str, PublishReport | BaseException] = {}

    def run() -> None:
        try:
            outcome["report"] = publish(root, postgres_dsn, broker.bootstrap, timeout_s=600)
        except BaseException as exc:  # the main thread asserts on it
            outcome["report"] = exc

    publisher = threading.Thread(target=run)
    publisher.start()
    # kill once the stage is well under way: some documents in, most still to come
    so_far = applied_reports(broker.bootstrap, until=lambda rs: len(rs) >= 30, timeout_s=180)
    workers.kill(stage.first)
    done_at_kill = {r.doc_id for r in applied_reports(broker.bootstrap)}
    assert 30 <= len(done_at_kill) < count, f"the kill landed mid-ingest ({len(so_far)} applied)"
    stage()
    publisher.join(timeout=900)
    report = outcome["report"]
    assert isinstance(report, PublishReport), report
    assert not report.failed and not report.pending, (report.failed, report.pending[:5])
    assert report.applied is not None and len(report.applied.added) == count
    assert report.applied.new_releases == ["support@1"]

    # the same documents ingested directly into another database: the same chunks, each once
    direct = asyncio.run(_direct_ingest(root, second_dsn, onnx_embedder))
    assert direct.new_releases == ["support@1"]
    streamed, expected = chunk_rows(postgres_dsn), chunk_rows(second_dsn)
    for name, rows in streamed.items():
        assert len(rows) == len(set(rows)), f"{name}: duplicates"
        assert rows == expected[name], f"{name}: not what a direct ingest stores"
    assert len(streamed["head_chunks"]) >= 2 * count


async def _direct_ingest(root: Path, dsn: str, embedder):
    store = await PgVectorStore.open(dsn)
    try:
        return await ingest(FolderSource(root, domain="support"), "support", embedder, default_chunker, store)
    finally:
        await store.close()


def test_waiting_with_no_worker_reports_what_is_pending(broker, workers, postgres_dsn: str, tmp_path: Path) -> None:
    workers.ensure_topics()
    root = write_files(tmp_path / "kb", {"refunds.md": REFUNDS})
    started = time.monotonic()
    report = publish(root, postgres_dsn, broker.bootstrap, timeout_s=3)
    assert time.monotonic() - started < 30
    assert report.pending == ["kb-release:support", "refunds.md"] and not report.failed
    assert report.applied is not None and report.applied.added == []
