"""Help-center exports (JSON, JSON Lines, CSV) ingested and searched; bad rows named and skipped."""

from __future__ import annotations

import csv
import json

import pytest

from connectors.knowledge.sources.export import ExportSource
from pipelines.knowledge.ingest import default_chunker, ingest

ARTICLES = [
    {
        "id": "101",
        "title": "Changing your delivery address",
        "body": "<p>You can change the delivery address until the parcel is <b>dispatched</b>.</p>",
        "url": "https://help.example.com/a/101",
        "section": "Orders",
        "updated_at": "2026-02-01T10:00:00Z",
    },
    {
        "id": "102",
        "title": "Paying by invoice",
        "body": "Business customers can pay by invoice within 30 days.",
        "url": "https://help.example.com/a/102",
        "section": "Payments",
        "updated_at": "2026-02-03",
        "domain": "billing",
    },
]


def write(path, kind: str, rows: list[dict]) -> None:
    if kind == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=["id", "title", "body", "url", "section", "updated_at", "domain"])
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv"])
async def test_an_export_is_ingested_and_found_by_what_its_articles_say(kind, kb_store, embedder, tmp_path):
    path = tmp_path / f"articles.{kind}"
    write(path, kind, ARTICLES)
    report = await ingest(ExportSource(path, domain="support"), "support", embedder, default_chunker, kb_store)
    assert sorted(report.added) == ["101", "102"] and not report.skipped

    (vector,) = embedder.embed_queries(["can I send my order to another address"])
    (best,) = await kb_store.dense_search(embedder.model_id, vector, 1)
    assert (best.doc_id, best.url, best.section) == ("101", "https://help.example.com/a/101", "Orders")
    assert "<b>" not in best.text and "dispatched" in best.text  # HTML bodies become text
    invoice = await kb_store.get_document("102")
    assert invoice.domain == "billing" and invoice.updated_at.isoformat() == "2026-02-03T00:00:00+00:00"


async def test_bad_rows_are_reported_by_row_and_field_and_the_rest_ingested(kb_store, embedder, tmp_path):
    rows = [
        ARTICLES[0],
        {"id": "201", "title": "", "body": "No title here", "url": "https://help.example.com/a/201"},
        {"id": "202", "title": "Bad date", "body": "text", "updated_at": "next tuesday"},
        {"title": "No id", "body": "Nobody can tell this row apart"},
        {"id": "204", "title": "Bad url", "body": "text", "url": "ftp://files"},
        {"id": "205", "title": "Binary", "body": "a\u0000b"},
        "not an object",
    ]
    path = tmp_path / "articles.json"
    path.write_text(json.dumps(rows), encoding="utf-8")

    report = await ingest(ExportSource(path), "general", embedder, default_chunker, kb_store)

    assert report.added == ["101"]
    said = [str(error) for error in report.skipped]
    assert said == [
        "articles.json row 2: field `title` is missing or empty",
        "articles.json row 3: field `updated_at`: 'next tuesday' is not an ISO 8601 date or timestamp",
        "articles.json row 4: needs an `id` or a `url` to identify the article",
        "articles.json row 5: field `url`: 'ftp://files' is not an http(s) URL",
        "articles.json row 6: field `body` holds NUL characters (first at offset 1): binary, not text",
        "articles.json row 7: an article is an object of fields, not str",
    ]


async def test_an_unreadable_export_deletes_nothing(kb_store, embedder, tmp_path):
    path = tmp_path / "articles.jsonl"
    write(path, "jsonl", ARTICLES)
    await ingest(ExportSource(path), "general", embedder, default_chunker, kb_store)
    path.write_bytes(b"\xff\xfe\x00garbage")

    report = await ingest(ExportSource(path), "general", embedder, default_chunker, kb_store)

    assert not report.complete and report.deleted == []
    assert "not valid UTF-8" in str(report.skipped[0])
    assert (await kb_store.get_document("101")).title == "Changing your delivery address"
