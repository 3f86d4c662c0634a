"""`supportflow run`, `demo` and `chat`: the embedded stack on this machine, and talking to it."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import (
    StopOnSignal,
    configure_logging,
    console,
    err,
    print_demo_agents,
    refuse_open_doors,
    settings,
)

if TYPE_CHECKING:
    from rich.status import Status

    from pipelines.devstack.stack import Stack

log = logging.getLogger(__name__)


def run(
    workers: Annotated[Optional[int], typer.Option(help="Stream worker processes (default: settings.workers).")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP ingress port (default: settings.http_port).")] = None,
) -> None:
    """Run the whole pipeline here until Ctrl-C: broker (embedded unless configured), topics, workers, stores,
    channel senders, the email channel (SMTP listener and sender), the HTTP ingress, and the knowledge sync
    when `knowledge_sources` names any.

    Children that crash are restarted with backoff (a crash loop gives up and says so); see them with
    `supportflow status`. Ctrl-C stops whatever has started, at any moment of the start-up too."""
    from pipelines.devstack.stack import Stack
    from pipelines.services.senders import outbox_channels

    s = settings()
    configure_logging(s.log_level)
    refuse_open_doors(s, ingress=True, workspace=True)  # before anything starts
    signals = StopOnSignal()
    stack = Stack(s, workers=workers)
    failure: str | None = None
    try:
        with console.status("starting broker, Triton, stores, workers and channels…") as starting:
            knowledge: list[str] = []

            def prepare(started: Stack) -> None:
                knowledge.extend(_first_run_knowledge(started, starting))

            stack.start(ingress_port=port if port is not None else s.http_port, prepare=prepare)
        assert stack.ingress is not None
        url = stack.ingress.url
        where = "embedded tansu" if s.embedded else "Kafka"
        console.print(
            f"[green]supportflow is running[/green] — {where} at {stack.bootstrap}; {stack.describe_workers()}"
        )
        console.print(f"  web chat demo  {url}/  (the widget; WebSocket /v1/chat)")
        console.print(f"  HTTP ingress   {url}/v1/messages  (POST a message)")
        console.print(f"  replies        {url}/v1/conversations/<id>/messages")
        console.print(f"  metrics        {url}/metrics")
        console.print(f"  terminal chat  supportflow chat     logs: {stack.log_dir}")
        console.print("  processes      supportflow status  (restarts, health, consumer lag)")
        console.print(f"  NLU            {stack.nlu_summary()}")
        for line in knowledge:
            console.print(f"  knowledge      {line}", soft_wrap=True)
        if stack.kb_sync is not None:
            count = len(stack.settings.knowledge_sources)
            console.print(
                f"  knowledge sync {count} source(s) re-ingested at their intervals (supportflow kb sync; "
                f"log: {stack.kb_sync.log_file})",
                soft_wrap=True,
            )
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
                print_demo_agents(stack.agents_file or Path("?"), stack.demo_passwords)
            else:
                console.print(f"                 sign in as an agent of {stack.agents_file}")
        console.print("Ctrl-C stops everything.")
        stack.supervise()
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # a start that failed, or the ingress gone: stop the rest, then say why
        failure = str(exc)
    finally:
        signals.hold()
        with console.status("stopping…"):
            stack.stop()
        console.print("stopped.")
    if failure is not None:
        err.print(f"[red]supportflow run failed:[/red] {escape(failure)}")
        raise typer.Exit(1)


def _first_run_knowledge(stack: Stack, status: Status) -> list[str]:
    """The embedded store's first run: ingest the help center into the empty knowledge base, before any
    worker answers (`Stack.start`'s prepare step); lines for the start-up summary.

    Only the embedded PostgreSQL: a configured DATABASE_URL is the operator's, filled with `supportflow kb`.
    A failure is reported and the run goes on: the agent then answers from its reply templates.
    """
    from pipelines.devstack.knowledge import ingest_help_center
    from pipelines.knowledge.ingest import IngestProgress

    s = stack.settings
    folder = s.help_center_dir
    if stack.postgres is None or s.database_url is None or folder is None:
        return []

    def show(step: IngestProgress) -> None:
        total = f"/{step.estimate}" if step.estimate else ""
        status.update(f"first run: ingesting the help center into the knowledge base… {step.done}{total}")

    try:
        report = ingest_help_center(s, on_progress=show)
    except Exception as exc:  # the agent still runs, on its reply templates
        log.warning("first-run ingest of %s failed", folder, exc_info=True)
        return [f"[yellow]the help center was not ingested ({escape(str(exc))})[/yellow]; replies use the templates"]
    finally:
        status.update("starting broker, Triton, stores, workers and channels…")
    if report is None:
        return ["answers from the knowledge base's live releases (supportflow kb releases)"]
    documents = len(report.added) + len(report.changed) + len(report.unchanged)
    releases = ", ".join(r.release_id for r in report.releases)
    articles = f"{documents} help-center article{'s' if documents != 1 else ''}"
    return [f"first run: {articles} from {escape(str(folder))} ingested ({releases})"]


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


def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary, as JSON.")] = False,
) -> None:
    """Start the embedded stack, play scripted conversations across customers and channels, summarise."""
    from pipelines.devstack.demo import play_demo

    summary = play_demo(settings(), console=None if as_json else console)
    if as_json:
        print(json.dumps(summary, indent=2))


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show the processes of the `supportflow run` serving from this data dir (state, restarts, uptime,
    health) and each consumer group's lag. Exit code 1 if none runs, 3 if a process has failed."""
    from rich.table import Table

    from pipelines.devstack.status import stack_status

    s = settings()
    found = stack_status(s)
    if found is None:
        err.print(f"no `supportflow run` is serving from {s.data_dir.resolve()}")
        raise typer.Exit(1)
    if as_json:
        print(json.dumps(found.as_dict(), indent=2))
    else:
        table = Table("process", "pid", "state", "restarts", "uptime", "health", "last exit", title="processes")
        for p in found.processes:
            state = {"running": "green", "starting": "cyan", "restarting": "yellow"}.get(p.state, "red")
            shown = p.state + (f" (in {p.restart_in_s:.1f} s)" if p.restart_in_s is not None else "")
            table.add_row(
                p.name,
                str(p.pid),
                f"[{state}]{shown}[/{state}]",
                str(p.restarts),
                _duration(p.uptime_s),
                escape(p.health),
                escape(p.last_exit or "-"),
            )
        console.print(table)
        lag = Table("consumer group", "lag", "partitions", "topics", title=f"consumer lag at {found.bootstrap}")
        for g in found.consumer_groups:
            lag.add_row(g.group, str(g.lag), str(g.partitions), ", ".join(g.topics))
        console.print(lag)
        if found.lag_error:
            err.print(f"[red]the broker did not answer:[/red] {escape(found.lag_error)}")
        if found.failed:
            err.print(f"[red bold]FAILED (no longer restarted): {', '.join(found.failed)}[/red bold]")
    if found.failed:
        raise typer.Exit(3)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
