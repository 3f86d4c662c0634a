"""Outcome scoring for `supportflow eval agent`, as τ-bench does it.

After a round of conversations, the backend's state is compared with the state the expected tool
calls produce when replayed on a fresh copy of the same seed: orders, their lines, payments,
refunds, returns, cases, notes and addresses, customer by customer, with the columns that differ
between any two honest runs left out (timestamps, generated ids, idempotency keys). A task passes
when its customer's state is exactly the expected one, the conversation escalated if and only if
one was expected and then with an expected reason, the replies carry the facts asked for, and no
write outside the expected calls happened. pass^k is τ-bench's: per task C(c, k) / C(n, k) over n
trials with c passes, averaged over tasks.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from math import comb
from typing import Any

import asyncpg

from connectors.protocols import ToolCall, ToolError
from pipelines.evaluation.agent_customer import Task

# An exchange's replacement order takes its number from a sequence, so it depends on which of a
# round's concurrent exchanges came first: it is compared by the order it replaces instead.
_ORDER_KEY = "coalesce('replaces ' || x.order_number, o.order_number)"
_REPLACED = " LEFT JOIN commerce.returns x ON x.replacement_order = o.order_number"

# (table, SQL giving customer_id first, then the compared columns); ids, timestamps and keys left out
STATE_QUERIES: tuple[tuple[str, str], ...] = (
    (
        "orders",
        f"SELECT o.customer_id, {_ORDER_KEY}, o.status, o.currency, o.total::text, o.shipping_address::text "
        f"FROM commerce.orders o{_REPLACED}",
    ),
    (
        "order_items",
        f"SELECT o.customer_id, {_ORDER_KEY}, i.sku, i.qty, i.unit_price::text "
        f"FROM commerce.order_items i JOIN commerce.orders o USING (order_number){_REPLACED}",
    ),
    (
        "payments",
        "SELECT o.customer_id, p.order_number, p.amount::text, p.status "
        "FROM commerce.payments p JOIN commerce.orders o USING (order_number)",
    ),
    (
        "refunds",
        # a return's refund names the return, whose id comes from a sequence (see the replacement orders)
        "SELECT o.customer_id, r.order_number, r.amount::text, r.status, "
        "regexp_replace(r.reason, '^return RT-[0-9]+', 'return'), r.items::text "
        "FROM commerce.refunds r JOIN commerce.orders o USING (order_number)",
    ),
    (
        "returns",
        "SELECT o.customer_id, r.order_number, r.kind, r.items::text, r.reason, r.status "
        "FROM commerce.returns r JOIN commerce.orders o USING (order_number)",
    ),
    ("cases", "SELECT customer_id, subject, description, priority, status FROM commerce.cases"),
    ("notes", "SELECT customer_id, text FROM commerce.notes"),
    ("addresses", "SELECT customer_id, kind, lines::text, city, zip, country, is_default FROM commerce.addresses"),
)

State = dict[str, list[str]]  # customer_id -> sorted rows, each "table|col|col…"


async def snapshot(conn: asyncpg.Connection) -> State:
    """The compared rows of every table, grouped by the customer they belong to."""
    state: dict[str, list[str]] = defaultdict(list)
    for table, sql in STATE_QUERIES:
        for row in await conn.fetch(sql):
            values = list(row.values())
            state[values[0]].append(table + "|" + "|".join("" if v is None else str(v) for v in values[1:]))
    return {customer: sorted(rows) for customer, rows in state.items()}


def state_diff(actual: State, expected: State, customer: str) -> list[str]:
    """Rows only one side has, for one customer ('+' the agent's extra, '-' the expected it lacks)."""
    a, e = set(actual.get(customer, [])), set(expected.get(customer, []))
    return [f"+ {r}" for r in sorted(a - e)] + [f"- {r}" for r in sorted(e - a)]


async def replay_expected(pool: asyncpg.Pool, tasks: list[Task]) -> dict[str, dict[str, Any]]:
    """Run every task's expected calls through the real tools; each call's result (or error) by task and tool.

    A refused call (a cancellation of a shipped order) is part of the expectation: it changes nothing.
    """
    from connectors.backends.commerce import commerce_tools

    tools = commerce_tools(pool)
    results: dict[str, dict[str, Any]] = {}
    for task in tasks:
        results[task.id] = {}
        for n, call in enumerate(task.calls):
            tool = tools[call["tool"]]
            try:
                result: Any = await tool.call(
                    ToolCall(call["tool"], dict(call["arguments"]), task.customer, f"eval:{task.id}:{n}")
                )
            except ToolError as exc:
                result = {"error": exc.kind, "message": exc.message}
            results[task.id][call["tool"]] = result
    return results


_REF = re.compile(r"\{([a-z_]+\.[a-z_]+)((?:\.[a-z_]+)*)\}")


def resolve_fact(template: str, results: dict[str, Any]) -> str:
    """A must-say fact with `{tool.path}` references filled from the replay's results."""

    def one(match: re.Match[str]) -> str:
        value: Any = results[match.group(1)]
        for part in filter(None, match.group(2).split(".")):
            value = value[part]
        return str(value)

    try:
        return _REF.sub(one, template)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"fact {template!r} does not resolve against the replay: {exc}") from None


