"""Outgoing webhooks: tell a tenant's systems what the agent did (a refund made, an order cancelled).

The outbox is durable: the worker only records each event (`KafkaWebhookOutbox`, a `WebhookEvent`
on topic `sf.webhooks`, awaited until the broker has it) and the deliverer in the senders' process
(pipelines/services/webhooks.py) POSTs it with `WebhookDispatcher`, committing the topic's offset
only once every subscriber has it or it was dead-lettered. A worker or deliverer that stops or
is killed mid-retry loses nothing: the event is delivered again after the restart.

Each delivery is a JSON POST signed with the subscription's secret, so a receiver can tell it came
from us and was not altered or replayed later:

    X-Supportflow-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

`verify_signature` is the receiver's side. `X-Supportflow-Delivery` carries the event's delivery id,
the same on every attempt, after a restart and for a replayed turn, so a receiver that saw it
already can answer 2xx and do nothing. Deliveries refused for good (a 4xx other than 408/429, a
redirect) or still failing when the retry window closes become `DeadLetter` records (topic
`sf.dlq` by default) holding what is needed to replay them: reason, url, event id, attempts and
the event itself; never the secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import httpx
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from connectors.kafka import AsyncProducer
from connectors.protocols import DeadLetterSink
from schemas import DeadLetter, WebhookEvent

log = logging.getLogger(__name__)

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_TOPIC",
    "DeadLetterSink",
    "DeliveryInterrupted",
    "DeliveryResult",
    "KafkaDeadLetterSink",
    "KafkaWebhookOutbox",
    "WebhookDispatcher",
    "WebhookSubscription",
    "envelope_of",
    "sign",
    "verify_signature",
]

EVENT_HEADER = "X-Supportflow-Event"
DELIVERY_HEADER = "X-Supportflow-Delivery"
TIMESTAMP_HEADER = "X-Supportflow-Timestamp"
SIGNATURE_HEADER = "X-Supportflow-Signature"
WEBHOOK_TOPIC = "sf.webhooks"  # topology.yaml's topic of WebhookEvent records

DELIVERIES = Counter(
    "supportflow_webhook_deliveries_total",
    "Webhook deliveries finished, by outcome (delivered, dead_lettered).",
    ["outcome"],
)
ATTEMPTS = Counter(
    "supportflow_webhook_attempts_total",
    "Webhook HTTP attempts, by result (2xx, 4xx, 408, 429, 5xx, timeout, connect_error, other_error).",
    ["result"],
)

_EVENT_PATTERN = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")


class WebhookSubscription(BaseModel):
    """One receiver: where to POST, the shared secret to sign with, and which event types it wants.

    `events` holds exact types (`refund.created`), a family (`refund.*`) or everything (`*`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^\s/?#]+")
    secret: SecretStr
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr) -> SecretStr:
        # a short secret can be guessed offline from any one signed delivery
        if len(value.get_secret_value()) < 16:
            raise ValueError("the webhook secret must be at least 16 characters")
        return value

    @field_validator("events")
    @classmethod
    def _events_are_types_or_wildcards(cls, value: list[str]) -> list[str]:
        bad = [event for event in value if not _EVENT_PATTERN.match(event)]
        if bad:
            raise ValueError(f"{bad!r}: expected event types such as refund.created, refund.* or *")
        return value

    def wants(self, event_type: str) -> bool:
        for event in self.events:
            if event == "*" or event == event_type:
                return True
            if event.endswith(".*") and event_type.startswith(event[:-1]):
                return True
        return False


def _secret_bytes(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: SecretStr | str | bytes, body: bytes, timestamp: int) -> str:
    """The `X-Supportflow-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(_secret_bytes(secret), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: SecretStr | str | bytes,
    header: str,
    body: bytes | str,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether `header` signs exactly `body` with `secret`, within `tolerance_s` of now.

    For receivers: pass the raw request body (before any JSON parsing, which would change the
    bytes). A timestamp too old, or too far ahead, fails, so a captured delivery cannot be replayed
    later. Several `v1=` entries are accepted (one matching is enough), for secret rotation.
    """
    raw = body.encode() if isinstance(body, str) else body
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = sign(secret, raw, timestamp).partition(",v1=")[2]
    # compare every candidate, in constant time each, so timing reveals nothing about the digest
    matches = [hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in candidates]
    return any(matches)


