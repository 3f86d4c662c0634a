"""The email channel's process: the SMTP listener (mail in → sf.ingress) and the email sender (sf.outbound → mail).

`supportflow run` starts it as `supportflow email run`; `supportflow email serve` and
`supportflow email send-outbound` run one half each. The sender is the channel senders'
machinery (`run_senders`: ConsumerLoop batches, the delivery ledger, retries, dead letters) with
the email route only and a consumer group of its own (`supportflow-email`): through the SMTP relay
when one is configured, else into the outbox table. Both halves share the thread store
(`<data_dir>/email_threads.sqlite`), so a reply threads under the customer's mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from connectors.channels.email import EmailListener, InboundHandler
from connectors.channels.email_threading import ThreadStore
from connectors.kafka import AsyncProducer
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import Topology
from pipelines.services.senders import EMAIL_GROUP_ID, email_routes, run_senders
from schemas import RawInbound

log = logging.getLogger(__name__)

__all__ = ["EmailChannelResult", "ListenError", "run_email_channel"]


class ListenError(RuntimeError):
    """The SMTP listener could not bind its address."""


@dataclass
class EmailChannelResult:
    published: int = 0  # mails published to sf.ingress
    delivered: int = 0  # replies sent, or kept in the outbox


async def run_email_channel(
    settings: Settings,
    topology: Topology,
    stop: asyncio.Event,
    on_ready: Callable[[int | None], None] | None = None,
    inbound: bool = True,
    outbound: bool = True,
    host: str | None = None,
    port: int | None = None,
    free_port_if_busy: bool = False,
    migrate: bool = True,
    group_id: str = EMAIL_GROUP_ID,
) -> EmailChannelResult:
    """Run the listener and/or the sender until `stop` is set.

    `on_ready(port)` is called once the listener accepts mail (port None without one) and the
    sender consumes. ListenError when the listener cannot bind its address.
    """
    result = EmailChannelResult()
    threads = ThreadStore(settings.data_dir / "email_threads.sqlite")
    producer: AsyncProducer | None = None
    listener: EmailListener | None = None
    sending: asyncio.Task[int] | None = None
    try:
        if inbound:
            producer = AsyncProducer(settings.kafka_client_config(), exact_offsets=settings.exact_offsets)
            handler = InboundHandler(
                producer,
                [settings.support_address],
                settings.email_max_bytes,
                settings.email_blocked_senders,
                settings.rate_limits.get("email"),
                threads,
                topic=topology.topic_for(RawInbound) or "sf.ingress",
            )
            listener = EmailListener(
                handler,
                host or settings.smtp_listen_host,
                settings.smtp_listen_port if port is None else port,
            )
            try:
                await listener.start(free_port_if_busy=free_port_if_busy)
            except OSError as exc:
                raise ListenError(f"cannot listen on {listener.host}:{listener.port}: {exc}") from exc
        if outbound:
            consuming = asyncio.Event()
            sending = asyncio.create_task(
                run_senders(
                    settings,
                    topology,
                    stop,
                    consuming,
                    migrate=migrate,
                    group_id=group_id,
                    routes=lambda pool: email_routes(settings, pool, threads),
                    name="email",
                ),
                name="email-outbound",
            )
            ready = asyncio.create_task(consuming.wait())
            await asyncio.wait([ready, sending], return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if sending.done():
                result.delivered = sending.result()  # it failed before consuming: raises here
                return result
        if on_ready is not None:
            on_ready(listener.port if listener is not None else None)
        waiting = [asyncio.create_task(stop.wait()), *([sending] if sending is not None else [])]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        waiting[0].cancel()
    finally:
        if listener is not None:
            await listener.stop()
            result.published = listener.handler.published
        if sending is not None:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                result.delivered = await sending  # a sender that failed raises here
        if producer is not None:
            producer.close()
        threads.close()
    return result
