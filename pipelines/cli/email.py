"""`supportflow email`: the email channel (SMTP listener and reply sender)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import (
    broker_settings,
    console,
    err,
    until_signal,
)

email_app = typer.Typer(
    help="The email channel: an SMTP listener that feeds sf.ingress, and a sender for email replies on sf.outbound.",
    no_args_is_help=True,
)


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

    until_signal(main)


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
