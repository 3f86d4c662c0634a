"""Producers: keyed like faust (murmur2), and an asyncio producer whose `send` resolves on delivery."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger("connectors.kafka")


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

    def send_nowait(self, topic: str, key: str | None, value: bytes) -> bool:
        """Fire and forget: hand the record to librdkafka and return at once, never waiting for the broker.

        For records whose loss costs nothing (a reply's streamed preview). False when it was not even
        queued (the local queue is full, or the record is refused before it left); a delivery that
        fails later is logged at debug level and dropped.
        """
        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=_forget)
        except (BufferError, KafkaException) as exc:
            log.debug("dropped a fire-and-forget record for %s: %s", topic, exc)
            return False
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        self._closed.set()
        self._poller.join(timeout=1)
        self._producer.flush(timeout_s)
        if self._delivered and self._loop is not None and not self._loop.is_closed():
            batch, self._delivered = self._delivered, []
            self._loop.call_soon_threadsafe(_resolve_all, batch)


def _forget(err: KafkaError | None, msg: Any) -> None:
    if err is not None:
        log.debug("a fire-and-forget record for %s was not delivered: %s", msg.topic(), err)


def _resolve_all(batch: list[tuple[asyncio.Future[None], KafkaError | None]]) -> None:
    for future, error in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(_as_exception(error))
