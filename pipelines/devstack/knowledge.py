"""A stack's first start on an empty knowledge base: the help center goes in before any worker answers.

`supportflow run` does it on its embedded PostgreSQL; the benchmark and the agent evaluation do it on
theirs, so they measure the agent a user first runs, whose informational answers come from the articles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from connectors.knowledge.protocols import Embedder
from pipelines.knowledge.first_run import ingest_if_empty
from pipelines.knowledge.ingest import IngestProgress, IngestReport
from pipelines.runtime.settings import Settings

__all__ = ["ingest_help_center"]


def ingest_help_center(
    settings: Settings, on_progress: Callable[[IngestProgress], None] | None = None
) -> IngestReport | None:
    """`settings.help_center_dir` into the knowledge base at `settings.database_url` when it has no
    release yet, embedded by the served text embedder (through Triton when `triton_url` is set, in
    process otherwise); None when there is nothing to do or nowhere to put it."""
    from connectors.knowledge.triton_embedder import build_embedder

    folder = settings.help_center_dir
    if settings.database_url is None or folder is None:
        return None

    def embedder() -> Embedder:
        return build_embedder(settings.model_repository, settings.triton_url)

    dsn = settings.database_url.get_secret_value()
    return asyncio.run(ingest_if_empty(dsn, Path(folder), embedder, on_progress=on_progress))