@dataclass
class Transcript:
    """One trial of one task as it happened."""

    task: Task
    trial: int
    turns: list[dict[str, str]] = field(default_factory=list)  # said, kind, text
    latencies_ms: list[float] = field(default_factory=list)
    escalated: bool = False
    reason: str = ""
    error: str = ""


@dataclass
class Verdict:
    task_id: str
    trial: int
    passed: bool
    problems: list[str]
    wrong_actions: list[str]


def expected_writes(task: Task) -> set[tuple[str, str | None]]:
    return {(c["tool"], c["arguments"].get("order_number")) for c in task.calls}


def judge(
    transcript: Transcript,
    actual: State,
    expected: State,
    facts: list[str],
    writes: list[tuple[str, str | None]],
    write_tools: frozenset[str],
) -> Verdict:
    """Pass or fail one trial, with every reason it failed."""
    task = transcript.task
    problems: list[str] = []
    if transcript.error:
        problems.append(f"error: {transcript.error}")
    diff = state_diff(actual, expected, task.customer)
    if diff:
        problems.append("backend state differs: " + "; ".join(diff[:6]))
    if task.escalation:
        if not transcript.escalated:
            problems.append(f"expected an escalation ({'/'.join(task.escalation)}), got none")
        elif transcript.reason not in task.escalation:
            problems.append(f"escalated for {transcript.reason!r}, expected {'/'.join(task.escalation)}")
    elif transcript.escalated:
        problems.append(f"escalated for {transcript.reason!r}, none expected")
    said = " ".join(t["text"] for t in transcript.turns if t["kind"] == "reply").lower()
    for fact in facts:
        if fact.lower() not in said:
            problems.append(f"replies lack {fact!r}")
    for fact in task.must_not_say:
        if fact.lower() in said:
            problems.append(f"replies reveal {fact!r}")
    allowed = {w for w in expected_writes(task) if w[0] in write_tools}
    wrong = [f"{tool} {order}" for tool, order in writes if (tool, order) not in allowed]
    if wrong:
        problems.append("wrong actions: " + ", ".join(wrong))
    return Verdict(task.id, transcript.trial, not problems, problems, wrong)


def pass_hat_k(successes: dict[str, list[bool]], k: int) -> float:
    """τ-bench's pass^k: per task C(c, k) / C(n, k), averaged over tasks (n trials, c passes)."""
    if not successes:
        return 0.0
    values = []
    for trials in successes.values():
        n, c = len(trials), sum(trials)
        if n < k:
            raise ValueError(f"pass^{k} needs at least {k} trials per task, a task has {n}")
        values.append(comb(c, k) / comb(n, k))
    return sum(values) / len(values)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def summarise(verdicts: list[Verdict], transcripts: list[Transcript], tasks: list[Task], k: int) -> dict[str, Any]:
    """The figures: pass^1, pass^k, wrong actions, latency, per group of tasks, and the failures."""
    by_task: dict[str, list[bool]] = defaultdict(list)
    for v in verdicts:
        by_task[v.task_id].append(v.passed)
    group = {t.id: t.playbook for t in tasks}
    groups: dict[str, dict[str, list[bool]]] = defaultdict(dict)
    for task_id, trials in by_task.items():
        groups[group[task_id]][task_id] = trials
    latencies = [ms for t in transcripts for ms in t.latencies_ms]
    transcript_of = {(t.task.id, t.trial): t for t in transcripts}
    return {
        "tasks": len(by_task),
        "trials_per_task": k,
        "conversations": len(verdicts),
        "turns": len(latencies),
        "pass^1": round(pass_hat_k(by_task, 1), 4),
        f"pass^{k}": round(pass_hat_k(by_task, k), 4),
        "wrong_actions": sum(len(v.wrong_actions) for v in verdicts),
        "latency_ms": {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)},
        "by_group": {
            name: {
                "tasks": len(members),
                "pass^1": round(pass_hat_k(members, 1), 4),
                f"pass^{k}": round(pass_hat_k(members, k), 4),
            }
            for name, members in sorted(groups.items())
        },
        "by_task": {task_id: sum(trials) for task_id, trials in sorted(by_task.items())},
        "failures": [
            {
                "task": v.task_id,
                "trial": v.trial,
                "problems": v.problems,
                "turns": transcript_of[(v.task_id, v.trial)].turns,
            }
            for v in verdicts
            if not v.passed
        ],
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


__all__ = [
    "State",
    "Transcript",
    "Verdict",
    "judge",
    "pass_hat_k",
    "replay_expected",
    "resolve_fact",
    "snapshot",
    "state_diff",
    "summarise",
]
