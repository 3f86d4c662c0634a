"""`supportflow bench` and `supportflow eval`: figures measured through the embedded stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipelines.cli._common import (
    console,
    err,
    settings,
)

eval_app = typer.Typer(help="Evaluate the agent end to end.", no_args_is_help=True)


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
