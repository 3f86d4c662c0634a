"""`supportflow eval agent`: scripted conversations through the embedded stack, scored on the backend.

Each conversation is built from a Bitext intent and the seeded shop: a customer with an order in
the right status, the intent's opening message (Bitext's own held-out utterances for intents
answered from templates; everyday openings with a real order number for the playbook intents),
and a simulated customer who answers the agent's questions the way a customer would (the order
number, the ZIP code or email on the account, "yes" — or "no" where the script says so). The
stack is the one `supportflow run` starts, in a fresh data folder, so the shop is freshly seeded.

Scoring reads the backend, not the reply text alone:
- resolved: no human was needed, the final reply is the right kind (the order's status, the
  refusal, the intent's template) and the backend holds exactly the writes the script expects;
- correct escalation: the script expects a human (asked for one, refund above the limit) and
  the turn was escalated;
- wrong action: any write in `commerce.action_log` the scripts did not ask for (must be 0).
Latency is per turn, from the POST to the answer (reply or escalation) through the HTTP ingress.
"""

from __future__ import annotations

import asyncio
import csv
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from pipelines.runtime.settings import PROJECT_DIR, Settings

TEST_SPLIT = PROJECT_DIR / "triton_models" / "intent_classifier" / "1" / "test_split.csv"
REPLIES = PROJECT_DIR / "operators" / "data" / "replies.yaml"
PLAYBOOK_INTENTS = {"track_order", "cancel_order", "get_refund", "track_refund"}
NO_TEMPLATE_CHECK = {"contact_human_agent", "contact_customer_service"}


@dataclass
class Script:
    """One conversation: who, the opening line, how the simulated customer answers, what must happen."""

    kind: str
    intent: str
    customer: str
    opening: str
    order: str | None = None
    zip_code: str = ""
    amount: str = "20 EUR"
    answer_yes: bool = True
    expect: str = "resolved"  # or "escalated"
    expect_writes: list[tuple[str, str]] = field(default_factory=list)  # (tool, order_number)
    expect_text: str = ""  # a phrase the final reply must contain


@dataclass
class Outcome:
    script: Script
    turns: list[tuple[str, str, str]] = field(default_factory=list)  # (said, kind, answer)
    latencies_ms: list[float] = field(default_factory=list)
    escalated: bool = False
    reason: str = ""


