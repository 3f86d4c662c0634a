"""Kafka clients (confluent-kafka): topic administration, producers and reply readers.

Producers use the murmur2 partitioner, the one Java clients and aiokafka (inside faust) use,
so a record keyed here lands in the partition whose faust table holds that key's state.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient, NewTopic

from schemas import DeadLetter

log = logging.getLogger(__name__)

__all__ = [
    "AsyncProducer",
    "BackgroundReader",
    "DeliveryRejected",
    "KafkaRecord",
    "TopicPlan",
    "consume_all",
    "consumer_config",
    "create_topics",
    "dead_letter_of",
    "make_producer",
    "make_reader",
    "wait_for_broker",
]


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] | None = None


def dead_letter_of(message: KafkaMessage, stage: str, exc: Exception, operator: str = "decode") -> DeadLetter:
    """A consumed record no one could read, kept whole with the reason; its id is its place in the log,
    so dead-lettering it again after a replay is the same letter."""
    value = message.value() or b""
    key = message.key()
    place = f"{message.topic()}:{message.partition()}:{message.offset()}"
    return DeadLetter(
        dead_letter_id="d-" + hashlib.sha256(place.encode()).hexdigest()[:24],
        stage=stage,
        operator=operator,
        error_type=type(exc).__name__,
        error=str(exc)[:2000],
        source_topic=message.topic() or "",
        partition=message.partition(),
        offset=message.offset(),
        key=key.decode("utf-8", "replace") if key else None,
        original=value.decode("utf-8", "replace"),
        original_b64=base64.b64encode(value).decode(),
    )


def wait_for_broker(conf: dict[str, Any], timeout_s: float = 30.0) -> None:
    """Block until the cluster answers a metadata request, or raise with the last error."""
    admin = AdminClient({**conf, "logger": log})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"Kafka at {conf.get('bootstrap.servers')} did not answer within {timeout_s:.0f}s: {last}")


def create_topics(conf: dict[str, Any], topics: Iterable[TopicPlan], timeout_s: float = 30.0) -> list[str]:
    """Create missing topics with their partition counts; report existing ones with other counts.

    Brokers may auto-create an unknown topic with a default partition count on first use, which
    would silently break co-partitioning with the state tables; so topics are made up front.
    """
    admin = AdminClient({**conf, "logger": log})
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = list(topics)
    created: list[str] = []
    new = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication_factor, config=t.config or {})
        for t in wanted
        if t.name not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    for plan in wanted:
        found = len(existing[plan.name].partitions) if plan.name in existing else plan.partitions
        if found != plan.partitions:
            raise RuntimeError(f"topic {plan.name} has {found} partitions; the topology says {plan.partitions}")
    return created


def make_producer(conf: dict[str, Any], exact_offsets: bool = False, **extra: Any) -> Producer:
    """A producer that keys like faust does; `exact_offsets` sends one record per batch (tansu)."""
    settings = {
        **conf,
        "logger": log,  # librdkafka's messages go through logging, not straight to stderr
        "log.connection.close": False,
        "partitioner": "murmur2_random",
        "linger.ms": 2,
        "acks": "all",
        "enable.idempotence": False,
        **extra,
    }
    if exact_offsets:
        settings["batch.num.messages"] = 1
    return Producer(settings)


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def consumer_config(
    conf: dict[str, Any],
    group_id: str,
    *,
    fetch_max_wait_ms: int = 10,
    from_earliest: bool = False,
    group_member: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Every consumer of supportflow is configured here: offsets are committed by hand, after the work.

    `group_member`: the consumer subscribes and shares partitions, with the short session that
    makes a dead member's partitions move quickly (and the first join short on tansu).
    `from_earliest`: a group with no committed offset starts at the beginning.
    """
    config: dict[str, Any] = {
        **conf,
        "group.id": group_id,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": fetch_max_wait_ms,
        "log.connection.close": False,
        "logger": log,  # librdkafka's messages go through logging, not straight to stderr
    }
    if from_earliest:
        config["auto.offset.reset"] = "earliest"
    if group_member:
        config["session.timeout.ms"] = 6000
        config["heartbeat.interval.ms"] = 1000
    config.update(extra)
    return config


