"""Streamed replies: a model's pieces, coalesced, on `sf.reply.stream` for the web chat gateway.

The agent worker and the web chat gateway are different processes, so a reply's pieces travel on a topic of
their own as `ReplyChunk` records keyed by customer. `ChunkSink` is the `TokenSink` that `compose` streams
to (`RuntimeClients.reply_stream`): it batches the model's pieces (a record every `flush_ms`, or as soon as
`max_chars` wait) and produces fire-and-forget, on a producer of its own. The reply's durable path is
untouched: `emit` still puts the final, guarded text on `sf.outbound`, which the gateway shows in place of
the preview; a chunk that is lost, late or refused costs only the preview, and never delays the turn.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Collection
from typing import Any

from prometheus_client import Counter

from connectors.kafka import AsyncProducer
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from schemas import ReplyChunk

__all__ = ["ChunkSink", "ReplyStreams", "reply_streams_for"]

log = logging.getLogger(__name__)

SendNowait = Callable[[str, str | None, bytes], bool]
"""Fire and forget (`connectors.kafka.AsyncProducer.send_nowait`): False when the record was not queued."""

CHUNKS = Counter(
    "supportflow_reply_stream_chunks_total",
    "Streamed-reply chunks by kind (token, restart) and outcome (queued, dropped: not even queued).",
    ["kind", "outcome"],
)
MAX_CHUNK_CHARS = 4000  # a cached reply comes as one piece: it is cut to chunks of at most this


class ChunkSink:
    """One reply's `TokenSink`: pieces coalesced into numbered `ReplyChunk`s, produced without waiting."""

    def __init__(
        self,
        send: SendNowait,
        topic: str,
        *,
        reply_to: str,
        customer_id: str,
        channel: str,
        recipient: str,
        flush_ms: float = 50.0,
        max_chars: int = 64,
        stream: str | None = None,
    ) -> None:
        self._send = send
        self.topic = topic
        self._fields: dict[str, Any] = {
            "reply_to": reply_to,
            "customer_id": customer_id,
            "channel": channel,
            "recipient": recipient,
            "stream": stream or secrets.token_hex(8),  # a replayed turn streams under another name
        }
        self.flush_s = flush_ms / 1000
        self.max_chars = max_chars
        self.seq = 0  # the next chunk's number
        self._pending: list[str] = []
        self._pending_chars = 0
        self._timer: asyncio.TimerHandle | None = None

    async def token(self, text: str) -> None:
        if not text:
            return
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars >= self.max_chars:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    async def restart(self) -> None:
        """The tier failed mid-reply: pieces not yet sent are dropped, and the gateway is told to clear."""
        self._cancel_timer()
        self._pending, self._pending_chars = [], 0
        self._publish("restart", "")

    def flush(self) -> None:
        """Send what waits now (the timer calls it; a caller may too, e.g. when the reply is complete)."""
        self._cancel_timer()
        if not self._pending:
            return
        text, self._pending, self._pending_chars = "".join(self._pending), [], 0
        for start in range(0, len(text), MAX_CHUNK_CHARS):
            self._publish("token", text[start : start + MAX_CHUNK_CHARS])

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _publish(self, kind: str, text: str) -> None:
        chunk = ReplyChunk(seq=self.seq, kind=kind, text=text, **self._fields)  # type: ignore[arg-type]
        self.seq += 1
        try:
            queued = self._send(self.topic, chunk.partition_key(), chunk.to_bytes())
        except Exception:  # a preview never fails a turn
            log.debug("a streamed chunk of %s was not sent", chunk.reply_to, exc_info=True)
            queued = False
        CHUNKS.labels(kind, "queued" if queued else "dropped").inc()


class ReplyStreams:
    """`RuntimeClients.reply_stream`'s factory: a `ChunkSink` for the messages of channels a gateway streams to."""

    def __init__(
        self,
        send: SendNowait,
        topic: str,
        *,
        channels: Collection[str] = ("webchat",),
        flush_ms: float = 50.0,
        max_chars: int = 64,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._send = send
        self.topic = topic
        self._on_close = on_close
        self.channels = frozenset(channels)
        self.flush_ms = flush_ms
        self.max_chars = max_chars

    def sink_for(self, message: Any) -> ChunkSink | None:
        """A sink for `message`'s reply (a `schemas.Message`); None for a channel no gateway streams to."""
        if getattr(message, "channel", None) not in self.channels:
            return None
        return ChunkSink(
            self._send,
            self.topic,
            reply_to=message.message_id,
            customer_id=message.customer_id,
            channel=message.channel,
            recipient=message.sender,
            flush_ms=self.flush_ms,
            max_chars=self.max_chars,
        )

    def close(self) -> None:
        """Release the producer (what waits is sent for a second at most); sinks made later send nothing."""
        on_close, self._on_close = self._on_close, None
        self._send = lambda topic, key, value: False
        if on_close is not None:
            on_close()


def reply_streams_for(settings: Settings, topology: Topology) -> ReplyStreams | None:
    """A worker's streams, on a producer of their own, fire-and-forget (acks from the leader, undelivered
    pieces dropped after 5 s): a preview never queues behind the turn's outputs, nor they behind it.
    None without a language model (`llm_tiers`) or without a topic for `ReplyChunk` in the topology."""
    topic = topology.topic_for(ReplyChunk)
    if topic is None or not settings.llm_tiers:
        return None
    producer = AsyncProducer(
        settings.kafka_client_config(),
        **{"linger.ms": 5, "acks": 1, "message.timeout.ms": 5000, "queue.buffering.max.messages": 10_000},
    )
    return ReplyStreams(
        producer.send_nowait,
        topic,
        flush_ms=settings.reply_stream_flush_ms,
        max_chars=settings.reply_stream_max_chars,
        on_close=lambda: producer.close(timeout_s=1.0),
    )