def _template_starts() -> dict[str, list[str]]:
    data = yaml.safe_load(REPLIES.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for intent, entry in data.items():
        variants = [entry["default"], *(entry.get("with") or {}).values()]
        out[intent] = [v.split("{")[0][:40] for v in variants]
    return out


def held_out_utterances() -> dict[str, list[str]]:
    by_intent: dict[str, list[str]] = {}
    with TEST_SPLIT.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent.setdefault(row["label"], []).append(row["text"])
    return by_intent


async def shop_facts(dsn: str) -> dict[str, list[dict[str, Any]]]:
    """Orders by status with their owner's ZIP, from the seeded backend (generated customers only)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT o.order_number, o.status, o.currency, o.customer_id, c.zip, "
            "COALESCE((SELECT sum(amount) FROM commerce.payments p WHERE p.order_number = o.order_number "
            "AND p.status = 'captured'), 0) AS captured "
            "FROM commerce.orders o JOIN commerce.customers c USING (customer_id) "
            "WHERE o.customer_id > 'C000002' ORDER BY o.order_number"
        )
    finally:
        await conn.close()
    facts: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        facts.setdefault(row["status"], []).append(dict(row))
    return facts


def build_scripts(n: int, facts: dict[str, list[dict[str, Any]]], seed: int = 11) -> list[Script]:
    """About 45% playbook tasks, 40% template intents, 15% expected hand-overs; one customer per conversation."""
    rng = random.Random(seed)
    utterances = held_out_utterances()
    used: set[str] = set()

    def pick(status: str, **where: Any) -> dict[str, Any]:
        pool = [
            o
            for o in facts.get(status, [])
            if o["customer_id"] not in used and all(o[k] == v for k, v in where.items())
        ]
        order = rng.choice(pool)
        used.add(order["customer_id"])
        return order

    scripts: list[Script] = []
    template_intents = sorted(i for i in utterances if i not in PLAYBOOK_INTENTS | {"contact_human_agent"})
    plan = (
        ["track"] * 14
        + ["cancel_ok"] * 8
        + ["cancel_shipped"] * 4
        + ["cancel_declined"] * 4
        + ["refund_ok"] * 8
        + ["refund_large"] * 4
        + ["track_refund"] * 3
        + ["human"] * 7
        + ["template"] * 44
        + ["someone_else"] * 4
    )
    for i in range(n):
        kind = plan[i % len(plan)]
        if kind == "template":
            intent = template_intents[i % len(template_intents)]
            o = pick(rng.choice(["delivered", "shipped", "pending"]))
            text = rng.choice(utterances[intent])
            scripts.append(Script(kind, intent, o["customer_id"], text, zip_code=o["zip"]))
        elif kind == "human":
            o = pick("delivered")
            text = rng.choice(utterances["contact_human_agent"])
            scripts.append(Script(kind, "contact_human_agent", o["customer_id"], text, expect="escalated"))
        elif kind == "track":
            o = pick(rng.choice(["shipped", "processing", "delivered", "pending"]))
            opening = rng.choice(
                [
                    "where is my order {n}?",
                    "what's the status of order {n}",
                    "track order {n}",
                    "has my order {n} shipped yet?",
                    "where is my order?",
                ]
            ).format(n=o["order_number"])
            scripts.append(
                Script(
                    kind,
                    "track_order",
                    o["customer_id"],
                    opening,
                    o["order_number"],
                    o["zip"],
                    expect_text=f"is {o['status']}",
                )
            )
        elif kind in ("cancel_ok", "cancel_declined"):
            o = pick(rng.choice(["pending", "processing"]))
            opening = rng.choice(
                [
                    "I want to cancel order {n}",
                    "please cancel my order {n}",
                    "cancel order {n} please",
                    "I need to cancel my order",
                ]
            ).format(n=o["order_number"])
            ok = kind == "cancel_ok"
            scripts.append(
                Script(
                    kind,
                    "cancel_order",
                    o["customer_id"],
                    opening,
                    o["order_number"],
                    o["zip"],
                    answer_yes=ok,
                    expect_writes=[("orders.cancel_order", o["order_number"])] if ok else [],
                    expect_text="is cancelled" if ok else "stays",
                )
            )
        elif kind == "cancel_shipped":
            o = pick(rng.choice(["shipped", "delivered"]))
            opening = f"I want to cancel order {o['order_number']}"
            scripts.append(
                Script(
                    kind, "cancel_order", o["customer_id"], opening, o["order_number"], o["zip"], expect_text="can't"
                )
            )
        elif kind in ("refund_ok", "refund_large"):
            o = pick("delivered")
            amount = "5" if kind == "refund_ok" else "450"
            currency = o["currency"]
            opening = rng.choice(
                [
                    "I'd like a refund of {a} {c} for order {n}",
                    "please refund {a} {c} on order {n}",
                    "can I get {a} {c} back for order {n}?",
                ]
            ).format(a=amount, c=currency, n=o["order_number"])
            ok = kind == "refund_ok"
            scripts.append(
                Script(
                    kind,
                    "get_refund",
                    o["customer_id"],
                    opening,
                    o["order_number"],
                    o["zip"],
                    amount=f"{amount} {currency}",
                    expect="resolved" if ok else "escalated",
                    expect_writes=[("payments.refund", o["order_number"])] if ok else [],
                    expect_text="on its way" if ok else "",
                )
            )
        elif kind == "track_refund":
            o = pick("delivered")
            opening = f"where is my refund for order {o['order_number']}?"
            scripts.append(
                Script(
                    kind,
                    "track_refund",
                    o["customer_id"],
                    opening,
                    o["order_number"],
                    o["zip"],
                    expect_text="has been refunded for order",
                )
            )
        elif kind == "someone_else":
            mine, theirs = pick("delivered"), pick("shipped")
            opening = f"where is my order {theirs['order_number']}?"
            scripts.append(
                Script(
                    kind,
                    "track_order",
                    mine["customer_id"],
                    opening,
                    theirs["order_number"],
                    mine["zip"],
                    expect_text="couldn't verify",
                )
            )
    return scripts


def next_answer(script: Script, agent_said: str) -> str | None:
    """What the simulated customer says to the agent's question, or None when there is nothing to add."""
    text = agent_said.lower()
    if "email address or the zip code" in text:
        return script.zip_code
    if "order number" in text and script.order:
        return f"it's {script.order}"
    if "how much" in text or "which currency" in text:
        return script.amount
    if "yes or no" in text:
        return "yes" if script.answer_yes else "no"
    return None


async def converse(client: httpx.AsyncClient, script: Script, max_turns: int = 6) -> Outcome:
    outcome = Outcome(script)
    said: str | None = script.opening
    while said is not None and len(outcome.turns) < max_turns:
        started = time.perf_counter()
        posted = await client.post(
            "/v1/messages",
            json={
                "channel": "webchat",
                "sender": f"web-{script.customer}",
                "customer_id": script.customer,
                "text": said,
            },
        )
        posted.raise_for_status()
        message_id = posted.json()["message_id"]
        answer = (await client.get(f"/v1/messages/{message_id}", params={"wait": 30})).json()
        outcome.latencies_ms.append((time.perf_counter() - started) * 1000)
        body = answer.get("answer") or {}
        if answer["status"] == "escalated":
            outcome.turns.append((said, "escalation", body.get("reason", "")))
            outcome.escalated, outcome.reason = True, body.get("reason", "")
            break
        reply = body.get("text", "")
        outcome.turns.append((said, answer["status"], reply))
        said = next_answer(script, reply)
    return outcome


def score(outcomes: list[Outcome], writes: list[tuple[str, str]]) -> dict[str, Any]:
    """Resolution, escalation and wrong actions, from the transcripts and the backend's action log."""
    starts = _template_starts()
    expected_writes = {w for o in outcomes for w in o.script.expect_writes}
    wrong = [w for w in writes if w not in expected_writes]
    done = set(writes)
    rows = []
    for o in outcomes:
        s = o.script
        final = o.turns[-1][2] if o.turns else ""
        writes_ok = all(w in done for w in s.expect_writes)
        if s.expect == "escalated":
            ok = o.escalated
        elif o.escalated:
            ok = False
        elif s.kind == "template":
            ok = s.intent in NO_TEMPLATE_CHECK or any(final.startswith(p) for p in starts.get(s.intent, []))
        else:
            ok = writes_ok and s.expect_text in final
        rows.append(
            {
                "kind": s.kind,
                "intent": s.intent,
                "expect": s.expect,
                "ok": ok,
                "escalated": o.escalated,
                "reason": o.reason,
                "turns": o.turns,
            }
        )
    latencies = sorted(ms for o in outcomes for ms in o.latencies_ms)
    expected_human = [r for r in rows if r["expect"] == "escalated"]
    by_kind: dict[str, dict[str, int]] = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], {"conversations": 0, "correct": 0})
        k["conversations"] += 1
        k["correct"] += int(r["ok"])
    return {
        "conversations": len(rows),
        "turns": len(latencies),
        "resolved_autonomously": sum(r["ok"] and r["expect"] == "resolved" for r in rows),
        "autonomous_resolution_rate": sum(r["ok"] and r["expect"] == "resolved" for r in rows) / max(1, len(rows)),
        "expected_escalations": len(expected_human),
        "correct_escalation_rate": sum(r["ok"] for r in expected_human) / max(1, len(expected_human)),
        "unneeded_escalations": sum(r["escalated"] and r["expect"] == "resolved" for r in rows),
        "wrong_actions": len(wrong),
        "wrong_action_list": [list(w) for w in wrong],
        "latency_ms": {
            "p50": round(statistics.median(latencies), 1) if latencies else None,
            "p99": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1) if latencies else None,
        },
        "by_kind": by_kind,
        "failures": [r for r in rows if not r["ok"]][:40],
    }


