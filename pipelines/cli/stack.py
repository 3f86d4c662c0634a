"""`supportflow run`, `demo` and `chat`: the embedded stack on this machine, and talking to it."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import (
    configure_logging,
    console,
    err,
    print_demo_agents,
    refuse_open_doors,
    settings,
)


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
    configure_logging(s.log_level)
    refuse_open_doors(s, ingress=True, workspace=True)  # before anything starts
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
                print_demo_agents(stack.agents_file or Path("?"), stack.demo_passwords)
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
