"""`supportflow senders`: deliver the replies on `sf.outbound` to SMS, WhatsApp, Slack, Teams (and voice's outbox).

With webhook subscribers configured, the same process runs the webhook deliverer
(pipelines/services/webhooks.py) beside the replies: both deliver what leaves the system.

Voice replies are spoken within the call by the ingress; this process keeps in the outbox only
those the call did not speak (connectors/channels/outbox.py, `CallOutbox`).

It is a sink like the others (pipelines/runtime/sinks.py's ConsumerLoop: read a batch, deliver it whole,
then commit), so a crash replays the batch; the delivery ledger (connectors/channels/outbox.py)
turns the replay into "send what was not delivered yet". Within a batch, replies to different
recipients go out concurrently and replies to one recipient one after the other, in topic order.

A reply whose recipient is not verified (`OutboundMessage.recipient_verified`: not the address
the message came from as its channel vouched for it, nor a contact of the customer's profile) is
withheld: marked failed in the ledger with its reason and never sent, whatever set the address.

A transient failure (5xx, 429, timeout) is retried with exponential backoff; after
`max_attempts` the batch fails and ConsumerLoop retries it (delivered replies are skipped then),
so a reply is never dropped while the provider is down. A permanent failure (4xx) goes to the
dead-letter topic with its reason and is not retried. A reply the delivery database refuses for
what it holds (a NUL in its text: connectors/postgres/errors.py) is not retried either: it fails
the batch at once, and ConsumerLoop bisects the batch and dead-letters that one reply.

Channels webchat, mobile and api are answered through the HTTP API, which reads sf.outbound
itself: no sender has a route for them. Email is delivered by the same machinery in a consumer
group of its own (`run_senders` with `email_routes`, in the email channel's process,
pipelines/services/email.py), so `supportflow senders` has no route for it either.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from prometheus_client import Counter

from connectors.channels import twilio as twilio_channel
from connectors.channels.base import PermanentSendError, Sender
from connectors.channels.email import EmailOutbox, EmailSender, RelayConfig
from connectors.channels.email_threading import ThreadStore
from connectors.channels.meta import MetaWhatsAppSender
from connectors.channels.outbox import CallOutbox, DeliveryLedger, Outbox
from connectors.channels.slack import SlackSender
from connectors.channels.teams import TeamsSender
from connectors.channels.twilio import TwilioSender
from connectors.kafka import AsyncProducer
from connectors.postgres.errors import is_data_error
from pipelines.runtime.consumer_loop import ConsumerLoop, TopicWriterSink
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology, load_topology
from schemas import DeadLetter, OutboundMessage, Record

log = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_SENDS",
    "EMAIL_GROUP_ID",
    "GROUP_ID",
    "SENDER_CHANNELS",
    "SKIPPED_CHANNELS",
    "ChannelDelivery",
    "build_routes",
    "delivery_targets",
    "email_routes",
    "outbox_channels",
    "run_senders",
    "run_senders_and_webhooks",
    "serve_senders",
]

GROUP_ID = "supportflow-senders"
EMAIL_GROUP_ID = "supportflow-email"
# answered by the gateway, which reads sf.outbound itself
SKIPPED_CHANNELS = frozenset({"webchat", "mobile", "api"})
SENDER_CHANNELS = ("sms", "whatsapp", "slack", "teams", "voice")  # `supportflow senders`; email has its own process

CHANNEL_SENDS = Counter(
    "supportflow_channel_sends_total",
    "Replies the channel senders handled, by outcome (delivered, in_call, outbox, duplicate, retried, dead_lettered, "
    "skipped, withheld: an unverified recipient).",
    ["channel", "outcome"],
)


class SendRetriesExhausted(RuntimeError):
    """A reply still failed transiently after every attempt; the whole batch is retried later."""


def delivery_targets(settings: Settings) -> dict[str, str]:
    """Where each channel's replies go: the provider whose credentials are set, else "outbox"."""
    twilio = bool(settings.twilio_account_sid and settings.twilio_auth_token)
    meta = bool(settings.meta_access_token and settings.meta_phone_number_id)
    whatsapp = "meta" if meta else "twilio" if twilio and settings.twilio_whatsapp_from else "outbox"
    return {
        "sms": "twilio" if twilio and settings.twilio_from_number else "outbox",
        "whatsapp": whatsapp,
        "slack": "slack" if settings.slack_bot_token else "outbox",
        "teams": "teams" if settings.teams_app_id and settings.teams_app_password else "outbox",
        # spoken within the call by the ingress; what came too late for the call is kept in the outbox
        "voice": "call",
        "email": "smtp" if settings.smtp_relay_host else "outbox",
    }


