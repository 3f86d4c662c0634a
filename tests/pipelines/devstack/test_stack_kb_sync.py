"""`supportflow run` keeps the configured knowledge sources synced in a supervised child of its own, and
starts none when there are no sources."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from pipelines.devstack.stack import Stack
from pipelines.runtime.settings import Settings
from tests.support.knowledge import write_files


def _stack(tmp_path: Path, **settings: object) -> Stack:
    stack = Stack(
        Settings(kafka_bootstrap_servers="127.0.0.1:9092", data_dir=tmp_path / "data", **settings),
        with_workspace=False,
    )
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    return stack


async def _live_releases(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["release_id"] for r in await conn.fetch("SELECT release_id FROM kb_live_releases ORDER BY 1")]
    except asyncpg.UndefinedTableError:  # the child has not migrated the fresh database yet
        return []
    finally:
        await conn.close()


def test_no_configured_source_starts_no_sync_process(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    assert stack.start_kb_sync() is None and "kb-sync" not in stack.supervisor.children


async def test_the_sync_process_ingests_the_configured_sources_under_supervision(
    postgres_dsn: str, tmp_path: Path
) -> None:
    folder = write_files(tmp_path / "help", {"warranty.md": "# Warranty\n\nEvery appliance has a two-year warranty.\n"})
    stack = _stack(
        tmp_path,
        database_url=postgres_dsn,
        knowledge_sources=[{"source": str(folder), "kind": "folder", "domain": "support", "every": "1h"}],
    )
    child = stack.kb_sync = stack.start_kb_sync()  # as Stack.start does
    assert child is not None
    try:
        assert stack.supervisor.children["kb-sync"].kind == "kb-sync"
        assert "--watch" in child.argv and "--nice" in child.argv
        deadline = time.monotonic() + 120  # the child loads the embedding model on a busy 2-core machine
        while await _live_releases(postgres_dsn) != ["support@1"]:
            assert child.process.poll() is None, child.log_file.read_text()
            assert time.monotonic() < deadline, child.log_file.read_text()
            await asyncio.sleep(0.5)
        assert child.ready_file.exists() and child.process.poll() is None  # it stays, for the next interval
    finally:
        stack.stop()
    assert child.process.poll() is not None
    assert "warranty.md" in child.log_file.read_text()
