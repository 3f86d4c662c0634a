"""The embedded PostgreSQL: persistent between runs, joined when already running, gone with its parent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.postgres import EmbeddedPostgres, open_conversation_store
from pipelines.runtime.settings import PROJECT_DIR, Settings
from schemas import Message, utcnow


@pytest.fixture
def folder() -> Iterator[Path]:
    # not tmp_path: another pytest run may rotate it away while the server runs
    made = Path(tempfile.mkdtemp(prefix="supportflow-test-pg-"))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_the_embedded_store_keeps_its_data_between_runs(folder):
    settings = Settings(data_dir=folder, database_url=None)  # the embedded server even if DATABASE_URL is set
    record = Message(
        message_id="m1",
        conversation_id="conv-a",
        customer_id="a",
        channel="email",
        sender="a@example.com",
        text="still here?",
        received_at=utcnow(),
    )
    store = await open_conversation_store(settings, migrate=True)
    try:
        await store.write("sf.messages", [record])
    finally:
        await store.close()
    assert not (folder / "postgres" / "postmaster.pid").exists(), "closing the store stopped its server"
    store = await open_conversation_store(settings)
    try:
        snapshot = await store.conversation_snapshot("conv-a")
        assert snapshot is not None and snapshot["messages"][0]["text"] == "still here?"
        assert await store.migrate() == []
    finally:
        await store.close()


def test_a_second_start_on_a_running_folder_joins_it_and_leaves_it_running(folder):
    first = EmbeddedPostgres(folder / "pg", durable=False)
    dsn = first.start()
    try:
        second = EmbeddedPostgres(folder / "pg", durable=False)
        assert second.start() == dsn
        second.stop()
        assert first.process is not None and first.process.poll() is None
    finally:
        first.stop()


def test_the_server_dies_with_the_process_that_started_it(folder):
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from connectors.postgres import EmbeddedPostgres\n"
        "server = EmbeddedPostgres(Path(sys.argv[1]), durable=False)\n"
        "server.start()\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(folder / "pg")],
        stdout=subprocess.PIPE,
        cwd=PROJECT_DIR,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
    )
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert alive(server_pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(server_pid), "postgres outlived the process that started it"
    finally:
        parent.kill()
