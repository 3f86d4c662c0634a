"""Webhooks against real HTTP receivers and, for dead letters and the outbox, a real tansu broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from connectors.backends.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryInterrupted,
    KafkaDeadLetterSink,
    KafkaWebhookOutbox,
    WebhookDispatcher,
    WebhookSubscription,
    sign,
    verify_signature,
)
from connectors.kafka import TopicPlan, create_topics
from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.runtime.settings import Settings
from schemas import DeadLetter, WebhookEvent
from tests.support.http_recorder import Recorder, Reply, serve
from tests.support.stream import read_topics

SECRET = "whsec-0123456789abcdef"
OTHER_SECRET = "whsec-fedcba9876543210"


class ListSink:
    """A dead-letter sink kept in memory, for the tests that are not about Kafka."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def send(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    async def close(self) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Recorder]:
    with serve() as recorder:
        yield recorder


def subscription(server: Recorder, path: str, events: list[str] | None = None, secret: str = SECRET):
    return WebhookSubscription(url=server.url + path, secret=secret, events=events or ["*"])


def event(event_id: str, event_type: str, data: dict | None = None) -> WebhookEvent:
    return WebhookEvent(delivery_id=event_id, event_type=event_type, customer_id="C000001", data=data or {})


def dispatcher(subscriptions, sink=None, **options) -> WebhookDispatcher:
    options = {"max_attempts": 4, "base_delay_s": 0.01, "timeout_s": 5.0, **options}
    return WebhookDispatcher(subscriptions, sink if sink is not None else ListSink(), **options)


# --- the signature scheme ---


def test_a_signature_verifies_and_fails_on_tampering_staleness_or_another_secret():
    body = b'{"id":"e-1","type":"refund.created","data":{"amount":"12.50"}}'
    now = int(time.time())
    header = sign(SECRET, body, now)
    assert header.startswith(f"t={now},v1=")
    assert verify_signature(SECRET, header, body)
    assert verify_signature(SECRET, header, body.decode()), "str bodies are accepted too"
    assert not verify_signature(SECRET, header, body.replace(b"12.50", b"125.0")), "tampered body"
    assert not verify_signature(OTHER_SECRET, header, body), "another secret"
    assert not verify_signature(SECRET, header, body, now=now + 301), "stale: older than the tolerance"
    assert verify_signature(SECRET, header, body, now=now + 299)
    assert not verify_signature(SECRET, header, body, now=now - 301), "from too far in the future"
    stale = sign(SECRET, body, now - 3600)
    assert not verify_signature(SECRET, stale, body), "a replayed old delivery"
    for broken in ("", "v1=abc", f"t={now}", f"t=soon,v1={header.split('v1=')[1]}", "garbage"):
        assert not verify_signature(SECRET, broken, body), broken
    rotated = f"{sign(OTHER_SECRET, body, now)},v1={header.split('v1=')[1]}"
    assert verify_signature(SECRET, rotated, body), "one matching v1 of several is enough (secret rotation)"


async def test_a_delivery_is_signed_json_the_receiver_can_verify(server):
    hooks = dispatcher([subscription(server, "/hook")])
    try:
        [result] = await hooks.dispatch(event("evt-1", "refund.created", {"order_id": "1234567", "amount": "12.50"}))
    finally:
        await hooks.aclose()
    assert result.delivered and result.attempts == 1 and result.status == 200
    [seen] = server.requests
    assert seen.method == "POST" and seen.headers["content-type"] == "application/json"
    assert seen.headers[EVENT_HEADER.lower()] == "refund.created"
    assert seen.headers[DELIVERY_HEADER.lower()] == "evt-1"
    signature = seen.headers[SIGNATURE_HEADER.lower()]
    assert signature.startswith(f"t={seen.headers[TIMESTAMP_HEADER.lower()]},")
    assert verify_signature(SECRET, signature, seen.body)
    sent = json.loads(seen.body)
    assert sent["id"] == "evt-1" and sent["type"] == "refund.created"
    assert sent["data"] == {"order_id": "1234567", "amount": "12.50"}
    assert sent["created_at"].endswith("Z")


