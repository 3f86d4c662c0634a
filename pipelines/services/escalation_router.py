"""The escalation router service: the pure router (pipelines/handover/router.py) on Kafka.

It reads hand-overs (`sf.escalations`) and the workspace's commands (`sf.workspace.commands`),
publishes every changed row to the compacted `sf.workspace.state` and customer notices to
`sf.outbound` (handbacks to `sf.messages`), and commits its input offsets only after all of
that is delivered. On start it reads `sf.workspace.state` from the beginning, so a restarted
router (stopped or killed) has the queue and the assignments as they were; the inputs it
replays are recognised by id (escalation id, command id) and change nothing, and its notices'
reply ids derive from the escalation id and the notice kind, so senders deliver each once.

Run exactly one router per cluster: it is the single writer of the table. It reads its inputs
by partition assignment (no group membership, so a restart is not held up by a rebalance) and
keeps its offsets under the consumer group `<app_id>-router`.

    python -m pipelines.services.escalation_router [--ready-file FILE]   (`supportflow workspace` embeds it)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import ValidationError

from connectors.kafka import AsyncProducer, consumer_config
from pipelines.handover import EscalationRouter, PriorityRule, RouterOptions, load_agents, load_categories
from pipelines.runtime.clients import RuntimeClients, reply_shaper_for
from pipelines.runtime.consumer_loop import ConsumerLoop
from pipelines.runtime.metrics import WORKSPACE_ASSIGNMENT_SECONDS, WORKSPACE_COMMANDS, WORKSPACE_QUEUE_DEPTH
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology, load_topology
from schemas import (
    AgentSpec,
    AgentState,
    Escalation,
    Message,
    OutboundMessage,
    QueueEntry,
    Record,
    RouterCommand,
    WorkspaceState,
    utcnow,
)

log = logging.getLogger(__name__)

__all__ = ["RouterService", "main", "read_state", "serve_router"]

BATCH = 500  # input records handled (and committed) together


def read_state(
    conf: dict[str, Any], topic: str, timeout_s: float = 60.0, settle_s: float = 0.3
) -> list[WorkspaceState]:
    """Every live row of the table topic, in topic order: read from the beginning to the end.

    A tombstone (a key with no value) removes its key. The end is the high watermark taken
    before reading, and then whatever still comes within `settle_s`: tansu reports the start of
    the last producer batch as the end, and the router's state rows are batched.
    """
    consumer = Consumer(consumer_config(conf, "supportflow-router-restore"))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        behind = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        rows: dict[str, WorkspaceState] = {}
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while behind or time.monotonic() - last < settle_s:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} to its end took more than {timeout_s:.0f}s")
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            key = (msg.key() or b"").decode("utf-8", "replace")
            value = msg.value()
            if value is None:
                rows.pop(key, None)
            else:
                try:
                    row = WorkspaceState.model_validate_json(value)
                except ValidationError as exc:
                    log.warning("router: skipping an invalid row %r in %s: %s", key, topic, exc)
                else:
                    rows.pop(key, None)  # keep topic order of the latest version
                    rows[key] = row
            if msg.offset() + 1 >= ends[msg.partition()]:
                behind.discard(msg.partition())
        return list(rows.values())
    finally:
        consumer.close()


class RouterService:
    """The router on Kafka: `await warm_up()` (restore), then `await run(stop)` until `stop` is set.

    The web layer in the same process reads it (`entry`, `visible_to`, `agent_state`, `subscribe`)
    and changes it only through the log (`submit`), so every change is ordered, replayable and
    applied once.
    """

    def __init__(
        self,
        settings: Settings,
        topology: Topology | None = None,
        agents: list[AgentSpec] | None = None,
        rule: PriorityRule | None = None,
        categories: dict[str, str] | None = None,
        options: RouterOptions | None = None,
        tick_s: float = 1.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.topology = topology or load_topology(settings.topology_file)
        if agents is None:
            agents = load_agents(settings.workspace_agents_file) if settings.workspace_agents_file else []
        self.router = EscalationRouter(
            agents,
            rule or settings.workspace_priority,
            categories if categories is not None else load_categories(),
            options
            or RouterOptions(
                human_wait_timeout_s=settings.human_wait_timeout_s,
                default_handle_time_s=settings.workspace_handle_time_s,
                queue_by_skill=settings.workspace_queue_by_skill,
            ),
            reply_shaper_for(self.topology, RuntimeClients(settings)),
        )
        self.tick_s = tick_s
        self.clock = clock
        self.group_id = f"{self.topology.spec.app_id}-router"
        self.escalations_topic = self._topic(Escalation)
        self.commands_topic = self._topic(RouterCommand)
        self.state_topic = self._topic(WorkspaceState)
        self.outbound_topic = self._topic(OutboundMessage)
        self.messages_topic = self._topic(Message)
        self.dead_letter_topic = self.topology.spec.dead_letter_topic
        self._producer: AsyncProducer | None = None
        self._state_producer: AsyncProducer | None = None
        self._subscribers: set[asyncio.Queue[WorkspaceState]] = set()
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._rows: list[WorkspaceState] = []  # the batch in hand: applied, not yet published
        self._verdicts: list[RouterCommand] = []
        self._next_tick = 0.0
        # One router instance reads every partition (assigned, no group join) and hands a batch over as
        # soon as its first record arrives; a lost async commit only replays, harmlessly (applied once).
        self._inputs = ConsumerLoop(
            "router",
            settings,
            self.topology,
            [self.escalations_topic, self.commands_topic],
            self,
            self.group_id,
            group_member=False,
            batch_size=BATCH,
            wait_s=0.05,
            fill_batches=False,
            commit_async=True,
            retry_flush=False,
            dead_letter_stage="router",
            tick=self._tick,
        )
        self.ready = asyncio.Event()
        self.records_applied = 0

    def _topic(self, record_type: type[Record]) -> str:
        topic = self.topology.topic_for(record_type)
        if topic is None:
            raise ValueError(f"the topology has no topic carrying {record_type.__name__}")
        return topic

    # ---- the web layer's side ----------------------------------------------------------

    def entry(self, escalation_id: str) -> QueueEntry | None:
        return self.router.entry(escalation_id)

    def visible_to(self, agent_id: str) -> list[QueueEntry]:
        return self.router.visible_to(agent_id)

    def agent_state(self, agent_id: str) -> AgentState | None:
        return self.router.agent_state(agent_id)

    def position(self, escalation_id: str) -> int | None:
        return self.router.position(escalation_id)

    def expected_wait_s(self, escalation_id: str) -> float | None:
        return self.router.expected_wait_s(escalation_id)

    def subscribe(self) -> asyncio.Queue[WorkspaceState]:
        """Every row this router publishes from now on (after the broker has it)."""
        queue: asyncio.Queue[WorkspaceState] = asyncio.Queue(maxsize=10_000)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[WorkspaceState]) -> None:
        self._subscribers.discard(queue)

    async def submit(self, cmd: RouterCommand) -> None:
        """Publish a command to the log; the router applies it when it reads it back."""
        producer = self._producer or self._open_producers()[0]
        await producer.send(self.commands_topic, cmd.partition_key(), cmd.to_bytes())

    async def submit_and_wait(self, cmd: RouterCommand, timeout_s: float = 10.0) -> str:
        """Publish a command and wait for the router's verdict: `applied`, `rejected: <why>` or `replayed`."""
        done = self.router.outcome(cmd.command_id)
        if done is not None:
            return done
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(cmd.command_id, []).append(future)
        await self.submit(cmd)
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            waiting = self._waiters.get(cmd.command_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(cmd.command_id, None)

    # ---- lifecycle ---------------------------------------------------------------------

    async def warm_up(self) -> None:
        """Restore the table from `sf.workspace.state`, then open the input consumer at its committed offsets."""
        conf = self.settings.kafka_client_config()
        started = time.monotonic()
        rows = await asyncio.to_thread(read_state, conf, self.state_topic)
        self.router.restore(rows)
        WORKSPACE_QUEUE_DEPTH.set(self.router.waiting_count())
        log.info(
            "router: restored %d rows (%d waiting) from %s in %.2fs",
            len(rows),
            self.router.waiting_count(),
            self.state_topic,
            time.monotonic() - started,
        )
        self._open_producers()
        await self._inputs.open()
        self.ready.set()

    def _open_producers(self) -> tuple[AsyncProducer, AsyncProducer]:
        conf = self.settings.kafka_client_config()
        if self._producer is None:
            self._producer = AsyncProducer(conf, exact_offsets=self.settings.exact_offsets)
        if self._state_producer is None:
            # rows batched (read_state copes with tansu's end offsets), one request in flight: a retried
            # row can never land after a newer row of the same key
            self._state_producer = AsyncProducer(conf, **{"max.in.flight.requests.per.connection": 1})
        return self._producer, self._state_producer

    async def run(self, stop: asyncio.Event) -> None:
        """Apply inputs and ticks until `stop`; the batch in hand is published and committed first."""
        if not self.ready.is_set():
            await self.warm_up()
        stopping = asyncio.create_task(self._stop_on(stop))
        try:
            await self._inputs.run()
        finally:
            stopping.cancel()
            await self.close()

    async def _stop_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._inputs.stop()

    async def _tick(self) -> None:
        if time.monotonic() >= self._next_tick:
            self._next_tick = time.monotonic() + self.tick_s
            await self._publish(self.router.tick(self.clock()))

    async def close(self) -> None:
        await self._inputs.aclose()
        for producer in (self._producer, self._state_producer):
            if producer is not None:
                await asyncio.get_running_loop().run_in_executor(None, producer.close)
        self._producer = self._state_producer = None

    # ---- the stream: the consumer loop's sink (add each input, flush the batch) ----------

    def add(self, topic: str, record: Record) -> None:
        """Apply one input to the router; raising (an input it cannot take) dead-letters it."""
        now = self.clock()
        if topic == self.escalations_topic:
            assert isinstance(record, Escalation)
            self._rows += self.router.on_escalation(record, now)
        else:
            assert isinstance(record, RouterCommand)
            self._rows += self.router.on_command(record, now)
            self._verdicts.append(record)
        self.records_applied += 1

    def is_data_error(self, exc: Exception) -> bool:
        """Never: a flush only publishes the router's own rows, so a failure is the broker, not an input."""
        return False

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        verdicts, self._verdicts = self._verdicts, []
        await self._publish(rows)
        for cmd in verdicts:
            outcome = self.router.outcome(cmd.command_id) or "replayed"
            WORKSPACE_COMMANDS.labels(cmd.kind, outcome.split(":", 1)[0]).inc()
            for future in self._waiters.pop(cmd.command_id, []):
                if not future.done():
                    future.set_result(outcome)

    async def _publish(self, rows: list[WorkspaceState]) -> None:
        """Rows first (they hold the notices and handbacks in their outbox), then those messages, then tombstones.

        Each group is delivered before the next starts. A crash after the rows is repaired on
        restore (the outbox is sent again, same ids); a crash before them replays the input.
        """
        producer, state_producer = self._open_producers()
        messages = self.router.drain_messages()
        tombstones = self.router.drain_tombstones()
        if rows:
            await asyncio.gather(*(state_producer.send(self.state_topic, r.key, r.to_bytes()) for r in rows))
        sends = []
        for message in messages:
            topic = self.messages_topic if isinstance(message, Message) else self.outbound_topic
            sends.append(producer.send(topic, message.partition_key(), message.to_bytes()))
        if sends:
            await asyncio.gather(*sends)
        self.router.mark_sent(messages)
        if tombstones:
            await asyncio.gather(*(state_producer.send(self.state_topic, key, None) for key in tombstones))
        for seconds in self.router.drain_latencies():
            WORKSPACE_ASSIGNMENT_SECONDS.observe(seconds)
        WORKSPACE_QUEUE_DEPTH.set(self.router.waiting_count())
        for row in rows:
            for queue in list(self._subscribers):
                try:
                    queue.put_nowait(row)
                except asyncio.QueueFull:
                    log.warning("router: a subscriber is 10,000 rows behind; dropping it")
                    self._subscribers.discard(queue)


def serve_router(settings: Settings, ready_file: Path | None) -> int:
    """The router as a process of its own: until SIGTERM/SIGINT; returns the input records applied."""
    from pipelines.services.sinks import serve_until_stopped

    async def job(stop: asyncio.Event, ready: asyncio.Event) -> int:
        service = RouterService(settings)
        await service.warm_up()
        ready.set()
        await service.run(stop)
        return service.records_applied

    return int(serve_until_stopped(settings, ready_file, job))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the escalation router (settings from SUPPORTFLOW_* variables)")
    parser.add_argument("--ready-file", type=Path, default=None, help="written once the router consumes")
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    applied = serve_router(settings, args.ready_file)
    log.info("router stopped; %d input records applied", applied)


if __name__ == "__main__":
    main()
