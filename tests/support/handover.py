"""Builders for the router's tests and benchmark: escalations, agents and commands."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from pipelines.handover.auth import hash_password
from schemas import AgentSpec, CustomerProfile, Escalation, NluResult, RouterCommand, Sentiment

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
_commands = itertools.count(1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def escalation(
    escalation_id: str,
    conversation: str | None = None,
    intent: str = "get_refund",
    tier: str = "standard",
    priority: str = "normal",
    language: str = "en",
    created: datetime = T0,
    text: str = "I want a person",
) -> Escalation:
    conversation = conversation or f"conv-{escalation_id}"
    customer = conversation.removeprefix("conv-")
    return Escalation(
        escalation_id=escalation_id,
        message_id=f"m-{escalation_id}",
        conversation_id=conversation,
        customer_id=customer,
        session_id=f"{customer}-s1",
        channel="webchat",
        recipient=f"web-{customer}",
        text=text,
        reason="customer_requested_human",
        priority=priority,  # type: ignore[arg-type]
        nlu=NluResult(
            intent=intent, confidence=0.5, sentiment=Sentiment(label="neutral", score=0.0), model_used="test"
        ),
        sentiment_trend=[0.0, -0.3],
        language=language,
        profile=CustomerProfile(customer_id=customer, vip_tier=tier, language=language),  # type: ignore[arg-type]
        created_at=created,
    )


def agent(
    agent_id: str,
    skills: list[str] | None = None,
    languages: list[str] | None = None,
    capacity: int = 2,
    queues: list[str] | None = None,
    role: str = "agent",
) -> AgentSpec:
    return AgentSpec(
        agent_id=agent_id,
        display_name=agent_id.capitalize(),
        role=role,  # type: ignore[arg-type]
        skills=skills or ["*"],
        languages=languages or ["en"],
        capacity=capacity,
        queues=queues or ["general"],
        password_hash="scrypt$test",
    )


def command(kind: str, agent_id: str, command_id: str | None = None, **fields: object) -> RouterCommand:
    return RouterCommand(
        command_id=command_id or f"cmd-{next(_commands)}",
        kind=kind,  # type: ignore[arg-type]
        agent_id=agent_id,
        **fields,  # type: ignore[arg-type]
    )


def online(agent_id: str, command_id: str | None = None) -> RouterCommand:
    return command("presence", agent_id, command_id, presence="online")


WORKSPACE_PASSWORDS = {"ana": "ana-password-1", "ben": "ben-password-2", "sam": "sam-password-3"}
"""The demo team the workspace tests sign in as: ana and ben are agents, sam a supervisor."""


def workspace_agents_file(path: Path, agent_ids: Iterable[str] = ("ana", "ben", "sam")) -> Path:
    """An agents file (`SUPPORTFLOW_WORKSPACE_AGENTS_FILE`) of those of the demo team named, with hashed passwords."""
    agents = []
    for agent_id in agent_ids:
        agent: dict[str, object] = {"agent_id": agent_id, "display_name": agent_id.title(), "capacity": 1}
        if agent_id == "sam":
            agent["role"] = "supervisor"
        agent["queues"] = ["general"]
        agent["password_hash"] = hash_password(WORKSPACE_PASSWORDS[agent_id])
        agents.append(agent)
    path.write_text(yaml.safe_dump({"agents": agents}))
    return path
