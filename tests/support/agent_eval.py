"""Fixtures of the agent evaluation's tests: a task on Alice's pending order and scripted transcripts."""

from __future__ import annotations

from pipelines.evaluation.agent_customer import Request, Task
from pipelines.evaluation.agent_scoring import Transcript

CANCEL_ALICE = Task(
    id="cancel-alice",
    customer="C000001",
    requests=(Request(intent="cancel_order", order="1000001", confirm="yes"),),
    calls=(
        {"tool": "orders.get_order", "arguments": {"order_number": "1000001"}},
        {
            "tool": "orders.cancel_order",
            "arguments": {"order_number": "1000001", "reason": "customer request via support"},
        },
    ),
    must_say=("cancelled",),
    source="cancel_order",
)

HUMAN_ALICE = Task(
    id="human-alice",
    customer="C000001",
    requests=(Request(intent="human"),),
    calls=(),
    escalation=("customer_requested_human",),
    source="escalation",
)


def transcript(task: Task, *replies: str, escalation: str | None = None) -> Transcript:
    """A conversation that went the way the replies say, ending in an escalation if one is named."""
    t = Transcript(task, trial=0)
    for text in replies:
        t.turns.append({"said": "…", "kind": "reply", "text": text})
    if escalation is not None:
        t.turns.append({"said": "…", "kind": "escalation", "text": escalation})
        t.escalated, t.reason = True, escalation
    return t