@dataclass(frozen=True)
class DeliveryResult:
    """How one subscriber's delivery ended."""

    url: str
    delivered: bool
    attempts: int
    status: int | None
    reason: str | None = None


class KafkaDeadLetterSink:
    """Dead letters as JSON `DeadLetter` records on a Kafka topic (`sf.dlq` by default), keyed by `key`."""

    def __init__(self, conf: Mapping[str, Any], topic: str = "sf.dlq", exact_offsets: bool = False) -> None:
        self.topic = topic
        self._producer = AsyncProducer(dict(conf), exact_offsets=exact_offsets)

    async def send(self, letter: DeadLetter) -> None:
        await self._producer.send(self.topic, letter.key, letter.to_bytes())

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.close)


class KafkaWebhookOutbox:
    """The recording side: each event becomes a `WebhookEvent` on `topic`, keyed by customer.

    `record` returns once the broker has the record, so an action announced before the turn's
    offset is committed survives any stop of the worker that made it.
    """

    def __init__(self, conf: Mapping[str, Any], topic: str = WEBHOOK_TOPIC, exact_offsets: bool = False) -> None:
        self.topic = topic
        self._producer = AsyncProducer(dict(conf), exact_offsets=exact_offsets)

    async def record(self, event: WebhookEvent) -> None:
        await self._producer.send(self.topic, event.partition_key(), event.to_bytes())

    async def close(self) -> None:
        await asyncio.to_thread(self._producer.close)


class DeliveryInterrupted(Exception):
    """The dispatcher was stopped while a delivery was still being retried: it is not done, not dead."""