async def _backend_writes(dsn: str) -> list[tuple[str, str]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tool, arguments->>'order_number' AS order_number FROM commerce.action_log")
    finally:
        await conn.close()
    return [(r["tool"], r["order_number"]) for r in rows]


async def run_scripts(base_url: str, scripts: list[Script], concurrency: int, progress: Any = None) -> list[Outcome]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one(script: Script) -> Outcome:
            async with limit:
                outcome = await converse(client, script)
            if progress is not None:
                progress()
            return outcome

        return list(await asyncio.gather(*(one(s) for s in scripts)))


def run_agent_eval(base: Settings, conversations: int, concurrency: int, console: Any) -> dict[str, Any]:
    """Start a fresh embedded stack, run the scripts through its HTTP ingress, score them on the backend."""
    from rich.progress import Progress

    from pipelines.devstack.stack import Stack

    with tempfile.TemporaryDirectory(prefix="supportflow-eval-") as tmp:
        settings = base.model_copy(update={"data_dir": Path(tmp), "http_port": 0})
        with console.status("starting a fresh embedded stack (broker, Triton, PostgreSQL with the demo shop)…"):
            stack = Stack(settings, with_workspace=False).start()
        try:
            assert stack.ingress is not None and stack.settings.database_url is not None
            dsn = stack.settings.database_url.get_secret_value()
            scripts = build_scripts(conversations, asyncio.run(shop_facts(dsn)))
            with Progress(console=console) as bar:
                task = bar.add_task("conversations", total=len(scripts))
                started = time.perf_counter()
                outcomes = asyncio.run(run_scripts(stack.ingress.url, scripts, concurrency, lambda: bar.advance(task)))
                elapsed = time.perf_counter() - started
            time.sleep(1.0)  # the last writes' transactions are committed before the answers; be generous
            writes = asyncio.run(_backend_writes(dsn))
        finally:
            stack.stop()
    result = score(outcomes, writes)
    result["elapsed_s"] = round(elapsed, 1)
    result["concurrency"] = concurrency
    return result


def render(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    lines = [
        f"conversations {result['conversations']} ({result['turns']} turns) in {result['elapsed_s']} s",
        f"resolved autonomously  {result['resolved_autonomously']} ({result['autonomous_resolution_rate']:.1%})",
        f"correct escalations    {result['correct_escalation_rate']:.1%} of {result['expected_escalations']} expected",
        f"unneeded escalations   {result['unneeded_escalations']}",
        f"wrong actions          {result['wrong_actions']}",
        f"reply latency          p50 {lat['p50']} ms, p99 {lat['p99']} ms",
        "by kind: "
        + ", ".join(f"{k} {v['correct']}/{v['conversations']}" for k, v in sorted(result["by_kind"].items())),
    ]
    return "\n".join(lines)


__all__ = ["Script", "build_scripts", "render", "run_agent_eval", "score"]
