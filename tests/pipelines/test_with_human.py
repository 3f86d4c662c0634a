"""A conversation handed to a human, through the real pipeline (tansu, a worker process, the trained NLU,
PostgreSQL for the commerce backend): while the human has it the AI stays quiet and every message
reaches the human as a follow-up; the workspace's handback gives it back to the AI, which answers again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from connectors.kafka import consume_all, make_reader
from operators.escalate import escalation_id_for
from schemas import Message
from tests.pipelines.test_agent_conversations import Conversation
from tests.support import produce


@pytest.fixture
def alice(broker, workers, commerce_dsn: str) -> Iterator[Conversation]:
    workers.start(DATABASE_URL=commerce_dsn)
    conversation = Conversation(broker.bootstrap)
    try:
        yield conversation
    finally:
        conversation.close()


def everything_on(bootstrap: str, topic: str) -> list[dict]:
    reader = make_reader({"bootstrap.servers": bootstrap}, [topic], from_beginning=True)
    try:
        return [json.loads(r.value or b"{}") for r in consume_all(reader, idle_s=1.5, max_s=10.0)]
    finally:
        reader.close()


def test_with_a_human_the_ai_stays_quiet_until_the_workspace_hands_the_conversation_back(alice, broker):
    assert "1000003" in alice.reply("where is my order 1000003?"), "the AI answers before any hand-over"

    kind, first = alice.say("I want to talk to a human please")
    assert (kind, first["reason"]) == ("escalation", "customer_requested_human")

    kind, follow_up = alice.say("where is my order 1000003?")  # the AI could answer this, but a human has it
    follow_up_id = alice.last_message_id
    assert (kind, follow_up["reason"]) == ("escalation", "with_human")
    assert follow_up["escalation_id"] == escalation_id_for(follow_up_id), "derived from its own message id"
    assert follow_up["detail"].startswith(f"follow-up of {first['escalation_id']}")
    assert follow_up["priority"] == first["priority"] == "normal"

    # what the RouterService produces on a `resolve` command
    handback = Message(
        message_id=f"handback-{first['escalation_id']}",
        conversation_id=first["conversation_id"],
        customer_id=first["customer_id"],
        channel=first["channel"],
        sender=first["recipient"],
        text="",
        received_at=follow_up["created_at"],
        control="handback",
    )
    produce(broker.bootstrap, "sf.messages", [(handback.customer_id, handback.to_bytes())])

    answer = alice.reply("where is my order 1000003?")
    assert "1000003" in answer, "after the handback the AI answers again"

    replies = everything_on(broker.bootstrap, "sf.outbound")
    escalations = everything_on(broker.bootstrap, "sf.escalations")
    assert not [r for r in replies if r["in_reply_to"] in (follow_up_id, handback.message_id)], (
        "the AI said nothing while the human had the conversation, nor on the handback"
    )
    assert [e["reason"] for e in escalations] == ["customer_requested_human", "with_human"]
    assert len(replies) == 2
