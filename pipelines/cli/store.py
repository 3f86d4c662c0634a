"""The conversation store: `db`, `outbox`, `deliveries`, `replay`, `seed`, `feedback`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import (
    broker_settings,
    console,
    err,
    on_database,
    parse_since,
    settings,
    sink_targets,
)

db_app = typer.Typer(
    help="The PostgreSQL conversation store (DATABASE_URL, or the embedded server in the data dir).",
    no_args_is_help=True,
)


feedback_app = typer.Typer(help="Human feedback (sf.feedback) kept in the conversation store.", no_args_is_help=True)


def outbox(
    limit: Annotated[int, typer.Option(min=1, help="Newest rows to show.")] = 20,
    channel: Annotated[
        Optional[str], typer.Option(help="Only this channel (sms, whatsapp, slack, teams, voice, email).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """What would have been sent: replies of channels with no provider credentials (channel_outbox).

    Reads DATABASE_URL, or the embedded PostgreSQL in the data dir (like `db status`).
    """
    from rich.table import Table

    from connectors.channels.outbox import list_outbox

    async def job(conn: Any) -> Any:
        return await list_outbox(conn, limit, channel)

    rows = on_database(settings(), job)
    if as_json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
        return
    if not rows:
        console.print("the outbox is empty")
        return
    table = Table("created", "channel", "recipient", "reply", "parts", "text")
    for row in rows:
        table.add_row(
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.channel,
            escape(row.recipient),
            escape(row.reply_id),
            str(len(row.parts)),
            escape(row.text if len(row.text) <= 80 else row.text[:79] + "…"),
        )
    console.print(table)


def deliveries(
    limit: Annotated[int, typer.Option(min=1, help="Newest rows to show.")] = 20,
    channel: Annotated[Optional[str], typer.Option(help="Only this channel (sms, whatsapp, slack, voice).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of a table.")] = False,
) -> None:
    """What the senders delivered, and what the provider reported since: each part's delivery status.

    The ledger (channel_deliveries) joined with Twilio's status callbacks (delivery_statuses), by
    message sid; a voice reply spoken in the call shows provider twilio-call.
    """
    from rich.table import Table

    from connectors.channels.outbox import list_deliveries

    async def job(conn: Any) -> Any:
        return await list_deliveries(conn, limit, channel)

    rows = on_database(settings(), job)
    if as_json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
        return
    if not rows:
        console.print("no deliveries yet")
        return
    table = Table("claimed", "channel", "reply", "provider", "ledger", "provider status")
    for row in rows:
        reported = ", ".join(
            f"{p['status']}" + (f" (error {p['error_code']})" if p["error_code"] is not None else "") for p in row.parts
        )
        table.add_row(
            row.claimed_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.channel,
            escape(row.reply_id),
            row.provider,
            row.status,
            escape(reported or "—"),
        )
    console.print(table)


def replay(
    since: Annotated[
        str,
        typer.Option(
            "--from", help="Start here: ISO timestamp (UTC if no zone), or a span back from now such as 30m, 24h, 7d."
        ),
    ],
    to: Annotated[str, typer.Option(help="Store to re-materialize: clickhouse or postgres.")],
    topic: Annotated[str, typer.Option(help="Topic to read (its record type decides what is written).")] = "sf.events",
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Records per store write.")] = 5000,
) -> None:
    """Re-materialize a store from a retained topic, idempotently (replaying twice changes nothing)."""

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipelines.runtime.sinks import SINK_RECORDS_BY_TARGET
    from pipelines.runtime.topology import load_topology
    from pipelines.services.replay import ReplayResult, replay_topic
    from pipelines.services.sinks import open_writer
    from schemas import record_types

    (target,) = sink_targets([to])
    start = parse_since(since)
    s = broker_settings("replay")
    topology = load_topology(s.topology_file)
    if topic not in topology.spec.topics:
        err.print(f"[red]unknown topic {topic!r}[/red]; the topology has {', '.join(topology.spec.topics)}")
        raise typer.Exit(2)
    record_type = record_types()[topology.spec.topics[topic].record]
    if record_type not in SINK_RECORDS_BY_TARGET[target]:
        stored = ", ".join(t.__name__ for t in SINK_RECORDS_BY_TARGET[target])
        err.print(f"[red]{target} does not store {record_type.__name__}[/red] (it stores {stored})")
        raise typer.Exit(2)

    async def main() -> ReplayResult:
        columns = (TextColumn(f"{topic} → {target}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("replay", total=None)
            async with open_writer(s, target, migrate=True) as write:
                return await replay_topic(
                    s,
                    topic,
                    record_type,
                    start,
                    write,
                    batch_size,
                    on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                )

    try:
        result = asyncio.run(main())
    except LookupError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"replayed {topic} from {start.isoformat()} into {target}: wrote {result.written} record(s) "
        f"(read {result.read}, {result.skipped_before} older than --from, {result.invalid} invalid)",
        soft_wrap=True,
    )


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Option("--out", help="The CSV to write (columns text, label).")],
    since: Annotated[
        Optional[str], typer.Option(help="Only corrections from then on: ISO timestamp or duration ago (30d).")
    ] = None,
    model: Annotated[
        Optional[Path],
        typer.Option(help="Model version folder whose labels.json limits the labels (default: the latest version)."),
    ] = None,
    all_labels: Annotated[
        bool, typer.Option("--all-labels", help="Keep labels the model does not know (nlu train refuses them).")
    ] = False,
) -> None:
    """Intent corrections as training rows (the message's text, the corrected intent) for `nlu train --extra-train`.

    Reads DATABASE_URL, or the embedded PostgreSQL in the data dir (like `db migrate`).
    """
    from connectors.postgres import intent_corrections
    from pipelines.evaluation.analytics_report import parse_moment
    from pipelines.ml.evaluate import DataError, latest_version
    from pipelines.ml.feedback_export import model_labels, write_training_csv

    def fail(message: str) -> typer.Exit:
        err.print(f"[red]feedback export:[/red] {escape(message)}")
        return typer.Exit(2)

    try:
        start = parse_moment(since, datetime.now(UTC)) if since else None
    except ValueError as exc:
        raise fail(f"invalid --since: {exc}") from None
    if not out.parent.is_dir():
        raise fail(f"--out: folder {out.parent} does not exist")
    known: set[str] | None = None
    if not all_labels:
        try:
            version = model or latest_version()
            known = model_labels(version)
        except (DataError, OSError, KeyError, ValueError) as exc:
            raise fail(f"cannot read the model's labels ({exc}); pass --model DIR or --all-labels") from None
    rows = on_database(settings(), lambda conn: intent_corrections(conn, start))
    result = write_training_csv(rows, out, known)
    console.print(f"wrote {result.written} training row(s) to {out}")
    if result.unknown_labels:
        left = ", ".join(f"{label} ({n})" for label, n in sorted(result.unknown_labels.items()))
        console.print(f"[yellow]left out {sum(result.unknown_labels.values())} row(s) whose label the model "
                      f"does not know:[/yellow] {escape(left)} (--all-labels keeps them)")  # fmt: skip
    if result.written:
        console.print(f"train with: supportflow nlu train --extra-train {out} ...")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations, in order, in one transaction (safe to run any number of times)."""
    from connectors.postgres import migrate

    applied = on_database(settings(), migrate)
    if applied:
        console.print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        console.print("database schema is up to date")


@db_app.command("status")
def db_status() -> None:
    """List applied and pending migrations."""
    from connectors.postgres import migration_status

    status = on_database(settings(), migration_status)
    for version in status.applied:
        mark = "  [yellow]changed since applied[/yellow]" if version in status.changed else ""
        console.print(f"applied  {version}{mark}")
    for version in status.pending:
        console.print(f"pending  {version}")
    summary = f"{len(status.applied)} applied, {len(status.pending)} pending"
    console.print(summary if status.pending else f"{summary} — up to date")


def seed(
    customers: Annotated[
        int,
        typer.Option(min=2, max=999_999, help="Customers in total, the 2 well-known ones (C000001, C000002) included."),
    ] = 2000,
    orders: Annotated[
        int, typer.Option(min=10, help="Orders in total, the well-known customers' 10 orders included.")
    ] = 6000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed on the same day writes the same rows.")] = 7,
    reset: Annotated[bool, typer.Option("--reset", help="Empty every commerce table first.")] = False,
) -> None:
    """Fill the commerce backend (the default tenant) with deterministic demo data.

    Applies pending migrations, then writes customers, addresses, payment methods, orders in every
    status, items, shipments, payments, refunds, invoices and subscriptions in one transaction.
    Running it again with the same seed changes nothing; --reset starts from empty tables.
    Uses DATABASE_URL, or the embedded PostgreSQL in the data dir (like `db migrate`).
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from connectors.backends.commerce.seed import check_counts, seed_commerce
    from connectors.postgres import migrate

    try:
        check_counts(customers, orders)  # before touching the database
    except ValueError as exc:
        err.print(f"[red]invalid arguments:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None

    async def job(conn: Any) -> dict[str, int]:
        await migrate(conn)
        columns = (TextColumn("seeding {task.description:<16}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task("", total=None)

            def on_progress(table: str, done: int, total: int) -> None:
                progress.update(task, description=table, completed=done, total=total)

            return await seed_commerce(conn, customers, orders, seed, reset=reset, on_progress=on_progress)

    started = time.perf_counter()
    counts = on_database(settings(), job)
    elapsed = time.perf_counter() - started
    console.print(
        f"seeded the commerce backend in {elapsed:.1f}s (seed {seed}): "
        + ", ".join(
            f"{counts[t]} {t}" for t in ("customers", "orders", "order_items", "shipments", "payments", "refunds")
        ),
        soft_wrap=True,
    )
    console.print(
        "well-known customers: C000001 Alice Martin (orders 1000001-1000005), C000002 Bob Stone (2000001-2000005)",
        soft_wrap=True,
    )
