"""The webhook deliverer: POSTs the events on `sf.webhooks` to the tenant's subscribers, at least once.

It runs in the senders' process (`supportflow senders`, which `supportflow run` starts) when
`Settings.webhooks` is set. It is a ConsumerLoop sink (consumer group `supportflow-webhooks`): a
batch's offsets are committed only once every event in it reached every subscriber that wants
it, or was dead-lettered (refused for good, or still failing when the retry window closed). A
deliverer stopped or killed while it retries commits nothing, so after the restart the events are
delivered again, with the same delivery id; receivers dedupe on it.

Within a batch one customer's events go out in order, different customers' concurrently. A
receiver that keeps failing holds back the events behind it for at most the retry window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.backends.webhooks import KafkaDeadLetterSink, WebhookDispatcher
from pipelines.runtime.consumer_loop import ConsumerLoop, TopicWriterSink
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from schemas import Record, WebhookEvent

log = logging.getLogger(__name__)

__all__ = ["GROUP_ID", "WebhookDelivery", "run_webhooks"]

GROUP_ID = "supportflow-webhooks"


@dataclass
class WebhookDelivery:
    """The ConsumerLoop writer of the deliverer: each event of a batch to each of its subscribers, once."""

    dispatcher: WebhookDispatcher
    delivered: int = 0
    dead_lettered: int = 0
    # (delivery id, url) finished in the batch in hand: a retried flush skips them, and so does a
    # duplicate of the event in the same batch (a replayed turn recorded it twice)
    _done: set[tuple[str, str]] = field(default_factory=set)

    async def write(self, topic: str, records: Sequence[Record]) -> int:
        lanes: dict[str, list[WebhookEvent]] = {}
        for record in records:
            assert isinstance(record, WebhookEvent)
            lanes.setdefault(record.customer_id, []).append(record)
        results = await asyncio.gather(*(self._lane(lane) for lane in lanes.values()), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]  # not done: ConsumerLoop commits nothing and retries (or stops)
        self._done.clear()
        return len(records)

    async def _lane(self, events: list[WebhookEvent]) -> None:
        for event in events:  # one customer's events in order: a later one waits for the earlier
            targets = [
                s for s in self.dispatcher.targets(event.event_type) if (event.delivery_id, s.url) not in self._done
            ]
            outcomes = await asyncio.gather(
                *(self.dispatcher.deliver(s, event) for s in targets), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    continue
                self._done.add((event.delivery_id, outcome.url))
                if outcome.delivered:
                    self.delivered += 1
                else:
                    self.dead_lettered += 1
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                raise failures[0]


async def run_webhooks(
    settings: Settings,
    topology: Topology,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    group_id: str = GROUP_ID,
) -> int:
    """Consume sf.webhooks and deliver until `stop` is set; returns the deliveries made."""
    topic = topology.topic_for(WebhookEvent)
    assert topic is not None, "the topology has no topic for WebhookEvent"
    dead_letters = KafkaDeadLetterSink(
        settings.kafka_client_config(), topology.spec.dead_letter_topic, exact_offsets=settings.exact_offsets
    )
    stopping = asyncio.Event()
    dispatcher = WebhookDispatcher(
        settings.webhooks,
        dead_letters,
        retry_window_s=settings.webhook_retry_window_s,
        base_delay_s=settings.webhook_retry_initial_s,
        stopping=stopping,
    )
    delivery = WebhookDelivery(dispatcher)
    sink = TopicWriterSink("webhooks", delivery.write)
    runner = ConsumerLoop("webhooks", settings, topology, [topic], sink, group_id, fill_batches=False)
    log.info("webhooks running on %s: %s", topic, ", ".join(s.url for s in settings.webhooks))
    task = asyncio.create_task(runner.run(ready), name="webhooks")
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopped, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        runner.stop()
        stopping.set()  # a delivery still retrying ends unfinished: its offset stays uncommitted
        try:
            await task  # a runner that failed raises here
        finally:
            await dispatcher.aclose()
            await dead_letters.close()
    return delivery.delivered
