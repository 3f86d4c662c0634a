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
    trials: Annotated[int, typer.Option(min=1, max=32, help="Trials per task (k of pass^k), each in other words.")] = 4,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Conversations in flight at once.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the customer's phrasings.")] = 0,
    task: Annotated[Optional[list[str]], typer.Option(help="Run only these task ids (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path("bench/agent_eval.json"),
) -> None:
    """Run the tasks (pipelines/evaluation/data/agent_tasks) k times each through fresh embedded stacks, with a
    simulated customer; score them on outcomes: the backend's final state against the expected calls replayed
    on a copy of the seed, the facts in the replies, the escalation reason. Reports pass^1, pass^k, wrong
    actions and reply latency."""
    from pipelines.evaluation.agent_eval import render, run_agent_eval

    s = settings()
    if not s.embedded or s.database_url is not None:
        err.print(
            "[red]eval agent runs on a fresh embedded stack[/red]: unset KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL"
        )
        raise typer.Exit(2)
    result = run_agent_eval(s, trials, concurrency, err if as_json else console, seed=seed, only=task)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        console.print(render(result))
        console.print(f"results written to {out}")
