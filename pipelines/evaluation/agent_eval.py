"""`supportflow eval agent`: the agent held to account on outcomes, τ-bench style.

Tasks are data (`pipelines/evaluation/data/agent_tasks/`), the customer's words come from a
phrasing bank written for this evaluation (`data/customer_phrasings.yaml`), and a simulated
customer answers the agent by what it is asked (`agent_customer.py`). Each trial round starts a
fresh embedded stack — broker, Triton, the demo shop freshly seeded in PostgreSQL — and runs every
task once through the HTTP ingress, all at once (every task has a customer of its own). The
expected state is the seed with every task's expected tool calls replayed on another fresh copy,
in a database of its own on the same server; scoring is in `agent_scoring.py`. k rounds give each
task k trials in k phrasings; pass^1 and pass^k are reported as τ-bench does.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from pipelines.evaluation.agent_customer import (
    PHRASINGS,
    TASKS_DIR,
    SimulatedCustomer,
    Task,
    customer_facts,
    load_tasks,
)
from pipelines.evaluation.agent_scoring import (
    State,
    Transcript,
    Verdict,
    judge,
    replay_expected,
    resolve_fact,
    snapshot,
    summarise,
)
from pipelines.evaluation.provenance import source_state
from pipelines.runtime.settings import Settings

EXPECTED_DB = "sf_eval_expected"
MAX_TURNS = 12


async def converse(client: httpx.AsyncClient, task: Task, facts: dict[str, str], trial: int, seed: int) -> Transcript:
    """One trial of one task through the HTTP ingress, until the customer has nothing more to say."""
    customer = SimulatedCustomer(task, facts, trial, seed)
    transcript = Transcript(task, trial)
    said: str | None = customer.opening()
    try:
        while said is not None and len(transcript.turns) < MAX_TURNS:
            started = time.perf_counter()
            posted = await client.post(
                "/v1/messages",
                json={
                    "channel": "webchat",
                    "sender": f"web-{task.customer}",
                    "customer_id": task.customer,
                    "text": said,
                },
            )
            posted.raise_for_status()
            message_id = posted.json()["message_id"]
            answer = (await client.get(f"/v1/messages/{message_id}", params={"wait": 30})).json()
            transcript.latencies_ms.append((time.perf_counter() - started) * 1000)
            body = answer.get("answer") or {}
            if answer["status"] == "escalated":
                transcript.turns.append({"said": said, "kind": "escalation", "text": body.get("reason", "")})
                transcript.escalated, transcript.reason = True, body.get("reason", "")
                break
            reply = body.get("text", "")
            if not reply:
                transcript.error = f"no answer to {said!r} (status {answer['status']})"
                break
            transcript.turns.append({"said": said, "kind": "reply", "text": reply})
            said = customer.respond(reply)
    except (httpx.HTTPError, KeyError) as exc:
        transcript.error = f"{type(exc).__name__}: {exc}"
    return transcript


async def run_round(
    base_url: str,
    tasks: list[Task],
    facts: dict[str, dict[str, str]],
    trial: int,
    seed: int,
    concurrency: int,
    progress: Any = None,
) -> list[Transcript]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one(task: Task) -> Transcript:
            async with limit:
                transcript = await converse(client, task, facts.get(task.customer, {}), trial, seed)
            if progress is not None:
                progress()
            return transcript

        return list(await asyncio.gather(*(one(t) for t in tasks)))


def _with_database(dsn: str, database: str) -> str:
    base, _, query = dsn.partition("?")
    return base.rsplit("/", 1)[0] + "/" + database + (f"?{query}" if query else "")


async def expected_world(dsn: str, tasks: list[Task]) -> tuple[State, dict[str, dict[str, Any]]]:
    """Seed a fresh copy of the shop next to the agent's, replay the expected calls on it, read its state."""
    import asyncpg

    from connectors.backends.commerce.seed import seed_commerce
    from connectors.postgres.migrator import migrate

    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {EXPECTED_DB}")
        await admin.execute(f"CREATE DATABASE {EXPECTED_DB}")
    finally:
        await admin.close()
    target = _with_database(dsn, EXPECTED_DB)
    conn = await asyncpg.connect(target)
    try:
        await migrate(conn)
        await seed_commerce(conn)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(target, min_size=1, max_size=4, server_settings={"timezone": "UTC"})
    try:
        results = await replay_expected(pool, tasks)
        async with pool.acquire() as conn:
            state = await snapshot(conn)
    finally:
        await pool.close()
    return state, results


