"""`supportflow analytics`: the headline metrics report."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import (
    console,
    err,
    settings,
)

analytics_app = typer.Typer(help="Headline metrics from the events table (ClickHouse, or chdb).", no_args_is_help=True)


@analytics_app.command("report")
def analytics_report(
    since: Annotated[
        Optional[str], typer.Option(help="Window start: ISO timestamp (UTC unless zoned) or duration ago (24h, 7d).")
    ] = None,
    until: Annotated[Optional[str], typer.Option(help="Window end (exclusive), same forms; default now.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
    png: Annotated[Path, typer.Option("--png", help="Where to write the PNG chart.")] = Path("analytics-report.png"),
    no_png: Annotated[bool, typer.Option("--no-png", help="Do not write the PNG chart.")] = False,
    clickhouse_url: Annotated[
        Optional[str], typer.Option(help="clickhouse://user:password@host:9000/db (default: settings.clickhouse_url).")
    ] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where the embedded chdb folder is (data_dir/chdb).")] = None,
    low_confidence_margin: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Content gaps: an answer less than this above its confidence threshold is weak."
        ),
    ] = 0.1,
) -> None:
    """Volume, resolution and escalation rates, reply latency, sentiment and cost over a window (default 7 days)."""

    from connectors.clickhouse import EventStoreLocked, open_event_store
    from pipelines.evaluation.analytics_report import build_report, parse_moment, render_png, render_text
    from pipelines.evaluation.question_groups import default_embedder

    def fail(message: str, code: int = 2) -> typer.Exit:
        err.print(f"[red]analytics report:[/red] {escape(message)}")
        return typer.Exit(code)

    now = datetime.now(UTC).replace(microsecond=0)
    try:
        start = parse_moment(since, now) if since else parse_moment("7d", now)
    except ValueError as exc:
        raise fail(f"invalid --since: {exc}") from None
    try:
        end = parse_moment(until, now) if until else now
    except ValueError as exc:
        raise fail(f"invalid --until: {exc}") from None
    if start >= end:
        raise fail(f"--since ({start:%Y-%m-%d %H:%M:%S}) must be before --until ({end:%Y-%m-%d %H:%M:%S}) (UTC)")
    if clickhouse_url is not None and not clickhouse_url.startswith(("clickhouse://", "clickhouses://")):
        raise fail("--clickhouse-url must look like clickhouse://user:password@host:9000/db")
    if not no_png and not png.parent.is_dir():
        raise fail(f"--png: folder {png.parent} does not exist")
    s = settings(clickhouse_url=clickhouse_url, data_dir=data_dir)
    if s.clickhouse_url is None and not (s.data_dir / "chdb").is_dir():
        raise fail(f"no analytics data: {s.data_dir / 'chdb'} does not exist (run the stack, or pass --data-dir)")
    where = "ClickHouse" if s.clickhouse_url is not None else f"chdb at {s.data_dir / 'chdb'}"
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)  # its failure is reported below, once

    async def collect() -> object:
        store = open_event_store(s)
        try:
            # the knowledge base's embedder groups reworded gap questions by meaning; none: by shared words
            embed = default_embedder(s.model_repository)
            return await build_report(store, start, end, embed, low_confidence_margin)
        finally:
            await store.close()

    try:
        report = asyncio.run(collect())
    except EventStoreLocked as exc:
        raise fail(f"{exc}. Stop it first, or point --clickhouse-url at a ClickHouse server.", 1) from None
    except Exception as exc:  # the server's or chdb's own error, said once, without a traceback
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(f"querying {where} failed: {first_line}", 1) from None
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        console.print(render_text(report))
    if not no_png:
        render_png(report, png)
        (err if as_json else console).print(f"chart written to {png}")