def outbox_channels(settings: Settings) -> list[str]:
    """The channels with a provider that is not configured, so their replies land in the outbox instead.

    All of them in the embedded default; none once every provider has credentials. Voice is
    answered within the call and keeps in the outbox only what the call missed: not counted.
    """
    targets = delivery_targets(settings)
    return [channel for channel, target in targets.items() if target == "outbox"]


def build_routes(settings: Settings, pool: asyncpg.Pool) -> dict[str, Sender]:
    """The sender of each channel: a provider whose credentials are set, else the outbox."""
    targets = delivery_targets(settings)
    outbox = Outbox(pool)
    twilio: TwilioSender | None = None
    if settings.twilio_account_sid and settings.twilio_auth_token:
        twilio = TwilioSender(
            settings.twilio_account_sid.get_secret_value(),
            settings.twilio_auth_token.get_secret_value(),
            from_number=settings.twilio_from_number,
            whatsapp_from=settings.twilio_whatsapp_from,
            base_url=settings.twilio_api_base_url,
            min_interval_s=settings.sender_min_interval_s,
            status_callback=settings.public_base_url + twilio_channel.STATUS_PATH if settings.public_base_url else None,
        )
        if not (settings.twilio_from_number or settings.twilio_whatsapp_from):
            log.warning("Twilio credentials are set but no sender number: SMS and WhatsApp go to the outbox")
    providers: dict[str, Sender | None] = {"twilio": twilio, "outbox": outbox, "call": CallOutbox(pool)}
    if targets["whatsapp"] == "meta":
        assert settings.meta_access_token and settings.meta_phone_number_id
        providers["meta"] = MetaWhatsAppSender(
            settings.meta_access_token.get_secret_value(),
            settings.meta_phone_number_id.get_secret_value(),
            base_url=settings.meta_api_base_url,
        )
    if settings.slack_bot_token:
        providers["slack"] = SlackSender(
            settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_base_url
        )
    if targets["teams"] == "teams":
        assert settings.teams_app_id and settings.teams_app_password
        providers["teams"] = TeamsSender(
            settings.teams_app_id,
            settings.teams_app_password.get_secret_value(),
            token_url=settings.teams_token_url,
            allowed_service_urls=settings.teams_allowed_service_urls,
        )
    routes: dict[str, Sender] = {}
    for channel in SENDER_CHANNELS:
        sender = providers[targets[channel]]
        assert sender is not None
        routes[channel] = sender
    return routes


def email_routes(settings: Settings, pool: asyncpg.Pool, threads: ThreadStore | None) -> dict[str, Sender]:
    """The email channel's sender: the SMTP relay when `smtp_relay_host` is set, else the outbox."""
    if settings.smtp_relay_host is None:
        return {"email": EmailOutbox(Outbox(pool), settings.support_address, threads)}
    relay = RelayConfig(
        settings.smtp_relay_host,
        settings.smtp_relay_port,
        settings.smtp_relay_starttls,
        settings.smtp_relay_username,
        settings.smtp_relay_password,
    )
    return {"email": EmailSender(relay, settings.support_address, threads)}