async def read_outcome(dsn: str) -> tuple[State, dict[str, list[tuple[str, str | None]]]]:
    """The agent's backend after a round: its state and every write, by customer."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        state = await snapshot(conn)
        rows = await conn.fetch(
            "SELECT customer_id, tool, arguments->>'order_number' AS order_number FROM commerce.action_log"
        )
    finally:
        await conn.close()
    writes: dict[str, list[tuple[str, str | None]]] = {}
    for r in rows:
        writes.setdefault(r["customer_id"], []).append((r["tool"], r["order_number"]))
    return state, writes


def provenance(settings: Settings, trials: int, concurrency: int, seed: int, tasks_dir: Path) -> dict[str, Any]:
    """What the figures were measured on: the commit, whether the tree was dirty, and the configuration."""

    def digest(paths: list[Path]) -> str:
        h = hashlib.sha256()
        for p in sorted(paths):
            h.update(p.read_bytes())
        return h.hexdigest()[:16]

    return {
        **source_state(),
        "command": f"supportflow eval agent --trials {trials} --concurrency {concurrency} --seed {seed}",
        "trials": trials,
        "concurrency": concurrency,
        "seed": seed,
        "tasks_sha256": digest(list(tasks_dir.glob("*.yaml"))),
        "phrasings_sha256": digest([PHRASINGS]),
        "settings": settings.model_dump(mode="json", exclude={"data_dir"}),
    }


def run_agent_eval(
    base: Settings,
    trials: int,
    concurrency: int,
    console: Any,
    seed: int = 0,
    tasks_dir: Path = TASKS_DIR,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """k rounds, each on a fresh embedded stack; every task once per round; scored on the backend."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from connectors.backends.commerce import TOOL_CLASSES
    from pipelines.devstack.knowledge import ingest_help_center
    from pipelines.devstack.stack import Stack

    tasks = [t for t in load_tasks(tasks_dir) if not only or t.id in only]
    if not tasks:
        raise ValueError("no tasks to run")
    facts = customer_facts({t.customer for t in tasks})
    write_tools = frozenset(cls.name for cls in TOOL_CLASSES if cls.writes)
    transcripts: list[Transcript] = []
    verdicts: list[Verdict] = []
    stray: list[str] = []
    expected: State | None = None
    must_say: dict[str, list[str]] = {}
    # read before the run: files edited while it runs must not pass for what was measured
    measured_on = provenance(base, trials, concurrency, seed, tasks_dir)
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        progress = bar.add_task("conversations", total=len(tasks) * trials)
        for trial in range(trials):
            with tempfile.TemporaryDirectory(prefix="supportflow-eval-") as tmp:
                settings = base.model_copy(update={"data_dir": Path(tmp), "http_port": 0})
                bar.update(progress, description=f"round {trial + 1}/{trials}: starting a fresh stack")
                # the help center, as `supportflow run` ingests it on a first start: off-topic and
                # informational openings meet the knowledge base a user's agent answers from
                stack = Stack(settings, with_workspace=False).start(prepare=lambda s: ingest_help_center(s.settings))
                try:
                    assert stack.ingress is not None and stack.settings.database_url is not None
                    dsn = stack.settings.database_url.get_secret_value()
                    if expected is None:
                        expected, results = asyncio.run(expected_world(dsn, tasks))
                        must_say = {t.id: [resolve_fact(f, results[t.id]) for f in t.must_say] for t in tasks}
                    bar.update(progress, description=f"round {trial + 1}/{trials}: conversations")
                    round_transcripts = asyncio.run(
                        run_round(
                            stack.ingress.url, tasks, facts, trial, seed, concurrency, lambda: bar.advance(progress)
                        )
                    )
                    time.sleep(1.0)  # the last writes commit before their answers; leave a margin all the same
                    actual, writes = asyncio.run(read_outcome(dsn))
                finally:
                    stack.stop()
            owners = {t.customer for t in tasks}
            for transcript in round_transcripts:
                task = transcript.task
                verdicts.append(
                    judge(transcript, actual, expected, must_say[task.id], writes.get(task.customer, []), write_tools)
                )
            transcripts.extend(round_transcripts)
            # a write for a customer no task has: nobody asked for it
            stray.extend(
                f"round {trial + 1}: {c} {tool} {order}"
                for c, ws in writes.items()
                if c not in owners
                for tool, order in ws
            )
    result = summarise(verdicts, transcripts, tasks, trials)
    result["wrong_actions"] += len(stray)
    result["wrong_actions_outside_tasks"] = stray
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["measured_on"] = measured_on
    return result


def render(result: dict[str, Any]) -> str:
    k = result["trials_per_task"]
    lat = result["latency_ms"]
    lines = [
        f"{result['tasks']} tasks x {k} trials = {result['conversations']} conversations "
        f"({result['turns']} turns) in {result['elapsed_s']} s",
        f"pass^1          {result['pass^1']:.1%}",
        f"pass^{k}          {result[f'pass^{k}']:.1%}",
        f"wrong actions   {result['wrong_actions']}",
        f"reply latency   p50 {lat['p50']} ms, p99 {lat['p99']} ms",
        "by group: "
        + ", ".join(
            f"{name} {g['pass^1']:.0%}/{g[f'pass^{k}']:.0%} ({g['tasks']})" for name, g in result["by_group"].items()
        ),
        f"measured on {result['measured_on']['commit'][:12]}" + (" (dirty)" if result["measured_on"]["dirty"] else ""),
    ]
    return "\n".join(lines)


__all__ = ["converse", "expected_world", "render", "run_agent_eval"]
