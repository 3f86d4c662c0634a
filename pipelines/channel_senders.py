"""`supportflow senders`: deliver the replies on `sf.outbound` to SMS, WhatsApp, Slack, Teams (and voice's outbox).

Voice replies are spoken within the call by the ingress; this process keeps in the outbox only
those the call did not speak (connectors/channels/outbox.py, `CallOutbox`).

It is a sink like the others (pipelines/sinks.py's SinkRunner: read a batch, deliver it whole,
then commit), so a crash replays the batch; the delivery ledger (connectors/channels/outbox.py)
turns the replay into "send what was not delivered yet". Within a batch, replies to different
recipients go out concurrently and replies to one recipient one after the other, in topic order.

A transient failure (5xx, 429, timeout) is retried with exponential backoff; after
`max_attempts` the batch fails and SinkRunner retries it (delivered replies are skipped then),
so a reply is never dropped while the provider is down. A permanent failure (4xx) goes to the
dead-letter topic with its reason and is not retried.

Channels webchat, mobile and api are answered through the HTTP API, which reads sf.outbound
itself, and email has its own sender: this process skips them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from prometheus_client import Counter

from connectors.channels import twilio as twilio_channel
from connectors.channels.outbox import CallOutbox, DeliveryLedger, Outbox
from connectors.channels.senders import (
    MetaWhatsAppSender,
    PermanentSendError,
    Sender,
    SlackSender,
    TwilioSender,
)
from connectors.channels.teams import TeamsSender
from connectors.kafka import AsyncProducer
from pipelines.settings import Settings
from pipelines.sinks import SinkRunner
from pipelines.topology import Topology, load_topology
from schemas import DeadLetter, OutboundMessage, Record

log = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_SENDS",
    "GROUP_ID",
    "SKIPPED_CHANNELS",
    "ChannelDelivery",
    "build_routes",
    "run_senders",
    "serve_senders",
]

GROUP_ID = "supportflow-senders"
# answered elsewhere: the HTTP API / web chat read sf.outbound themselves; email has its own sender
SKIPPED_CHANNELS = frozenset({"webchat", "mobile", "api", "email"})

CHANNEL_SENDS = Counter(
    "supportflow_channel_sends_total",
    "Replies the channel senders handled, by outcome (delivered, in_call, outbox, duplicate, retried, dead_lettered, "
    "skipped).",
    ["channel", "outcome"],
)


class SendRetriesExhausted(RuntimeError):
    """A reply still failed transiently after every attempt; the whole batch is retried later."""


def build_routes(settings: Settings, pool: asyncpg.Pool) -> dict[str, Sender]:
    """The sender of each channel: a provider whose credentials are set, else the outbox."""
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
    meta: MetaWhatsAppSender | None = None
    if settings.meta_access_token and settings.meta_phone_number_id:
        meta = MetaWhatsAppSender(
            settings.meta_access_token.get_secret_value(),
            settings.meta_phone_number_id.get_secret_value(),
            base_url=settings.meta_api_base_url,
        )
    slack: SlackSender | None = None
    if settings.slack_bot_token:
        slack = SlackSender(settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_base_url)
    teams: TeamsSender | None = None
    if settings.teams_app_id and settings.teams_app_password:
        teams = TeamsSender(
            settings.teams_app_id,
            settings.teams_app_password.get_secret_value(),
            token_url=settings.teams_token_url,
            allowed_service_urls=settings.teams_allowed_service_urls,
        )
    whatsapp: Sender = outbox
    if meta is not None:
        whatsapp = meta
    elif twilio is not None and settings.twilio_whatsapp_from:
        whatsapp = twilio
    return {
        "sms": twilio if twilio is not None and settings.twilio_from_number else outbox,
        "whatsapp": whatsapp,
        "slack": slack or outbox,
        "teams": teams or outbox,
        # spoken within the call by the ingress; what came too late for the call is kept for a call back
        "voice": CallOutbox(pool),
    }


@dataclass
class ChannelDelivery:
    """The SinkRunner writer of the senders: delivers a batch of replies once each."""

    routes: dict[str, Sender]
    ledger: DeliveryLedger
    dead_letters: AsyncProducer
    dead_letter_topic: str
    max_attempts: int = 5
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0

    async def write(self, topic: str, records: Sequence[Record]) -> int:
        lanes: dict[tuple[str, str], list[OutboundMessage]] = {}
        for record in records:
            assert isinstance(record, OutboundMessage)
            if record.channel in SKIPPED_CHANNELS:
                CHANNEL_SENDS.labels(record.channel, "skipped").inc()
                continue
            lanes.setdefault((record.channel, record.recipient), []).append(record)
        results = await asyncio.gather(*(self._lane(topic, lane) for lane in lanes.values()), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
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
        delay = self.retry_initial_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                provider_id = await sender.send(message)
            except PermanentSendError as exc:
                await self._dead_letter(topic, message, sender.provider, exc)
                await self.ledger.failed(message.reply_id, str(exc))
                CHANNEL_SENDS.labels(message.channel, "dead_lettered").inc()
                return
            except Exception as exc:  # transient by contract: anything but PermanentSendError
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
            dead_letter_id="d-" + hashlib.sha256(f"senders:{message.reply_id}".encode()).hexdigest()[:24],
            stage="senders",
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
) -> int:
    """Consume sf.outbound and deliver until `stop` is set; returns the replies delivered."""
    topic = topology.topic_for(OutboundMessage)
    assert topic is not None, "the topology has no topic for OutboundMessage"
    async with _database(settings, migrate) as pool:
        dead_letters = AsyncProducer(settings.kafka_client_config(), exact_offsets=settings.exact_offsets)
        delivery = ChannelDelivery(
            routes=build_routes(settings, pool),
            ledger=DeliveryLedger(pool),
            dead_letters=dead_letters,
            dead_letter_topic=topology.spec.dead_letter_topic,
            retry_initial_s=retry_initial_s,
        )
        runner = SinkRunner("senders", settings, topology, [topic], delivery.write, group_id)
        log.info(
            "senders running on %s: %s",
            topic,
            ", ".join(f"{channel} -> {sender.provider}" for channel, sender in delivery.routes.items()),
        )
        task = asyncio.create_task(runner.run(ready), name="senders")
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


def serve_senders(settings: Settings, ready_file: Path | None, migrate: bool = True) -> None:
    """The `supportflow senders` process: run until SIGTERM/SIGINT, finishing the batch in hand."""
    from pipelines.sink_service import serve_until_stopped

    topology = load_topology(settings.topology_file)
    delivered = serve_until_stopped(
        settings, ready_file, lambda stop, ready: run_senders(settings, topology, stop, ready, migrate)
    )
    log.info("senders stopped; replies delivered: %d", delivered)