def make_reader(
    conf: dict[str, Any], topics: Iterable[str], from_beginning: bool, fetch_max_wait_ms: int = 10
) -> Consumer:
    """A consumer with no group: assigned every partition directly, so it starts reading at once.

    Group membership would cost a join (seconds on tansu) and is not wanted by tools and views
    that read a whole topic.
    """
    consumer = Consumer(consumer_config(conf, "supportflow-reader", fetch_max_wait_ms=fetch_max_wait_ms))
    metadata = consumer.list_topics(timeout=10)
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    assignment = [TopicPartition(topic, p, start) for topic in topics for p in metadata.topics[topic].partitions]
    consumer.assign(assignment)
    return consumer


def consume_all(consumer: Consumer, idle_s: float, max_s: float) -> Iterator[KafkaRecord]:
    """Yield records until none arrives for `idle_s` (or `max_s` passes)."""
    deadline = time.monotonic() + max_s
    last = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last < idle_s:
        msg = consumer.poll(0.1)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                log.warning("kafka read error: %s", msg.error())
            continue
        last = time.monotonic()
        yield KafkaRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])


PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)
"""Errors no retry can cure. Everything else (a broker away, a timeout) is retried, never dropped."""


class DeliveryRejected(Exception):
    """The cluster will never accept this record as it is."""


def _as_exception(error: KafkaError) -> Exception:
    if error.code() in PERMANENT_ERRORS:
        return DeliveryRejected(error.str())
    return KafkaException(error)


class AsyncProducer:
    """confluent-kafka's producer for asyncio code: `send` resolves once the broker has the record.

    A daemon thread serves librdkafka's delivery reports and hands each poll's worth back to
    the event loop in one call, so a busy stream pays one loop wake-up per batch, not per record.
    """

    def __init__(self, conf: dict[str, Any], exact_offsets: bool = False, **extra: Any) -> None:
        self._producer = make_producer(conf, exact_offsets=exact_offsets, **extra)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._delivered: list[tuple[asyncio.Future[None], KafkaError | None]] = []
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)
            if self._delivered and self._loop is not None:
                batch, self._delivered = self._delivered, []
                self._loop.call_soon_threadsafe(_resolve_all, batch)

    async def send(self, topic: str, key: str | None, value: bytes | None) -> None:
        """Resolve once the broker has the record; `value=None` is a tombstone (deletes the key when compacted)."""
        self._loop = self._loop or asyncio.get_running_loop()
        done: asyncio.Future[None] = self._loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            self._delivered.append((done, err))  # runs on the poll thread, inside poll()

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                await asyncio.sleep(0.01)
            except KafkaException as exc:  # refused before it left, e.g. larger than message.max.bytes
                raise _as_exception(exc.args[0]) from None
        await done

    def close(self, timeout_s: float = 10.0) -> None:
        self._closed.set()
        self._poller.join(timeout=1)
        self._producer.flush(timeout_s)
        if self._delivered and self._loop is not None and not self._loop.is_closed():
            batch, self._delivered = self._delivered, []
            self._loop.call_soon_threadsafe(_resolve_all, batch)


def _resolve_all(batch: list[tuple[asyncio.Future[None], KafkaError | None]]) -> None:
    for future, error in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(_as_exception(error))


class BackgroundReader:
    """Reads topics from their end in a thread and hands each record to a callback on the loop."""

    def __init__(
        self,
        conf: dict[str, Any],
        topics: list[str],
        on_record: Callable[[KafkaRecord], None],
        fetch_max_wait_ms: int = 10,
    ) -> None:
        self._consumer = make_reader(conf, topics, from_beginning=False, fetch_max_wait_ms=fetch_max_wait_ms)
        self._on_record = on_record
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="kafka-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._loop is not None
        while not self._closed.is_set():
            msg = self._consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            record = KafkaRecord(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])
            self._loop.call_soon_threadsafe(self._on_record, record)
        self._consumer.close()

    def close(self) -> None:
        self._closed.set()
        if self._thread:
            self._thread.join(timeout=2)
