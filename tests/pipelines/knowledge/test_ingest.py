"""Ingest end to end on a real PostgreSQL with pgvector and a real embedding model: what changes
is written, what did not is not, releases go live, and rollbacks move back without re-embedding."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from connectors.knowledge.pgvector import PgVectorStore
from connectors.knowledge.protocols import SearchFilters
from connectors.knowledge.sources.base import content_hash
from connectors.knowledge.sources.folder import FolderSource
from pipelines.knowledge.ingest import IngestReport, apply_document, apply_tombstone, default_chunker, ingest
from schemas.knowledge import KnowledgeDocument
from tests.support.knowledge import CountingEmbedder, write_files

REFUNDS = """---
title: Getting a refund
section: Billing
url: https://help.example.com/refunds
updated_at: 2026-01-05
---
# Getting a refund

You can ask for a refund within 30 days of delivery. The money goes back to the card you paid with, or to
your gift card balance when you paid with a gift card. A refund covers the price of the item and, when the
whole order comes back, the standard shipping you paid. Faster shipping is not refunded unless the parcel
arrived late. We send you an email when the refund is issued, with the amount and the payment method.

## Damaged items

Send us a photo of the damage and we refund you without asking for the item back. Photos of the box and of
the label help us claim the damage from the carrier, but they are not required for your refund. If only a
part of a set arrived broken, we refund that part or send a replacement, whichever you prefer. Keep the
packaging for a week in case the carrier wants to inspect it.
"""
"""Two sections, each past the chunker's 60 tokens: two chunks, so an edit of one leaves the other's vector."""

SHIPPING = """---
title: Shipping times
---
Standard parcels arrive in three to five working days. Express delivery arrives the next day.
"""

PASSWORD = """# Resetting your password

