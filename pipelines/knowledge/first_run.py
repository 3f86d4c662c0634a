"""The first run's knowledge base: a stack that starts on an empty one ingests the help center once.

"Empty" is "no release in any domain": once anything was published (this ingest, `supportflow kb ingest`,
even a release since rolled back) the base is the operator's, and later starts leave it alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from connectors.knowledge.pgvector import PgVectorStore
from connectors.knowledge.protocols import Embedder
from connectors.knowledge.sources.folder import FolderSource
from pipelines.knowledge.ingest import IngestProgress, IngestReport, default_chunker, ingest

__all__ = ["FIRST_RUN_DOMAIN", "ingest_if_empty"]

log = logging.getLogger(__name__)

FIRST_RUN_DOMAIN = "support"
"""The domain of an article whose front matter names none (the help center's articles each name theirs)."""


async def ingest_if_empty(
    dsn: str,
    folder: Path,
    embedder: Callable[[], Embedder],
    *,
    on_progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport | None:
    """Ingest `folder` when the knowledge base at `dsn` has no release; None when it has one (nothing done).

    `embedder` is called only when there is something to ingest: loading the model costs a start that
    does not need it.
    """
    store = await PgVectorStore.open(dsn)
    try:
        if await store.list_releases():
            return None
        log.info("knowledge base empty: ingesting %s", folder)
        source = FolderSource(folder, domain=FIRST_RUN_DOMAIN)
        report = await ingest(source, FIRST_RUN_DOMAIN, embedder(), default_chunker, store, on_progress=on_progress)
        log.info(
            "knowledge base: %d documents from %s, releases %s",
            len(report.added) + len(report.changed) + len(report.unchanged),
            folder,
            ", ".join(r.release_id for r in report.releases),
        )
        return report
    finally:
        await store.close()