async def test_a_failing_receiver_is_retried_until_it_accepts(server):
    server.fail("/hook", times=2, status=503)
    sink = ListSink()
    hooks = dispatcher([subscription(server, "/hook")], sink)
    try:
        [result] = await hooks.dispatch(event("evt-2", "order.cancelled", {"order_id": "7"}))
    finally:
        await hooks.aclose()
    assert result.delivered and result.attempts == 3
    seen = server.to("/hook")
    assert len(seen) == 3
    assert {r.headers[DELIVERY_HEADER.lower()] for r in seen} == {"evt-2"}, "one delivery id: receivers dedupe"
    assert len({r.body for r in seen}) == 1, "every attempt sends the same body"
    assert all(verify_signature(SECRET, r.headers[SIGNATURE_HEADER.lower()], r.body) for r in seen)
    assert sink.letters == []


async def test_429_and_timeouts_are_retried(server):
    server.reply("/limited", Reply(429, {}, headers={"Retry-After": "0"}), then=Reply(200, {}))
    server.reply("/slow", Reply(200, {}, delay_s=1.0), then=Reply(204))
    hooks = dispatcher([subscription(server, "/limited"), subscription(server, "/slow")], timeout_s=0.3)
    try:
        results = await hooks.dispatch(event("evt-3", "refund.created", {}))
    finally:
        await hooks.aclose()
    assert [(r.delivered, r.attempts) for r in results] == [(True, 2), (True, 2)]


async def test_a_408_is_retried_not_dead_lettered(server):
    server.reply("/hook", Reply(408, {"error": "request timeout"}), then=Reply(200, {}))
    sink = ListSink()
    hooks = dispatcher([subscription(server, "/hook")], sink)
    try:
        [result] = await hooks.dispatch(event("evt-408", "refund.created"))
    finally:
        await hooks.aclose()
    assert (result.delivered, result.attempts) == (True, 2)
    assert sink.letters == []


async def test_without_an_attempt_limit_the_retry_window_bounds_a_failing_delivery(server):
    server.reply("/down", then=Reply(503, {}))
    sink = ListSink()
    hooks = dispatcher([subscription(server, "/down")], sink, max_attempts=None, retry_window_s=0.5)
    started = time.monotonic()
    try:
        [result] = await hooks.dispatch(event("evt-window", "refund.created"))
    finally:
        await hooks.aclose()
    assert not result.delivered and result.attempts >= 2 and result.reason == "HTTP 503"
    assert 0.5 <= time.monotonic() - started < 5
    assert len(server.to("/down")) == result.attempts
    [letter] = sink.letters
    assert json.loads(letter.original)["attempts"] == result.attempts


async def test_stopping_ends_the_retries_unfinished_and_dead_letters_nothing(server):
    server.reply("/down", then=Reply(503, {}))
    sink = ListSink()
    stopping = asyncio.Event()
    hooks = dispatcher([subscription(server, "/down")], sink, max_attempts=None, base_delay_s=5.0, stopping=stopping)
    try:
        task = asyncio.create_task(hooks.dispatch(event("evt-stop", "refund.created")))
        while not server.to("/down"):
            await asyncio.sleep(0.01)
        stopping.set()
        with pytest.raises(DeliveryInterrupted):
            await asyncio.wait_for(task, 2)  # the backoff sleep wakes at once
    finally:
        await hooks.aclose()
    assert sink.letters == [], "an interrupted delivery is not done: it is neither delivered nor dead"


async def test_the_outbox_puts_the_event_on_the_topic_keyed_by_customer(broker: EmbeddedBroker):
    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, [TopicPlan("sf.webhooks", 1)])
    outbox = KafkaWebhookOutbox(conf, exact_offsets=True)
    recorded = event("evt-out", "refund.created", {"amount": "12.50"})
    try:
        await outbox.record(recorded)
    finally:
        await outbox.close()
    [record] = read_topics(broker.bootstrap, ["sf.webhooks"], until=lambda rs: len(rs) >= 1, timeout_s=30)
    assert record.key == b"C000001"
    assert WebhookEvent.model_validate_json(record.value) == recorded


async def test_a_4xx_is_not_retried_and_goes_to_the_dead_letter_sink(server):
    server.reply("/gone", then=Reply(410, {"error": "unsubscribed"}))
    sink = ListSink()
    hooks = dispatcher([subscription(server, "/gone")], sink)
    try:
        [result] = await hooks.dispatch(event("evt-4", "refund.created", {"amount": "1.00"}))
    finally:
        await hooks.aclose()
    assert not result.delivered and result.attempts == 1 and result.reason == "HTTP 410"
    assert len(server.requests) == 1
    [letter] = sink.letters
    record = json.loads(letter.original)
    assert record["reason"] == "HTTP 410" and record["attempts"] == 1 and record["last_status"] == 410


