"""`supportflow bench` and `supportflow eval`: figures measured through the embedded stack."""

from __future__ import annotations

import json
import sys
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
    messages: Annotated[
        int, typer.Option(min=1, help="Turns sent in the throughput phase (b), and at least that many in c/d.")
    ] = 10_000,
    concurrency: Annotated[
        int,
        typer.Option(min=1, max=4096, help="Conversations in flight at once in phase b (each waits for its answers)."),
    ] = 256,
    drift_messages: Annotated[
        int,
        typer.Option(min=0, help="Turns of the paced run (phases c and d); 0: --messages, and no drift windows."),
    ] = 50_000,
    rate: Annotated[
        Optional[float], typer.Option(min=0.1, help="Turns/s of the paced run; default: half of phase b's throughput.")
    ] = None,
    warm_up: Annotated[int, typer.Option(min=1, help="Turns sent before each measured phase, not counted.")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the conversation mix (scripts, phrasings, channels).")] = 0,
    one_stack: Annotated[
        bool,
        typer.Option(help="Quick runs: phases c/d on phase b's stack instead of a fresh one (one start-up less)."),
    ] = False,
    profile: Annotated[
        bool,
        typer.Option(help="Run py-spy on the workers, sink and ingress during phase b; top entries in the JSON."),
    ] = False,
    out: Annotated[Path, typer.Option(help="Where to write the JSON results (an earlier file is kept aside).")] = Path(
        "bench/results.json"
    ),
) -> None:
    """Measure the path a customer's message takes, end to end, on a fresh embedded stack.

    The stack is `supportflow run`'s: broker, Triton with the intent model, PostgreSQL with the demo shop,
    every worker of topology.yaml, the sink, senders, email channel and workspace, and the HTTP ingress
    (in a process of its own). Multi-turn conversations (pipelines/evaluation/data/bench_conversations.yaml:
    order tracking with identity checks, cancellations, refunds, address changes, questions, hand-offs) come
    in through the ingress as real clients send them: the web chat's WebSocket with a customer token, the
    app backend's REST calls with an API key, signed Twilio SMS/WhatsApp webhooks. Each conversation has a
    customer of its own in the shop, so the playbooks' tools act on PostgreSQL.

    Phases: (a) the bare intent model on the same texts; (b) the most answers/s the stack sustains;
    (c) latency, turn sent -> answer on sf.outbound/sf.escalations, at half that rate; (d) latency per
    window over the long paced run (drift). The JSON records the commit, topology, settings, machine and
    text mix beside the figures, and the ratio of (b) to (a).
    """
    from pipelines.evaluation.bench import BenchOptions, keep_previous, py_spy_path, render_profile, run_bench

    s = settings()
    if profile:
        try:
            py_spy_path()
        except RuntimeError as exc:
            err.print(f"[red]--profile[/red]: {exc}")
            raise typer.Exit(2) from None
    if not s.embedded or s.database_url is not None:
        err.print("[red]bench runs on a fresh embedded stack[/red]: unset KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL")
        raise typer.Exit(2)
    options = BenchOptions(
        messages=messages,
        concurrency=concurrency,
        drift_messages=drift_messages,
        warm_up_messages=warm_up,
        rate=rate,
        seed=seed,
        one_stack=one_stack,
        profile_dir=out.with_name(f"{out.stem}_profile") if profile else None,
    )
    command = "supportflow bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "supportflow bench"
    results = run_bench(s, options, console, command=command)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = keep_previous(out)
    if kept is not None:
        console.print(f"the earlier results are kept as {kept}")
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if profile:
        profile_file = out.with_name(f"{out.stem}_profile.json")
        profile_file.write_text(json.dumps(results.get("profile", {}), indent=2) + "\n")
        profile_file.with_suffix(".txt").write_text(render_profile(results.get("profile", {})))
        console.print(f"profile's top entries written to {profile_file} and {profile_file.with_suffix('.txt')}")
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