@dataclass
class ChannelDelivery:
    """The ConsumerLoop writer of the senders: delivers a batch of replies once each."""

    routes: dict[str, Sender]
    ledger: DeliveryLedger
    dead_letters: AsyncProducer
    dead_letter_topic: str
    max_attempts: int = 5
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    stage: str = "senders"

    async def write(self, topic: str, records: Sequence[Record]) -> int:
        lanes: dict[tuple[str, str], list[OutboundMessage]] = {}
        for record in records:
            assert isinstance(record, OutboundMessage)
            if record.channel not in self.routes:  # another process's channel
                CHANNEL_SENDS.labels(record.channel, "skipped").inc()
                continue
            lanes.setdefault((record.channel, record.recipient), []).append(record)
        results = await asyncio.gather(*(self._lane(topic, lane) for lane in lanes.values()), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        # an outage first: the loop retries it whole, where a data error alone would have it bisect the batch
        transient = [f for f in failures if not (isinstance(f, Exception) and is_data_error(f))]
        if failures:
            raise (transient or failures)[0]
        return len(records)

    async def _lane(self, topic: str, messages: list[OutboundMessage]) -> None:
        # one recipient's replies in order: a later reply waits for the earlier one
        for message in messages:
            await self._deliver(topic, message)

    async def _deliver(self, topic: str, message: OutboundMessage) -> None:
        sender = self.routes.get(message.channel)
        if sender is None:
            CHANNEL_SENDS.labels(message.channel, "skipped").inc()
            return
        if not await self.ledger.claim(message, sender.provider):
            CHANNEL_SENDS.labels(message.channel, "duplicate").inc()
            return
        if not message.recipient_verified:
            # the last guard: whatever built this reply, an address nobody verified is never sent to;
            # the reply stays readable through the API and the conversation store
            reason = f"not sent: {message.channel} recipient {message.recipient!r} is not a verified address"
            log.warning("%s: reply %s %s", self.stage, message.reply_id, reason)
            await self.ledger.failed(message.reply_id, reason)
            CHANNEL_SENDS.labels(message.channel, "withheld").inc()
            return
        delay = self.retry_initial_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                provider_id = await sender.send(message)
            except PermanentSendError as exc:
                await self._dead_letter(topic, message, sender.provider, exc)
                await self.ledger.failed(message.reply_id, str(exc))
                CHANNEL_SENDS.labels(message.channel, "dead_lettered").inc()
                return
            except Exception as exc:  # transient by contract: anything but PermanentSendError ...
                if is_data_error(exc):  # ... or the database refusing the reply's values: it fails the same again
                    raise
                CHANNEL_SENDS.labels(message.channel, "retried").inc()
                if attempt == self.max_attempts:
                    raise SendRetriesExhausted(
                        f"{sender.provider}: reply {message.reply_id} failed {attempt} times: {exc}"
                    ) from exc
                log.warning(
                    "senders: %s reply %s failed (%s); retry %d in %.1fs",
                    sender.provider,
                    message.reply_id,
                    exc,
                    attempt,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=delay)
                if self.stopping.is_set():
                    raise SendRetriesExhausted("stopping") from exc
                delay = min(delay * 2, self.retry_max_s)
                continue
            await self.ledger.delivered(message.reply_id, provider_id)
            outcome = "delivered"
            if provider_id.startswith("call:"):
                outcome = "in_call"  # the ingress spoke it in the call
            elif sender.provider == "outbox":
                outcome = "outbox"
            CHANNEL_SENDS.labels(message.channel, outcome).inc()
            self.delivered += 1
            return

    async def _dead_letter(self, topic: str, message: OutboundMessage, provider: str, exc: Exception) -> None:
        value = message.to_bytes()
        letter = DeadLetter(
            dead_letter_id="d-" + hashlib.sha256(f"{self.stage}:{message.reply_id}".encode()).hexdigest()[:24],
            stage=self.stage,
            operator=provider,
            error_type=type(exc).__name__,
            error=str(exc)[:2000],
            source_topic=topic,
            key=message.partition_key(),
            original=value.decode("utf-8", "replace"),
            original_b64=base64.b64encode(value).decode(),
        )
        await self.dead_letters.send(self.dead_letter_topic, letter.key, letter.to_bytes())

    async def aclose(self) -> None:
        for sender in {id(s): s for s in self.routes.values()}.values():
            await sender.aclose()


@contextlib.asynccontextmanager
async def _database(settings: Settings, migrate: bool) -> AsyncIterator[asyncpg.Pool]:
    from connectors.postgres import database_dsn
    from connectors.postgres import migrate as apply_migrations

    async with database_dsn(settings) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=settings.database_pool_size)
        try:
            if migrate:
                async with pool.acquire() as conn:
                    await apply_migrations(conn)
            yield pool
        finally:
            await pool.close()


