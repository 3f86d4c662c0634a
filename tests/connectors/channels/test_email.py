"""The email channel against real SMTP servers (aiosmtpd) and a real broker (tansu)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import aiosmtplib
import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from connectors.channels.email import (
    EmailListener,
    EmailSender,
    InboundHandler,
    RelayConfig,
    strip_reply,
)
from connectors.channels.email_threading import (
    ThreadInfo,
    ThreadStore,
    conversation_from_headers,
    outbound_message_id,
)
from connectors.kafka import AsyncProducer
from pipelines.devstack.embedded import EmbeddedBroker, free_port, spawn, stop
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.topology import load_topology
from pipelines.services.email import run_email_channel
from schemas import OutboundMessage, RawInbound
from tests.support.stream import DEFAULT_TOPOLOGY, produce, read_topics, settings_for

SUPPORT = "support@support.example"


class Collector:
    """A relay that keeps what it is given."""

    def __init__(self) -> None:
        self.received: list[EmailMessage] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        self.received.append(BytesParser(policy=policy.default).parsebytes(data))  # type: ignore[arg-type]
        self.arrived.set()
        return "250 OK"


@pytest.fixture
async def relay() -> AsyncIterator[tuple[Collector, int]]:
    collector = Collector()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(collector, loop=loop), "127.0.0.1", 0)
    try:
        yield collector, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def threads(tmp_path: Path) -> ThreadStore:
    return ThreadStore(tmp_path / "email_threads.sqlite")


def customer_mail(
    text: str, message_id: str, subject: str = "Where is my order?", in_reply_to: str | None = None, size_pad: int = 0
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Ann Smith <Ann.Smith@Customer.example>"
    mail["To"] = SUPPORT
    mail["Subject"] = subject
    mail["Message-ID"] = message_id
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
        mail["References"] = f"<first@customer.example> {in_reply_to}"
    mail.set_content(text + ("x" * size_pad))
    return mail


QUOTED = (
    "Hi, my order 1000001 has not arrived yet. Can you check?\n\nThanks,\nAnn\n"
    "-- \nAnn Smith | ACME Corp\n+1 555 0100\n\n"  # the signature delimiter is "-- ", space included
    "On Mon, 1 Jan 2024 at 10:00, Support <support@support.example> wrote:\n"
    "> Hello Ann, your order has shipped.\n> Kind regards\n"
)


def ingress_records(bootstrap: str, count: int) -> list[RawInbound]:
    records = read_topics(bootstrap, ["sf.ingress"], until=lambda r: len(r) >= count, timeout_s=30)
    return [RawInbound.model_validate_json(r.value or b"") for r in records]


@pytest.fixture
async def listener(broker: EmbeddedBroker, threads: ThreadStore) -> AsyncIterator[EmailListener]:
    ensure_topics(settings_for(broker.bootstrap), load_topology(DEFAULT_TOPOLOGY))
    producer = AsyncProducer({"bootstrap.servers": broker.bootstrap}, exact_offsets=True)
    handler = InboundHandler(producer, [SUPPORT], max_bytes=20_000, blocked_senders=["@spam.example"], threads=threads)
    async with EmailListener(handler, "127.0.0.1", 0) as server:
        yield server
    producer.close()


async def test_inbound_mail_is_published_stripped_and_threaded(listener: EmailListener, broker: EmbeddedBroker) -> None:
    first = customer_mail(QUOTED, "<m1@customer.example>")
    await aiosmtplib.send(first, hostname="127.0.0.1", port=listener.port)
    ours = outbound_message_id("r-abc", "conv-c-42", "support.example")
    reply = customer_mail("Still nothing.\n\nSent from my iPhone", "<m2@customer.example>", "Re: x", ours)
    await aiosmtplib.send(reply, hostname="127.0.0.1", port=listener.port)
    await aiosmtplib.send(first, hostname="127.0.0.1", port=listener.port)  # resent by the customer's MTA

    got = ingress_records(broker.bootstrap, 3)
    assert len(got) == 3
    one, two, again = got
    assert one.channel == "email" and one.sender == "ann.smith@customer.example"
    assert one.text == "Hi, my order 1000001 has not arrived yet. Can you check?\n\nThanks,\nAnn"
    assert one.payload["subject"] == "Where is my order?"
    assert "thread_conversation_id" not in one.payload
    assert two.text == "Still nothing."
    assert two.payload["thread_conversation_id"] == "conv-c-42"
    assert again.message_id == one.message_id and two.message_id != one.message_id
    assert listener.handler.published == 3


async def test_a_hostile_mail_is_published_without_what_no_record_may_carry(
    listener: EmailListener, broker: EmbeddedBroker
) -> None:
    """NUL in the body and an encoded subject, raw 8-bit bytes in the From name: cleaned, not refused (the mail is
    free text and cannot be sent again more clearly), so neither the publish nor the conversation store fails."""
    raw = (
        b"From: \xff\xfe Mallory <mallory@customer.example>\r\nTo: " + SUPPORT.encode() + b"\r\n"
        b"Subject: =?utf-8?q?where=00is?=\r\nMessage-ID: <hostile-1@customer.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"my order=00 1000001 =1B[2Jhas not arrived\r\n"
    )
    await aiosmtplib.send(raw, sender="mallory@customer.example", recipients=[SUPPORT],
                          hostname="127.0.0.1", port=listener.port)  # fmt: skip
    [record] = ingress_records(broker.bootstrap, 1)
    assert record.text == "my order 1000001 [2Jhas not arrived"
    assert record.payload["subject"] == "whereis"
    assert record.payload["display_name"] == "\ufffd\ufffd Mallory"


async def test_refusals_have_smtp_codes_and_publish_nothing(listener: EmailListener, broker: EmbeddedBroker) -> None:
    big = customer_mail("too long ", "<big@customer.example>", size_pad=30_000)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await aiosmtplib.send(big, hostname="127.0.0.1", port=listener.port)
    assert refused.value.code == 552

    spam = customer_mail("buy now", "<s@spam.example>")
    spam.replace_header("From", "x@spam.example")
    with pytest.raises(aiosmtplib.SMTPResponseException) as blocked:
        await aiosmtplib.send(spam, hostname="127.0.0.1", port=listener.port)
    assert blocked.value.code == 550

    empty = customer_mail("\n> only a quote\n", "<e@customer.example>")
    with pytest.raises(aiosmtplib.SMTPResponseException) as no_text:
        await aiosmtplib.send(empty, hostname="127.0.0.1", port=listener.port)
    assert no_text.value.code == 550

    elsewhere = customer_mail("hello", "<w@customer.example>")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await aiosmtplib.send(elsewhere, hostname="127.0.0.1", port=listener.port, recipients=["x@support.example"])

    assert listener.handler.published == 0
    assert read_topics(broker.bootstrap, ["sf.ingress"], until=lambda r: False, timeout_s=1) == []


HTML = "<p>Your order ships <b>today</b>.</p>"


def outbound(reply_id: str, in_reply_to: str, html: str | None = HTML) -> OutboundMessage:
    return OutboundMessage(
        reply_id=reply_id,
        in_reply_to=in_reply_to,
        conversation_id="conv-c-42",
        customer_id="c-42",
        channel="email",
        recipient="ann.smith@customer.example",
        recipient_verified=True,  # the From the listener accepted
        text="Your order ships today.",
        subject="Re: your message to support",
        html=html,
    )


async def test_sender_builds_a_threaded_multipart_reply(relay: tuple[Collector, int], threads: ThreadStore) -> None:
    collector, port = relay
    threads.put("em-1", ThreadInfo("<m1@customer.example>", ("<first@customer.example>",), "Where is my order?"))
    sender = EmailSender(RelayConfig("127.0.0.1", port), SUPPORT, threads)

    sent_id = await sender.send(outbound("r-1", "em-1"))

    (mail,) = collector.received
    assert mail["Message-ID"] == sent_id == outbound_message_id("r-1", "conv-c-42", "support.example")
    assert mail["Subject"] == "Re: Where is my order?"
    assert mail["In-Reply-To"] == "<m1@customer.example>"
    assert mail["References"] == "<first@customer.example> <m1@customer.example>"
    assert mail["From"] == SUPPORT and mail["To"] == "ann.smith@customer.example"
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)).get_content().strip() == "Your order ships today."  # type: ignore[union-attr]
    assert "<b>today</b>" in mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert conversation_from_headers(sent_id, None, "support.example") == "conv-c-42"

    await sender.send(outbound("r-1", "em-unknown", html=None))  # unknown thread: the pipeline's subject, text only
    assert collector.received[1]["Subject"] == "Re: your message to support"
    assert collector.received[1]["In-Reply-To"] is None
    assert collector.received[1]["Message-ID"] == sent_id  # same reply id, same Message-ID
    assert collector.received[1].get_content_type() == "text/plain"


async def test_round_trip_inbound_mail_to_threaded_reply(
    broker: EmbeddedBroker, relay: tuple[Collector, int], postgres_dsn: str, tmp_path: Path
) -> None:
    """The email channel's process as `supportflow run` starts it: listener and sender, here with a relay.

    The sender is the channel senders' machinery (ConsumerLoop, delivery ledger): a reply on
    sf.outbound twice is mailed once, and a reply on another channel is not this group's.
    """
    collector, port = relay
    s = settings_for(
        broker.bootstrap,
        data_dir=tmp_path,
        database_url=postgres_dsn,
        support_address=SUPPORT,
        smtp_relay_host="127.0.0.1",
        smtp_relay_port=port,
    )
    topology = load_topology(DEFAULT_TOPOLOGY)
    ensure_topics(s, topology)
    stop, listening = asyncio.Event(), asyncio.Queue[int | None]()
    task = asyncio.create_task(run_email_channel(s, topology, stop, listening.put_nowait, port=0))
    try:
        smtp_port = await asyncio.wait_for(listening.get(), timeout=60)
        assert smtp_port
        await aiosmtplib.send(customer_mail(QUOTED, "<rt@customer.example>"), hostname="127.0.0.1", port=smtp_port)
        (inbound,) = ingress_records(broker.bootstrap, 1)

        # the pipeline's part, simulated: a reply to that message (twice), plus a reply on another channel
        reply = outbound("r-rt", inbound.message_id).model_copy(update={"recipient": inbound.sender})
        sms = outbound("r-sms", "m-sms").model_copy(update={"channel": "sms", "recipient": "+15550100"})
        produce(broker.bootstrap, "sf.outbound", [(r.customer_id, r.to_bytes()) for r in (sms, reply, reply)])
        await asyncio.wait_for(collector.arrived.wait(), timeout=60)
        await asyncio.sleep(1.5)  # a duplicate would arrive now
    finally:
        stop.set()
        result = await asyncio.wait_for(task, timeout=30)

    (mail,) = collector.received  # the sms reply is not ours; the duplicate is sent once
    assert mail["To"] == "ann.smith@customer.example"
    assert mail["Subject"] == "Re: Where is my order?"
    assert mail["In-Reply-To"] == "<rt@customer.example>"
    assert conversation_from_headers(mail["Message-ID"], None, "support.example") == "conv-c-42"
    assert (result.published, result.delivered) == (1, 1)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        row = await conn.fetchrow("SELECT provider, status, provider_message_id FROM channel_deliveries")
    finally:
        await conn.close()
    assert dict(row) == {"provider": "smtp", "status": "delivered", "provider_message_id": mail["Message-ID"]}


async def test_a_reply_the_relay_refuses_for_good_is_dead_lettered(
    broker: EmbeddedBroker, postgres_dsn: str, tmp_path: Path
) -> None:
    class Refusing:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            return "554 5.7.1 rejected"

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Refusing(), loop=loop), "127.0.0.1", 0)
    s = settings_for(
        broker.bootstrap,
        data_dir=tmp_path,
        database_url=postgres_dsn,
        support_address=SUPPORT,
        smtp_relay_host="127.0.0.1",
        smtp_relay_port=server.sockets[0].getsockname()[1],
    )
    topology = load_topology(DEFAULT_TOPOLOGY)
    ensure_topics(s, topology)
    stop = asyncio.Event()
    task = asyncio.create_task(run_email_channel(s, topology, stop, inbound=False))
    try:
        produce(broker.bootstrap, "sf.outbound", [("c-42", outbound("r-no", "em-x").to_bytes())])
        letters = await asyncio.to_thread(read_topics, broker.bootstrap, ["sf.dlq"], bool, 60)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        server.close()
    [letter] = [json.loads(r.value or b"{}") for r in letters]
    assert (letter["stage"], letter["operator"], letter["error_type"]) == ("email", "smtp", "PermanentEmailError")
    assert "554" in letter["error"] and json.loads(letter["original"])["reply_id"] == "r-no"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Need help\n\n-----Original Message-----\nFrom: Support\nSent: Monday", "Need help"),
        ("Refund please\n\nFrom: Support <s@x>\nSent: Monday, 1 January\nTo: Ann\nSubject: Re", "Refund please"),
        ("Yes\n\nOn Mon, 1 Jan 2024, Support <support@x>\nwrote:\n> hi", "Yes"),
        ("> earlier\nMy answer inline\n> more", "My answer inline"),
        ("Where?\n\nSent from my Android", "Where?"),
    ],
)
def test_strip_reply(body: str, expected: str) -> None:
    assert strip_reply(body) == expected


async def test_cli_serve_publishes_mail(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """`supportflow email serve` as an operator runs it: its own process, settings from the environment."""
    port, ready = free_port(), tmp_path / "email.ready"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    env.update(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, SUPPORTFLOW_SUPPORT_ADDRESS=SUPPORT)
    env.update(SUPPORTFLOW_DATA_DIR=str(tmp_path), SUPPORTFLOW_KAFKA_EXACT_OFFSETS="true")
    argv = [sys.executable, "-m", "pipelines.cli", "email", "serve", "--port", str(port), "--ready-file", str(ready)]
    process = spawn(argv, tmp_path / "email.log", env=env)
    try:
        for _ in range(300):
            if ready.exists():
                break
            assert process.poll() is None, (tmp_path / "email.log").read_text()
            await asyncio.sleep(0.1)
        await aiosmtplib.send(customer_mail(QUOTED, "<cli@customer.example>"), hostname="127.0.0.1", port=port)
        (record,) = ingress_records(broker.bootstrap, 1)
        assert record.text.startswith("Hi, my order 1000001") and "wrote:" not in record.text
    finally:
        stop(process)
