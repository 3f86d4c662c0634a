"""The long-running processes of a deployment: `worker`, `ingress`, `sink`, `senders`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli._common import (
    cluster_settings,
    refuse_open_doors,
    sink_targets,
)


def worker(
    stage: Annotated[Optional[list[str]], typer.Option(help="Run only these stages (repeatable); default all.")] = None,
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once the worker processes records.")] = None,
    nice: Annotated[
        int,
        typer.Option(
            min=0, max=19, help="Lower this worker's CPU priority once its models are loaded (background stages)."
        ),
    ] = 0,
) -> None:
    """Run one stream worker against KAFKA_BOOTSTRAP_SERVERS (start as many as you need)."""
    from pipelines.services.worker import run_worker

    s = cluster_settings("worker")
    run_worker(s, stage or None, ready_file, nice)


def ingress(
    port: Annotated[Optional[int], typer.Option(help="HTTP port (default: settings.http_port).")] = None,
) -> None:
    """Run only the HTTP ingress against KAFKA_BOOTSTRAP_SERVERS (stateless: run as many as you like)."""
    import uvicorn

    from pipelines.runtime.app import ensure_topics
    from pipelines.runtime.topology import load_topology
    from pipelines.services.ingress import build_ingress

    s = cluster_settings("ingress")
    refuse_open_doors(s, ingress=True)
    topology = load_topology(s.topology_file)
    ensure_topics(s, topology)
    uvicorn.run(build_ingress(s, topology), host=s.http_host, port=port or s.http_port, log_level="info")


def sink(
    to: Annotated[
        Optional[list[str]], typer.Option(help="Store to write: postgres, clickhouse (repeatable; default both).")
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending schema migrations before starting.")] = False,
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once every sink consumes.")] = None,
    group: Annotated[
        Optional[str],
        typer.Option(help="Consumer group prefix (default <app_id>-sink); a second copy of a store needs its own."),
    ] = None,
) -> None:
    """Write topics into the stores: messages, replies, escalations, events, profiles, delivery statuses, call
    recordings → Postgres; events → ClickHouse.

    Stores come from DATABASE_URL / CLICKHOUSE_URL, else the embedded defaults in the data dir.
    """
    from pipelines.services.sinks import serve_sinks

    targets = sink_targets(to)
    s = cluster_settings("sink")
    serve_sinks(s, targets, migrate, ready_file, group)


def senders(
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once the senders consume.")] = None,
    migrate: Annotated[
        bool, typer.Option(help="Apply pending schema migrations first (the ledger and outbox tables).")
    ] = True,
) -> None:
    """Deliver replies on sf.outbound to SMS/WhatsApp (Twilio, Meta), Slack, Teams; unconfigured ones → outbox.

    Each reply is sent once (ledger: channel_deliveries in DATABASE_URL or the embedded PostgreSQL);
    voice replies are spoken in the call by the ingress, only those the call missed go to the outbox;
    webchat, mobile, api and email replies are left to their own readers.
    """
    from pipelines.services.senders import serve_senders

    s = cluster_settings("senders")
    serve_senders(s, ready_file, migrate)
