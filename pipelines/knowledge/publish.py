"""Publish a source to the knowledge stream: `supportflow kb ingest SOURCE --via-stream`.

Instead of writing the store, the source's documents go to the compacted topic `sf.knowledge` (one key
per document) for the `knowledge` stage to chunk, embed and write (`operators/index_document.py`). What
is published follows `ingest` exactly: every document the source reads, a tombstone (a `delete` record)
for each document this source wrote before and no longer lists (only when the source was read
completely; an unreadable document keeps its stored version), then, once the broker has all of those,
a `release` record for every domain the source's documents are in (and the domain named). The stage
takes `sf.knowledge` in order, so each release holds the publish's documents (see index_document's
docstring). Re-publishing an unchanged source costs the stage a lookup per document: it embeds nothing
and cuts no release.

With `wait`, the run reads `sf.knowledge.applied` (and the dead-letter topic) from where they ended
before it published, until every record it wrote is reported applied (or dead-lettered, with its
reason), and reports like a direct ingest.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.kafka import AsyncProducer, DeliveryRejected, consume_all, make_reader
from connectors.knowledge.sources.base import Source, SourceError
from pipelines.knowledge.ingest import IngestProgress, IngestReport, KnowledgeStore, Removed, source_changes
from schemas import DeadLetter
from schemas.knowledge import KnowledgeApplied, KnowledgeRecord

__all__ = ["KNOWLEDGE_APPLIED_TOPIC", "KNOWLEDGE_TOPIC", "PublishReport", "publish_source"]

KNOWLEDGE_TOPIC = "sf.knowledge"
KNOWLEDGE_APPLIED_TOPIC = "sf.knowledge.applied"
SEND_WINDOW = 64  # records handed to the producer before their deliveries are awaited


@dataclass
class PublishReport:
    source: str
    publish_id: str
    documents: list[str] = field(default_factory=list)
    tombstones: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    skipped: list[SourceError] = field(default_factory=list)
    complete: bool = False
    waited: bool = False
    applied: IngestReport | None = None  # with `wait`: what the stage did, as a direct ingest reports it
    failed: dict[str, str] = field(default_factory=dict)  # key -> the dead letter's reason
    pending: list[str] = field(default_factory=list)  # keys not applied when the wait ran out


async def publish_source(
    source: Source,
    domain: str | None,
    store: KnowledgeStore,
    kafka_conf: dict[str, Any],
    *,
    exact_offsets: bool = False,
    wait: bool = False,
    wait_timeout_s: float = 600.0,
    dead_letter_topic: str = "sf.dlq",
    topic: str = KNOWLEDGE_TOPIC,
    applied_topic: str = KNOWLEDGE_APPLIED_TOPIC,
    on_progress: Callable[[IngestProgress], None] | None = None,
) -> PublishReport:
    """Publish `source` to `topic` (see the module docstring); with `wait`, until the stage applied it all."""
    publish_id = f"p-{uuid.uuid4().hex[:16]}"
    report = PublishReport(source=source.name, publish_id=publish_id)
    heads = await store.document_heads(source=source.name)
    domains = {head.domain for head in heads.values()} | ({domain} if domain else set())
    estimate = source.estimate()
    done = 0

    def progress(kind: Any, label: str, count: int | None = None, total: int | None = None) -> None:
        if on_progress is not None:
            on_progress(IngestProgress(kind, label, done if count is None else count, total or estimate))

    # opened (at the topics' ends) before the first record goes out, so no report of ours is missed
    reader = make_reader(kafka_conf, [applied_topic, dead_letter_topic], from_beginning=False) if wait else None
    producer = AsyncProducer(kafka_conf, exact_offsets=exact_offsets)
    keys: list[str] = []
    try:
        window: list[tuple[KnowledgeRecord, asyncio.Task[None]]] = []

        async def settle() -> None:
            for record, sent in window:
                try:
                    await sent
                except DeliveryRejected as exc:  # larger than the broker takes: this one is not published
                    key = record.partition_key()
                    report.skipped.append(SourceError(key, f"not published: {exc}", doc_id=key))
                    keys.remove(key)
                    if key in report.documents:
                        report.documents.remove(key)
            window.clear()

        async def send(record: KnowledgeRecord) -> None:
            key = record.partition_key()
            keys.append(key)
            window.append((record, asyncio.ensure_future(producer.send(topic, key, record.to_bytes()))))
            if len(window) >= SEND_WINDOW:
                await settle()

        async for change in source_changes(source, heads):
            if isinstance(change, Removed):
                report.tombstones.append(change.doc_id)
                await send(KnowledgeRecord.tombstone(change.doc_id, source=source.name, publish_id=publish_id))
                progress("deleted", change.doc_id)
                continue
            done += 1
            if isinstance(change, SourceError):
                report.skipped.append(change)
                progress("skipped", change.location)
                continue
            domains.add(change.domain)
            report.documents.append(change.doc_id)
            await send(KnowledgeRecord.of(change, publish_id))
            progress("document", change.doc_id)
        report.complete = source.complete
        await settle()  # every document and tombstone is on the topic before any release request
        report.domains = sorted(domains)
        for name in report.domains:
            progress("releasing", name)
            note = f"ingest of {source.name} via the stream"
            await send(KnowledgeRecord.release(name, note=note, source=source.name, publish_id=publish_id))
        await settle()
    finally:
        producer.close()
        if reader is not None and not wait:
            reader.close()
    if reader is None:
        return report

    report.waited = True
    try:
        applied, failed, pending = await asyncio.to_thread(
            _wait_applied, reader, publish_id, keys, applied_topic, wait_timeout_s, progress
        )
    finally:
        reader.close()
    report.failed = failed
    report.pending = pending
    report.applied = await _as_ingest_report(source.name, applied, store)
    report.applied.skipped = list(report.skipped)
    report.applied.complete = report.complete
    return report


def _wait_applied(
    reader: Any,
    publish_id: str,
    keys: Sequence[str],
    applied_topic: str,
    timeout_s: float,
    progress: Callable[..., None],
) -> tuple[dict[str, KnowledgeApplied], dict[str, str], list[str]]:
    """Read the stage's reports (and dead letters) of this publish until every key has one or time is up."""
    wanted = set(keys)
    applied: dict[str, KnowledgeApplied] = {}
    failed: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while wanted - applied.keys() - failed.keys() and time.monotonic() < deadline:
        for record in consume_all(reader, idle_s=0.5, max_s=1.0):
            if record.value is None:
                continue
            if record.topic == applied_topic:
                try:
                    report = KnowledgeApplied.model_validate_json(record.value)
                except ValueError:
                    continue
                key = report.partition_key()
                if report.publish_id == publish_id and key in wanted:
                    applied.setdefault(key, report)  # a redelivered record's second report says "unchanged"
                    failed.pop(key, None)
            else:
                key, reason = _dead_letter_of_ours(record.value, publish_id)
                if key is not None and key in wanted and key not in applied:
                    failed[key] = reason
        progress("applied", "waiting for the knowledge stage", len(applied) + len(failed), len(wanted))
    pending = sorted(wanted - applied.keys() - failed.keys())
    return applied, failed, pending