Click "Forgot password" on the sign-in page and follow the link we email you.
"""


def helpcenter(root: Path) -> Path:
    return write_files(root, {"billing/refunds.md": REFUNDS, "shipping.md": SHIPPING, "account/password.md": PASSWORD})


async def run(store: PgVectorStore, embedder: CountingEmbedder, root: Path, domain: str) -> IngestReport:
    return await ingest(FolderSource(root, domain=domain), domain, embedder, default_chunker, store)


async def dense_docs(store, embedder, question: str, **filters) -> list[str]:
    index = embedder.model_id
    (vector,) = embedder.embed_queries([question])
    return [p.doc_id for p in await store.dense_search(index, vector, 3, SearchFilters(**filters))]


async def lexical_texts(store, query: str, **filters) -> list[str]:
    return [p.text for p in await store.lexical_search("", query, 5, SearchFilters(**filters))]


async def test_a_first_ingest_publishes_a_live_release_that_search_answers_from(kb_store, embedder, tmp_path):
    report = await run(kb_store, embedder, helpcenter(tmp_path / "kb"), "support")
    assert sorted(report.added) == ["account/password.md", "billing/refunds.md", "shipping.md"]
    assert report.complete and report.new_releases == ["support@1"] and not report.skipped
    assert (await kb_store.live_release("support")).release_id == "support@1"

    assert (await dense_docs(kb_store, embedder, "I want my money back"))[0] == "billing/refunds.md"
    assert (await dense_docs(kb_store, embedder, "how do I change a forgotten password"))[0] == "account/password.md"
    found = await kb_store.lexical_search("", "express delivery", 3)
    assert found[0].doc_id == "shipping.md" and found[0].title == "Shipping times"

    refunds = await kb_store.get_document("billing/refunds.md")
    assert (refunds.title, refunds.section, refunds.url) == (
        "Getting a refund",
        "Billing",
        "https://help.example.com/refunds",
    )
    assert refunds.updated_at.isoformat() == "2026-01-05T00:00:00+00:00"
    assert refunds.releases == ["support@1"]
    password = await kb_store.get_document("account/password.md")
    assert (password.title, password.section) == ("Resetting your password", "account")


async def test_reingesting_an_unchanged_source_writes_nothing_new(kb_store, embedder, tmp_path, postgres_dsn):
    root = helpcenter(tmp_path / "kb")
    await run(kb_store, embedder, root, "support")
    before = await table_versions(postgres_dsn)
    embedded = embedder.passages_embedded

    again = await run(kb_store, embedder, root, "support")

    assert sorted(again.unchanged) == ["account/password.md", "billing/refunds.md", "shipping.md"]
    assert again.added == again.changed == again.deleted == [] and again.new_releases == []
    assert embedder.passages_embedded == embedded and again.embedded == 0
    assert await table_versions(postgres_dsn) == before  # not one row rewritten (xmin unchanged)


async def table_versions(dsn: str) -> dict[str, list]:
    conn = await asyncpg.connect(dsn)
    try:
        found = {}
        for table in ("kb_documents", "kb_document_versions", "kb_chunks", "kb_version_chunks", "kb_releases"):
            found[table] = [tuple(r) for r in await conn.fetch(f"SELECT xmin::text, * FROM {table} ORDER BY 2, 3")]
        return found
    finally:
        await conn.close()


async def test_an_edited_document_is_found_by_its_new_text_while_the_old_release_keeps_the_old(
    kb_store, embedder, tmp_path
):
    root = helpcenter(tmp_path / "kb")
    await run(kb_store, embedder, root, "support")
    embedded = embedder.passages_embedded
    (root / "billing/refunds.md").write_text(REFUNDS.replace("within 30 days", "within 14 days"), encoding="utf-8")

    report = await run(kb_store, embedder, root, "support")

    assert report.changed == ["billing/refunds.md"] and report.new_releases == ["support@2"]
    # only the edited section's chunk is new: the damaged-items chunk keeps its chunk_id and its vector
    assert len((await kb_store.get_document("billing/refunds.md")).chunks) == 2
    assert embedder.passages_embedded - embedded == report.embedded == 1
    assert any("14 days" in t for t in await lexical_texts(kb_store, "refund days"))
    assert not any("30 days" in t for t in await lexical_texts(kb_store, "refund days"))
    old = await lexical_texts(kb_store, "refund days", release="support@1")
    assert any("30 days" in t for t in old) and not any("14 days" in t for t in old)
    diff = await kb_store.diff_releases("support@1", "support@2")
    assert [d for d, _ in diff.changed] == ["billing/refunds.md"] and diff.added == diff.removed == []


async def test_a_deleted_file_disappears_after_reingest(kb_store, embedder, tmp_path):
    root = helpcenter(tmp_path / "kb")
    await run(kb_store, embedder, root, "support")
    (root / "shipping.md").unlink()

    report = await run(kb_store, embedder, root, "support")

    assert report.deleted == ["shipping.md"]
    assert "shipping.md" not in [p.doc_id for p in await kb_store.lexical_search("", "express delivery", 3)]
    assert "shipping.md" not in await dense_docs(kb_store, embedder, "when will my parcel arrive")
    diff = await kb_store.diff_releases("support@1", "support@2")
    assert diff.removed == [("shipping.md", "Shipping times")]
    assert (await kb_store.get_document("shipping.md", release="support@1")).title == "Shipping times"


async def test_rollback_switches_results_back_without_reembedding(kb_store, embedder, tmp_path):
    root = helpcenter(tmp_path / "kb")
    await run(kb_store, embedder, root, "support")
    (root / "shipping.md").write_text(SHIPPING.replace("next day", "same day by drone"), encoding="utf-8")
    await run(kb_store, embedder, root, "support")
    assert any("drone" in t for t in await lexical_texts(kb_store, "express delivery"))
    embedded = embedder.passages_embedded

    before, now = await kb_store.rollback("support@1")

    assert (before.release_id, now.release_id) == ("support@2", "support@1")
    texts = await lexical_texts(kb_store, "express delivery")
    assert any("next day" in t for t in texts) and not any("drone" in t for t in texts)
    assert (await dense_docs(kb_store, embedder, "express parcel arrival"))[0] == "shipping.md"
    assert embedder.passages_embedded == embedded

    # re-ingesting the same source keeps the rollback: nothing changed since support@2 was cut
    again = await run(kb_store, embedder, root, "support")
    assert again.new_releases == [] and (await kb_store.live_release("support")).release_id == "support@1"
    assert embedder.passages_embedded == embedded


async def test_rolling_back_one_domain_leaves_the_other(kb_store, embedder, tmp_path):
    billing = write_files(tmp_path / "billing", {"refunds.md": REFUNDS})
    logistics = write_files(tmp_path / "logistics", {"shipping.md": SHIPPING})
    await run(kb_store, embedder, billing, "billing")
    await run(kb_store, embedder, logistics, "logistics")
    (billing / "refunds.md").write_text(REFUNDS.replace("30 days", "60 days"), encoding="utf-8")
    (logistics / "shipping.md").write_text(SHIPPING.replace("next day", "within the hour"), encoding="utf-8")
    await run(kb_store, embedder, billing, "billing")
    await run(kb_store, embedder, logistics, "logistics")

    await kb_store.rollback("billing@1")

    assert {r.domain: r.release_id for r in await kb_store.list_releases() if r.live} == {
        "billing": "billing@1",
        "logistics": "logistics@2",
    }
    assert any("30 days" in t for t in await lexical_texts(kb_store, "refund days", domains=("billing",)))
    assert any("within the hour" in t for t in await lexical_texts(kb_store, "express delivery"))
    assert await lexical_texts(kb_store, "express", domains=("billing",)) == []


async def test_hostile_files_are_reported_and_the_ingest_goes_on(kb_store, embedder, tmp_path):
    root = helpcenter(tmp_path / "kb")
    write_files(
        root,
        {
            "nul.md": "# Title\n\nhello\x00world",
            "latin1.txt": "Caf\xe9 cr\xe8me".encode("latin-1"),
            "junk.md": bytes(range(256)) * 8,
            "broken.pdf": b"%PDF-1.4\n this is not a pdf",
            "logo.png": b"\x89PNG\r\n",  # an asset, not a document: neither read nor reported
        },
    )
    with (root / "huge.md").open("wb") as big:
        big.truncate(50 * 1024 * 1024)  # sparse: 50 MB by its size, no disk used

    report = await run(kb_store, embedder, root, "support")

    reasons = {error.location: error.reason for error in report.skipped}
    assert set(reasons) == {"nul.md", "latin1.txt", "junk.md", "broken.pdf", "huge.md"}
    assert "NUL" in reasons["nul.md"]
    assert "not valid UTF-8" in reasons["latin1.txt"] and "offset 3" in reasons["latin1.txt"]
    assert "NUL" in reasons["junk.md"] or "not valid UTF-8" in reasons["junk.md"]
    assert "PDF" in reasons["broken.pdf"]
    assert "52.4 MB, over the limit of 10.5 MB" in reasons["huge.md"]
    assert sorted(report.added) == ["account/password.md", "billing/refunds.md", "shipping.md"]
    assert report.new_releases == ["support@1"]


async def test_a_file_that_turns_unreadable_keeps_its_stored_version(kb_store, embedder, tmp_path):
    root = helpcenter(tmp_path / "kb")
    await run(kb_store, embedder, root, "support")
    (root / "shipping.md").write_bytes(b"\xff\xfe broken")

    report = await run(kb_store, embedder, root, "support")

    assert [e.location for e in report.skipped] == ["shipping.md"] and report.deleted == []
    assert (await kb_store.lexical_search("", "express delivery", 3))[0].doc_id == "shipping.md"


async def test_applying_the_same_document_twice_leaves_one_set_of_chunks(kb_store, embedder, postgres_dsn):
    body = REFUNDS.split("---\n", 2)[2]
    doc = KnowledgeDocument(
        doc_id="gift.md",
        title="Gift cards",
        body=body,
        source="test",
        content_hash=content_hash("Gift cards", body, None, None),
    )
    index = embedder.model_id
    await kb_store.ensure_index(index, embedder.model_id, embedder.dimension)
    chunks = default_chunker(doc)
    assert len(chunks) == 2
    vectors = dict(zip([c.chunk_id for c in chunks], embedder.embed_passages([c.text for c in chunks]), strict=True))

    first = await kb_store.write_document(index, doc, chunks, vectors)
    second = await kb_store.write_document(index, doc, chunks, vectors)
    applied = await apply_document(doc, index=index, embedder=embedder, chunker=default_chunker, store=kb_store)

    assert first.changed and not second.changed and applied.action == "unchanged"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM kb_chunks WHERE doc_id = 'gift.md'") == 2
        assert await conn.fetchval("SELECT count(*) FROM kb_version_chunks WHERE doc_id = 'gift.md'") == 2
    finally:
        await conn.close()

    assert (await apply_tombstone("gift.md", index=index, store=kb_store)).action == "deleted"
    assert (await apply_tombstone("gift.md", index=index, store=kb_store)).action == "absent"
    assert await kb_store.lexical_search(index, "damaged refund", 3) == []
