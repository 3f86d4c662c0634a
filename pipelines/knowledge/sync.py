"""`supportflow kb sync`: re-ingest the configured sources, each when its interval has passed.

A sync is an ordinary ingest (`pipelines/knowledge/ingest.py`): content hashes keep an unchanged
document from being written again, so repeating a source costs reading it and changes only what
changed. One source failing (a folder gone, a site down) is logged and reported; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from connectors.knowledge.models import EmbedderFor
from connectors.knowledge.protocols import Embedder
from connectors.knowledge.sources.spec import KnowledgeSourceSpec, make_source
from pipelines.knowledge.ingest import IngestReport, KnowledgeStore, default_chunker, ingest
from pipelines.knowledge.schedule import SyncState

__all__ = ["SyncOutcome", "sync_due", "utc_now", "wait_or_stop", "watch"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SyncOutcome:
    spec: KnowledgeSourceSpec
    status: Literal["synced", "failed", "not_due"]
    report: IngestReport | None = None
    error: str | None = None
    next_due: datetime | None = None  # not_due: when it will be


async def sync_due(
    specs: Sequence[KnowledgeSourceSpec],
    store: KnowledgeStore,
    embedder: Callable[[], Embedder],
    state: SyncState,
    *,
    now: Clock = utc_now,
    every_source: bool = False,
    embedder_for: EmbedderFor | None = None,
) -> list[SyncOutcome]:
    """Ingest each source that is due (all of them with `every_source`), in order; record each attempt.

    `embedder` is called once, at the first source due: loading the model takes seconds, and a pass
    with nothing due should not pay for it. `embedder_for` loads the model of a live or building index
    of another model (after a `kb reembed`), as for `ingest`.
    """
    outcomes: list[SyncOutcome] = []
    model: Embedder | None = None
    state.load()
    for spec in specs:
        started = now()
        if not every_source and not state.is_due(spec, started):
            outcomes.append(SyncOutcome(spec, "not_due", next_due=state.next_due(spec)))
            continue
        try:
            source = make_source(spec.source, spec.kind, spec.domain, spec.max_pages, spec.rate)
            model = model or embedder()
            report = await ingest(source, spec.domain, model, default_chunker, store, embedder_for=embedder_for)
        except Exception as exc:  # one source's failure (gone, unreachable, unreadable) is not the others'
            log.warning("kb sync of %s failed: %s", spec.source, exc, exc_info=not isinstance(exc, ValueError))
            error = str(exc) or type(exc).__name__
            state.record(spec, started, ok=False, error=error)
            outcomes.append(SyncOutcome(spec, "failed", error=error))
            continue
        state.record(spec, started, ok=True)
        outcomes.append(SyncOutcome(spec, "synced", report=report))
    return outcomes


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def watch(
    specs: Sequence[KnowledgeSourceSpec],
    store: KnowledgeStore,
    embedder: Callable[[], Embedder],
    state: SyncState,
    stop: asyncio.Event,
    on_pass: Callable[[list[SyncOutcome]], None],
    *,
    now: Clock = utc_now,
    sleep: Callable[[asyncio.Event, float], Awaitable[None]] = wait_or_stop,
    embedder_for: EmbedderFor | None = None,
) -> None:
    """Sync what is due, sleep until the next source is, repeat until `stop` is set."""
    while not stop.is_set():
        on_pass(await sync_due(specs, store, embedder, state, now=now, embedder_for=embedder_for))
        dues = [state.next_due(spec) for spec in specs]
        soonest = min((due for due in dues if due is not None), default=None)
        wait = 0.0 if soonest is None else max(0.0, (soonest - now()).total_seconds())
        await sleep(stop, wait)