def _dead_letter_of_ours(value: bytes, publish_id: str) -> tuple[str | None, str]:
    """(the key, the reason) of a dead-lettered sf.knowledge record of this publish; (None, "") otherwise."""
    try:
        letter = DeadLetter.model_validate_json(value)
        original = json.loads(letter.original or "null")
    except ValueError:
        return None, ""
    if not isinstance(original, dict) or original.get("publish_id") != publish_id:
        return None, ""
    return letter.key, f"{letter.operator}: {letter.error_type}: {letter.error}"


async def _as_ingest_report(source: str, applied: dict[str, KnowledgeApplied], store: KnowledgeStore) -> IngestReport:
    """The stage's reports as a direct ingest's report (the releases as they are now in the store)."""
    report = IngestReport(source=source)
    release_ids: list[str] = []
    for result in applied.values():
        report.embedded += result.embedded
        if result.kind == "document" and result.action in ("added", "changed", "unchanged"):
            getattr(report, result.action).append(result.doc_id)
        elif result.kind == "delete" and result.action == "deleted":
            report.deleted.append(result.doc_id)
        elif result.kind == "release" and result.release_id is not None:
            release_ids.append(result.release_id)
            if result.action == "released":
                report.new_releases.append(result.release_id)
    for name in ("added", "changed", "unchanged", "deleted"):
        getattr(report, name).sort()
    if release_ids:
        releases = {r.release_id: r for r in await store.list_releases()}  # type: ignore[attr-defined]
        report.releases = [releases[r] for r in sorted(release_ids) if r in releases]
    return report