class _Retry(Exception):
    def __init__(self, reason: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s


class _Permanent(Exception):
    def __init__(self, reason: str, status: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _reason(state: RetryCallState) -> str:
    failure = state.outcome.exception() if state.outcome is not None else None
    return failure.reason if isinstance(failure, _Retry) else repr(failure)


def envelope_of(event: WebhookEvent) -> bytes:
    """The body POSTed for `event`: the same bytes for every subscriber, attempt and restart."""
    created = event.created_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    envelope = {"id": event.delivery_id, "type": event.event_type, "created_at": created, "data": event.data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, default=str).encode()


class WebhookDispatcher:
    """Signs and POSTs events to every subscriber that wants them, concurrently, with retries.

    A transient failure (connection error, timeout, 408, 429, 5xx) is retried with exponential
    backoff and jitter (`Retry-After` honoured) until the delivery succeeds or `retry_window_s`
    has passed since its first attempt (or `max_attempts` were made), then it is dead-lettered;
    any other status is final at once. Setting `stopping` ends the retries with
    `DeliveryInterrupted`: the caller keeps the event for the next run.
    """

    def __init__(
        self,
        subscriptions: Sequence[WebhookSubscription],
        dead_letter: DeadLetterSink,
        *,
        max_attempts: int | None = None,
        retry_window_s: float = 240.0,
        base_delay_s: float = 0.5,
        max_delay_s: float = 60.0,
        timeout_s: float = 10.0,
        stopping: asyncio.Event | None = None,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.subscriptions = list(subscriptions)
        self.dead_letter = dead_letter
        self.max_attempts = max_attempts
        self.retry_window_s = retry_window_s
        self.max_delay_s = max_delay_s
        self.stopping = stopping or asyncio.Event()
        self._backoff = wait_random_exponential(multiplier=base_delay_s, max=max_delay_s)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=False)

    def targets(self, event_type: str) -> list[WebhookSubscription]:
        return [s for s in self.subscriptions if s.wants(event_type)]

    async def dispatch(self, event: WebhookEvent) -> list[DeliveryResult]:
        """Deliver one event to its subscribers; the results say who got it and who was dead-lettered."""
        outcomes = await asyncio.gather(
            *(self.deliver(s, event) for s in self.targets(event.event_type)), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]  # stopped, or the dead-letter sink itself failed: never lose a delivery silently
        return [o for o in outcomes if isinstance(o, DeliveryResult)]

    async def deliver(self, subscription: WebhookSubscription, event: WebhookEvent) -> DeliveryResult:
        """One subscriber's delivery: delivered, or dead-lettered; `DeliveryInterrupted` if stopped first."""
        url, event_id = subscription.url, event.delivery_id
        body = envelope_of(event)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retry),
            stop=self._give_up,
            wait=self._wait,
            sleep=self._pause,
            before_sleep=lambda state: log.info(
                "webhook %s to %s: %s; retry in %.2fs",
                event_id,
                url,
                _reason(state),
                state.next_action.sleep if state.next_action is not None else 0.0,
            ),
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    if self.stopping.is_set():
                        raise DeliveryInterrupted(f"webhook {event_id} to {url}: stopped while retrying")
                    attempts = attempt.retry_state.attempt_number
                    status = await self._attempt(subscription, event.event_type, event_id, body)
        except (_Retry, _Permanent) as exc:
            if isinstance(exc, _Retry) and self.stopping.is_set():
                raise DeliveryInterrupted(f"webhook {event_id} to {url}: stopped while retrying") from None
            log.warning("webhook %s to %s dead-lettered after %d attempts: %s", event_id, url, attempts, exc.reason)
            await self.dead_letter.send(self._letter(url, event, attempts, exc, body))
            DELIVERIES.labels("dead_lettered").inc()
            return DeliveryResult(url, delivered=False, attempts=attempts, status=exc.status, reason=exc.reason)
        DELIVERIES.labels("delivered").inc()
        return DeliveryResult(url, delivered=True, attempts=attempts, status=status)

    def _give_up(self, state: RetryCallState) -> bool:
        if self.stopping.is_set():
            return True
        if self.max_attempts is not None and state.attempt_number >= self.max_attempts:
            return True
        return state.seconds_since_start >= self.retry_window_s

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Retry) and failure.retry_after_s is not None:
            return min(failure.retry_after_s, self.max_delay_s)
        return float(self._backoff(state))

    async def _pause(self, seconds: float) -> None:  # wakes at once when stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def _attempt(self, subscription: WebhookSubscription, event_type: str, event_id: str, body: bytes) -> int:
        timestamp = int(time.time())  # signed afresh per attempt, so a late retry is not "stale"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "supportflow-webhooks",
            EVENT_HEADER: event_type,
            DELIVERY_HEADER: event_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(subscription.secret, body, timestamp),
        }
        try:
            response = await self._client.post(subscription.url, content=body, headers=headers)
        except httpx.TimeoutException:
            ATTEMPTS.labels("timeout").inc()
            raise _Retry("timed out") from None
        except httpx.ConnectError as exc:
            ATTEMPTS.labels("connect_error").inc()
            raise _Retry(f"could not connect: {exc}") from None
        except httpx.HTTPError as exc:
            # the request may or may not have arrived; the delivery id lets the receiver dedupe a retry
            ATTEMPTS.labels("other_error").inc()
            raise _Retry(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            ATTEMPTS.labels("2xx").inc()
            return status
        if status in (408, 429):  # "not now": the receiver asks to be tried again
            ATTEMPTS.labels(str(status)).inc()
            after = response.headers.get("Retry-After", "")
            raise _Retry(f"HTTP {status}", status, float(after) if after.isdigit() else None)
        if status >= 500:
            ATTEMPTS.labels("5xx").inc()
            raise _Retry(f"HTTP {status}", status)
        ATTEMPTS.labels("4xx").inc()  # also 3xx: redirects are not followed, the secret stays with its url
        raise _Permanent(f"HTTP {status}", status)

    def _letter(
        self, url: str, event: WebhookEvent, attempts: int, failure: _Retry | _Permanent, body: bytes
    ) -> DeadLetter:
        record = {
            "reason": failure.reason,
            "url": url,
            "event_id": event.delivery_id,
            "event_type": event.event_type,
            "attempts": attempts,
            "last_status": failure.status,
            "event": json.loads(body),
        }
        original = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
        return DeadLetter(
            # the same event to the same url dead-letters under the same id, so a replayed dispatch dedupes
            dead_letter_id="d-" + hashlib.sha256(f"webhook:{event.delivery_id}:{url}".encode()).hexdigest()[:24],
            stage="webhooks",
            operator="dispatcher",
            error_type="WebhookDeliveryFailed",
            error=f"{failure.reason} after {attempts} attempt(s) to {url}",
            source_topic=f"webhook:{url}",
            key=event.delivery_id,
            original=original,
            original_b64=base64.b64encode(original.encode()).decode("ascii"),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
