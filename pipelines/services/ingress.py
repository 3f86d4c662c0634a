"""Wire the HTTP ingress to Kafka: a producer for `sf.ingress`, a reader for the replies."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from connectors.channels import ChannelSecrets, VoiceCalls, webhook_routes
from connectors.channels.conversation_view import ConversationView
from connectors.channels.http_api import IngressLimits, OutboxSource, create_app
from connectors.channels.origin import install_origin_policy
from connectors.channels.outbox import list_outbox, mark_spoken
from connectors.channels.session_tokens import CustomerTokens, SessionTokens
from connectors.channels.webchat import WebChat
from connectors.kafka import AsyncProducer, BackgroundReader, KafkaRecord
from connectors.postgres import PostgresStore
from connectors.protocols import SessionRevocations, SnapshotCache
from connectors.redis.rate_limit import InProcessRateLimiter, RateLimiter, RedisRateLimiter
from connectors.redis.session_revocations import InProcessSessionRevocations, RedisSessionRevocations
from connectors.redis.snapshot_cache import InProcessSnapshotCache, RedisSnapshotCache
from pipelines.runtime.exposure import check_ingress_exposure
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from pipelines.services.senders import outbox_channels
from schemas import (
    CallRecording,
    DeliveryStatus,
    Escalation,
    Feedback,
    Message,
    OutboundMessage,
    RawInbound,
    ReplyChunk,
)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
DEMO_TOKEN_PLACEHOLDER = "__SUPPORTFLOW_CUSTOMER_TOKEN__"
DEMO_SIGNED_OUT_COOKIE = "sf_demo_signed_out"

log = logging.getLogger(__name__)

STREAM_CHUNKS = Counter(
    "supportflow_webchat_stream_chunks_total",
    "sf.reply.stream records the gateway read, by outcome (forwarded to a socket; dropped: late, repeated or "
    "nobody connected; malformed: skipped).",
    ["outcome"],
)


def build_ingress(settings: Settings, topology: Topology) -> Starlette:
    """The gateway app; raises OpenDoorError rather than serve an open REST API to a network."""
    warnings = check_ingress_exposure(settings)
    for warning in warnings:
        log.warning("SECURITY: %s", warning)
    conf = settings.kafka_client_config()
    view = ConversationView()
    shown = {t: topology.topic_for(t) for t in (Message, OutboundMessage, Escalation)}
    by_topic = {topic: record_type for record_type, topic in shown.items() if topic}
    # web chat replies while a model writes them; without `llm_tiers` no worker streams, and on tansu every
    # partition a fetch reads costs time on every fetch, so the gateway reads the topic only when there can be some
    stream_topic = topology.topic_for(ReplyChunk) if settings.llm_tiers else None
    ingress_topic = topology.topic_for(RawInbound) or "sf.ingress"
    feedback_topic = topology.topic_for(Feedback) or "sf.feedback"
    limits = IngressLimits(
        ingress_topic=ingress_topic,
        feedback_topic=feedback_topic,
        dead_letter_topic=topology.spec.dead_letter_topic,
        max_text_chars=settings.http_max_text_chars,
        max_body_bytes=settings.http_max_body_bytes,
    )
    limiter: RateLimiter = (
        RedisRateLimiter(settings.redis_url, settings.rate_limits)
        if settings.redis_url
        else InProcessRateLimiter(settings.rate_limits)
    )
    revocations: SessionRevocations = (
        RedisSessionRevocations(settings.redis_url) if settings.redis_url else InProcessSessionRevocations()
    )
    producer = AsyncProducer(conf)  # no changelog is written here, so batching is safe even on tansu
    cache: SnapshotCache = RedisSnapshotCache(settings.redis_url) if settings.redis_url else InProcessSnapshotCache()
    store: PostgresStore | None = (
        PostgresStore(settings.database_url.get_secret_value(), settings.database_pool_size)
        if settings.database_url
        else None
    )

    async def snapshots(conversation_id: str) -> tuple[dict[str, Any] | None, bool]:
        """The conversation store's snapshot, reused for a few seconds: a page polls, Postgres is asked once."""
        cached = await cache.get(conversation_id)
        if cached is not None:
            return cached, True
        assert store is not None
        snapshot = await store.conversation_snapshot(conversation_id)
        if snapshot is not None:
            await cache.put(conversation_id, snapshot, settings.snapshot_cache_ttl_s)
        return snapshot, False

    outbox: OutboxSource | None = None
    if store is not None and outbox_channels(settings):

        async def outbox_entries(limit: int) -> list[dict[str, Any]]:
            """The outbox is where replies of channels with no provider went (the embedded default)."""
            assert store is not None
            async with (await store.pool()).acquire() as conn:
                return [row.to_json() for row in await list_outbox(conn, limit)]

        outbox = outbox_entries

    reader_started = threading.Event()

    def on_chunk(record: KafkaRecord) -> None:
        if record.value is None:
            return
        try:
            chunk = ReplyChunk.model_validate_json(record.value)
        except ValueError as exc:  # a preview: skipped, never dead-lettered, never the reader's end
            STREAM_CHUNKS.labels("malformed").inc()
            log.warning(
                "skipped a malformed chunk at %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                str(exc).splitlines()[0][:200],
            )
            return
        STREAM_CHUNKS.labels("forwarded" if view.add_chunk(chunk) else "dropped").inc()

    def on_record(record: KafkaRecord) -> None:
        if record.topic == stream_topic:
            on_chunk(record)
            return
        record_type = by_topic.get(record.topic)
        if record_type is None or record.value is None:
            return
        try:
            view.add_record(record_type.model_validate_json(record.value))
        except ValueError:
            return  # a malformed record is the dead-letter path's business, not the view's

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        topics = [*by_topic, stream_topic] if stream_topic else list(by_topic)
        reader = BackgroundReader(conf, topics, on_record, settings.fetch_max_wait_ms)
        reader.start(asyncio.get_running_loop())
        reader_started.set()
        try:
            yield
        finally:
            reader.close()
            producer.close()
            await limiter.close()
            await revocations.close()
            await cache.close()
            if store is not None:
                await store.close()

    secret = settings.webchat_secret.get_secret_value().encode() if settings.webchat_secret else os.urandom(32)
    customer_secret = settings.customer_token_secret
    customers = CustomerTokens(customer_secret.get_secret_value().encode() if customer_secret else None)
    sessions = SessionTokens(secret, settings.webchat_session_ttl_s, revocations)
    webchat = WebChat(
        producer.send,
        view,
        sessions,
        customers,
        limiter,
        ingress_topic,
        settings.http_max_text_chars,
        feedback_topic=feedback_topic,
    )

    async def demo_page(request: Request) -> HTMLResponse:
        """The demo shop's page; signed in as `demo_customer_id` when set, as a host site's backend would do it.

        Its "Sign out" sets the `sf_demo_signed_out` cookie (the demo shop's own sign-in state): the
        page is then served without a customer token, as a host site serves a signed-out visitor.
        """
        token = ""
        signed_out = request.cookies.get(DEMO_SIGNED_OUT_COOKIE) == "1"
        if settings.demo_customer_id and customers.secret is not None and not signed_out:
            token = customers.mint(settings.demo_customer_id, ttl_s=3600)
        page = (WEB_DIR / "demo.html").read_text(encoding="utf-8")
        return HTMLResponse(page.replace(DEMO_TOKEN_PLACEHOLDER, token), headers={"Cache-Control": "no-store"})

    web_routes = [
        WebSocketRoute("/v1/chat", webchat.endpoint),
        Route("/", demo_page),
        Mount("/web", app=StaticFiles(directory=WEB_DIR), name="web"),
    ]
    app = create_app(
        producer.send,
        view,
        limits,
        lifespan=lifespan,
        rate_limiter=limiter,
        snapshots=snapshots if store is not None else None,
        extra_routes=web_routes,
        api_keys=settings.api_keys,
        ready=lambda: reader_started.is_set(),
        outbox=outbox,
        warnings=warnings,
        sessions=sessions,
    )
    secrets = ChannelSecrets(
        twilio_auth_token=settings.twilio_auth_token,
        meta_app_secret=settings.meta_app_secret,
        meta_verify_token=settings.meta_verify_token,
        slack_signing_secret=settings.slack_signing_secret,
        public_base_url=settings.public_base_url,
        teams_app_id=settings.teams_app_id,
        teams_openid_metadata_url=settings.teams_openid_metadata_url,
    )

    async def spoken(reply_id: str, call_sid: str) -> None:
        assert store is not None
        await mark_spoken(await store.pool(), reply_id, call_sid)

    voice = VoiceCalls(
        answer=view.answer,
        escalation=view.escalation,
        wait_s=settings.voice_answer_wait_s,
        rounds=settings.voice_wait_rounds,
        transfer_to=settings.voice_transfer_to,
        queue=settings.voice_queue,
        record_calls=settings.voice_record_calls,
        spoken=spoken if store is not None else None,
    )
    # mounted after the API's own routes, which stay as they are; the same limiter keeps one
    # bucket per channel and sender whichever way a message came in
    app.router.routes.extend(
        webhook_routes(
            secrets,
            producer.send,
            limiter,
            voice,
            ingress_topic=ingress_topic,
            delivery_topic=topology.topic_for(DeliveryStatus),
            recordings_topic=topology.topic_for(CallRecording),
            max_body_bytes=settings.http_max_body_bytes,
        )
    )
    install_origin_policy(app, settings.allowed_origins, settings.public_base_url)
    app.state.view = view
    return app
