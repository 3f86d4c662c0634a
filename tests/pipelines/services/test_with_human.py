"""A conversation handed to a human, through the real pipeline: tansu, a worker process (the trained NLU,
the commerce backend in a real PostgreSQL) and the escalation router service. While the human has the
conversation the AI stays quiet and every message reaches the human's queue entry as a follow-up; the
agent's `resolve` makes the router hand the conversation back (a control message on sf.messages), and
the AI answers again.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from connectors.kafka import consume_all, make_reader
from operators.escalate import escalation_id_for
from operators.format import reply_id_for
from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.handover.router import handback_message_id
from pipelines.services.escalation_router import RouterService
from tests.support.conversations import ALICE
from tests.support.handover import agent, command, online
from tests.support.stream import WorkerPool, produce_messages, raw_message, settings_for


class Customer:
    """Says one message and waits for what the pipeline did with it: the AI's reply, or an escalation.

    The router's notices to the customer (also on sf.outbound) are told apart by their reply id.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.reader = make_reader({"bootstrap.servers": bootstrap}, ["sf.outbound", "sf.escalations"], True)
        self.replies: dict[str, dict[str, Any]] = {}  # the AI's, by the message they answer
        self.escalations: dict[str, dict[str, Any]] = {}  # by message id
        self.sent = 0

    def say(self, text: str) -> tuple[str, str, dict[str, Any]]:
        self.sent += 1
        message_id = f"with-human-{self.sent}"
        produce_messages(self.bootstrap, [raw_message(message_id, "webchat", "web-alice", text, customer_id=ALICE)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.read()
            if message_id in self.escalations:
                return message_id, "escalation", self.escalations[message_id]
            if message_id in self.replies:
                return message_id, "reply", self.replies[message_id]
        raise AssertionError(f"no answer to {text!r} within 60 s")

    def read(self, idle_s: float = 0.2) -> None:
        for record in consume_all(self.reader, idle_s=idle_s, max_s=0.5):
            data = json.loads(record.value or b"{}")
            if record.topic == "sf.escalations":
                self.escalations[data["message_id"]] = data
            elif data["reply_id"] == reply_id_for(data["in_reply_to"]):
                self.replies[data["in_reply_to"]] = data

    def close(self) -> None:
        self.reader.close()


async def test_with_a_human_the_ai_stays_quiet_until_the_resolve_hands_the_conversation_back(
    broker: EmbeddedBroker, workers: WorkerPool, commerce_dsn: str
) -> None:
    workers.start(DATABASE_URL=commerce_dsn)
    router = RouterService(settings_for(broker.bootstrap), agents=[agent("ann")], tick_s=0.2)
    await router.warm_up()
    halt = asyncio.Event()
    running = asyncio.create_task(router.run(halt))
    alice = Customer(broker.bootstrap)
    try:
        assert await router.submit_and_wait(online("ann")) == "applied"
        _, kind, reply = await asyncio.to_thread(alice.say, "where is my order 1000003?")
        assert kind == "reply" and "1000003" in reply["text"], "the AI answers before any hand-over"

        _, kind, first = await asyncio.to_thread(alice.say, "I want to talk to a human please")
        assert (kind, first["reason"]) == ("escalation", "customer_requested_human")
        opened = first["escalation_id"]
        await until(lambda: getattr(router.entry(opened), "agent_id", None) == "ann")

        follow_up_id, kind, follow_up = await asyncio.to_thread(alice.say, "where is my order 1000003?")
        assert (kind, follow_up["reason"]) == ("escalation", "with_human"), "the AI could answer; the human has it"
        assert follow_up["escalation_id"] == escalation_id_for(follow_up_id), "derived from its own message id"
        assert follow_up["detail"].startswith(f"follow-up of {opened}")
        assert follow_up["priority"] == first["priority"] == "normal"
        await until(lambda: [f.escalation_id for f in router.entry(opened).follow_ups] == [follow_up["escalation_id"]])  # type: ignore[union-attr]
        assert len([e for e in router.router.entries() if e.status != "resolved"]) == 1, "no second queue entry"

        resolve = command("resolve", "ann", escalation_id=opened, resolution_code="answered")
        assert await router.submit_and_wait(resolve) == "applied"

        answered_id, kind, answer = await asyncio.to_thread(alice.say, "where is my order 1000003?")
        assert kind == "reply" and "1000003" in answer["text"], "after the handback the AI answers again"
        await asyncio.to_thread(alice.read, 1.5)
        assert follow_up_id not in alice.replies, "the AI said nothing while the human had the conversation"
        assert handback_message_id(opened) not in alice.replies | alice.escalations, "nor on the handback"
        assert [e["reason"] for e in alice.escalations.values()] == ["customer_requested_human", "with_human"]
        assert len(alice.replies) == 2 and answered_id in alice.replies
    finally:
        halt.set()
        await running
        alice.close()


async def until(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