async def run_senders(
    settings: Settings,
    topology: Topology,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    migrate: bool = True,
    group_id: str = GROUP_ID,
    retry_initial_s: float = 0.2,
    routes: Callable[[asyncpg.Pool], dict[str, Sender]] | None = None,
    name: str = "senders",
) -> int:
    """Consume sf.outbound and deliver until `stop` is set; returns the replies delivered.

    `routes` (default: `build_routes`, the senders' channels) gives the sender of each channel
    this consumer group delivers; the email channel passes `email_routes` and a group of its own.
    """
    topic = topology.topic_for(OutboundMessage)
    assert topic is not None, "the topology has no topic for OutboundMessage"
    async with _database(settings, migrate) as pool:
        dead_letters = AsyncProducer(settings.kafka_client_config(), exact_offsets=settings.exact_offsets)
        delivery = ChannelDelivery(
            routes=routes(pool) if routes is not None else build_routes(settings, pool),
            ledger=DeliveryLedger(pool),
            dead_letters=dead_letters,
            dead_letter_topic=topology.spec.dead_letter_topic,
            retry_initial_s=retry_initial_s,
            stage=name,
        )
        sink = TopicWriterSink(name, delivery.write, is_data_error)
        runner = ConsumerLoop(name, settings, topology, [topic], sink, group_id, dead_letter_stage=name)
        log.info(
            "%s running on %s: %s",
            name,
            topic,
            ", ".join(f"{channel} -> {sender.provider}" for channel, sender in delivery.routes.items()),
        )
        task = asyncio.create_task(runner.run(ready), name=name)
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([stopping, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            delivery.stopping.set()
            runner.stop()
            try:
                await task  # a runner that failed raises here
            finally:
                await delivery.aclose()
                dead_letters.close()
        return delivery.delivered


async def run_senders_and_webhooks(
    settings: Settings, topology: Topology, stop: asyncio.Event, ready: asyncio.Event, migrate: bool = True
) -> int:
    """The senders' process: the replies, and the webhook deliverer beside them when subscribers are set.

    Either ending (stopped, or failed) stops the other, so the process exits as one; returns the
    replies delivered.
    """
    from pipelines.services.webhooks import run_webhooks

    if not settings.webhooks:
        return await run_senders(settings, topology, stop, ready, migrate)
    replies_ready, webhooks_ready = asyncio.Event(), asyncio.Event()

    async def announce() -> None:
        await replies_ready.wait()
        await webhooks_ready.wait()
        ready.set()

    announcer = asyncio.create_task(announce())
    replies = asyncio.create_task(run_senders(settings, topology, stop, replies_ready, migrate), name="senders")
    hooks = asyncio.create_task(run_webhooks(settings, topology, stop, webhooks_ready), name="webhooks")
    try:
        await asyncio.wait([replies, hooks], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.wait([replies, hooks])  # the other finishes its batch in hand too
    finally:
        announcer.cancel()
    hooks.result()  # a failure of either raises here
    return replies.result()


def serve_senders(settings: Settings, ready_file: Path | None, migrate: bool = True) -> None:
    """The `supportflow senders` process: run until SIGTERM/SIGINT, finishing the batch in hand."""
    from pipelines.services.sinks import serve_until_stopped

    topology = load_topology(settings.topology_file)
    delivered = serve_until_stopped(
        settings, ready_file, lambda stop, ready: run_senders_and_webhooks(settings, topology, stop, ready, migrate)
    )
    log.info("senders stopped; replies delivered: %d", delivered)