async def test_permanent_failure_puts_exactly_one_record_on_the_dead_letter_topic(server, broker: EmbeddedBroker):
    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, [TopicPlan("sf.dlq", 1)])
    server.reply("/down", then=Reply(503, {"error": "maintenance"}))
    sink = KafkaDeadLetterSink(conf, exact_offsets=True)
    hooks = dispatcher([subscription(server, "/down")], sink, max_attempts=3)
    try:
        [result] = await hooks.dispatch(event("evt-5", "refund.created", {"order_id": "1234567", "amount": "12.50"}))
    finally:
        await hooks.aclose()
        await sink.close()
    assert not result.delivered and result.attempts == 3
    assert len(server.requests) == 3

    records = read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: len(rs) >= 1, timeout_s=30)
    assert len(records) == 1, "one dead letter per failed delivery, no more"
    assert records[0].key == b"evt-5"
    assert SECRET.encode() not in records[0].value, "the secret never leaves in a dead letter"
    letter = DeadLetter.model_validate_json(records[0].value)  # the topic's own record type
    assert letter.stage == "webhooks" and letter.error_type == "WebhookDeliveryFailed"
    record = json.loads(letter.original)
    assert record["reason"] == "HTTP 503" and record["attempts"] == 3
    assert record["url"] == server.url + "/down" and record["event_id"] == "evt-5"
    assert record["event"]["data"] == {"order_id": "1234567", "amount": "12.50"}


async def test_one_failing_subscriber_does_not_stop_the_other(server):
    server.reply("/broken", then=Reply(500, {}))
    sink = ListSink()
    hooks = dispatcher([subscription(server, "/broken"), subscription(server, "/fine", secret=OTHER_SECRET)], sink)
    try:
        results = await hooks.dispatch(event("evt-6", "refund.created", {"amount": "3.00"}))
    finally:
        await hooks.aclose()
    assert [r.delivered for r in results] == [False, True]
    [fine] = server.to("/fine")
    assert verify_signature(OTHER_SECRET, fine.headers[SIGNATURE_HEADER.lower()], fine.body), "its own secret"
    assert len(server.to("/broken")) == 4
    assert [json.loads(letter.original)["url"] for letter in sink.letters] == [server.url + "/broken"]


async def test_a_slow_subscriber_does_not_delay_the_others(server):
    server.reply("/slow", then=Reply(200, {}, delay_s=1.5))
    hooks = dispatcher([subscription(server, "/slow"), subscription(server, "/quick")])
    started = time.monotonic()
    try:
        task = asyncio.create_task(hooks.dispatch(event("evt-7", "order.cancelled", {})))
        while not server.to("/quick"):
            assert time.monotonic() - started < 1.0, "the quick subscriber waited for the slow one"
            await asyncio.sleep(0.01)
        results = await task
    finally:
        await hooks.aclose()
    assert all(r.delivered for r in results)
    assert server.to("/quick")[0].at - started < 0.5


async def test_events_reach_only_the_subscribers_that_want_their_type(server):
    hooks = dispatcher(
        [
            subscription(server, "/refunds", ["refund.created"]),
            subscription(server, "/orders", ["order.*"]),
            subscription(server, "/all", ["*"]),
        ]
    )
    try:
        await hooks.dispatch(event("evt-8", "order.cancelled", {}))
        await hooks.dispatch(event("evt-9", "refund.created", {}))
        await hooks.dispatch(event("evt-10", "orderly.thing", {}))
    finally:
        await hooks.aclose()
    paths = ("/refunds", "/orders", "/all")
    delivered = {path: [r.headers[DELIVERY_HEADER.lower()] for r in server.to(path)] for path in paths}
    assert delivered == {"/refunds": ["evt-9"], "/orders": ["evt-8"], "/all": ["evt-8", "evt-9", "evt-10"]}


def test_subscriptions_come_from_settings_with_the_secret_masked(monkeypatch):
    monkeypatch.setenv(
        "SUPPORTFLOW_WEBHOOKS",
        json.dumps([{"url": "https://hooks.acme.test/sf", "secret": SECRET, "events": ["refund.*"]}]),
    )
    settings = Settings()
    [hook] = settings.webhooks
    assert hook.secret.get_secret_value() == SECRET and hook.wants("refund.created")
    assert SECRET not in json.dumps(settings.masked(), default=str)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        WebhookSubscription(url="https://hooks.acme.test/sf", secret="short")
    with pytest.raises(ValidationError, match="expected event types"):
        WebhookSubscription(url="https://hooks.acme.test/sf", secret=SECRET, events=["Refund Created"])
