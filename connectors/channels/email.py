"""The email channel: an SMTP listener that publishes customers' mail, and a sender for our replies.

Inbound (`EmailListener`, aiosmtpd): mail to the support address is parsed (stdlib `email`,
policy=default), reduced to what the customer just wrote (quoted history and signatures
stripped), and published to `sf.ingress` as a `RawInbound` before the SMTP transaction is
acknowledged, so a broker outage makes the sending MTA retry (451) instead of losing the mail.
Its message id comes from the Message-ID header, so a resent mail has the same id. The
conversation an answer belongs to is recovered from our Message-IDs in `In-Reply-To` /
`References` (email_threading.py) and put in `payload["thread_conversation_id"]`.

Outbound: replies on `sf.outbound` with channel email are delivered by the channel senders'
machinery (pipelines/services/senders.py: the ConsumerLoop batch loop, the delivery ledger, retries and
dead letters) with one of two senders: `EmailSender` (aiosmtplib) through a relay, as
multipart/alternative threaded under the customer's mail with a Message-ID derived from the reply
id, so a resend is recognisably the same mail; or, with no relay configured, `EmailOutbox`, which
keeps that same mail (text, HTML, headers) in the outbox table.
"""

from __future__ import annotations

import asyncio
import errno
import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, getaddresses
from html.parser import HTMLParser
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import SecretStr

from connectors.channels.admit import Admission
from connectors.channels.base import OutputChannel, PermanentSendError, ReplyStyle, Shaped
from connectors.channels.email_threading import (
    ThreadInfo,
    ThreadStore,
    conversation_from_headers,
    inbound_message_id,
    message_ids,
    outbound_message_id,
    reply_subject,
)
from connectors.channels.outbox import Outbox
from connectors.kafka import AsyncProducer
from connectors.redis.rate_limit import DEFAULT_LIMITS, InProcessRateLimiter, RateLimit
from schemas import OutboundMessage, RawInbound
from schemas.text import clean_text, refused_character

log = logging.getLogger(__name__)

__all__ = [
    "EMAIL_HEADERS",
    "EmailListener",
    "EmailOutbox",
    "EmailSender",
    "InboundHandler",
    "ParsedEmail",
    "PermanentEmailError",
    "RelayConfig",
    "build_reply",
    "email_html",
    "email_reply",
    "html_to_text",
    "parse_email",
    "strip_reply",
]

INGRESS_TOPIC = "sf.ingress"

# ---------------------------------------------------------------------------------------------
# Text extraction


class _TextExtractor(HTMLParser):
    """Visible text of an HTML body, with line breaks where blocks end (quote detection needs lines)."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "hr"})
    _HIDDEN = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._hidden = 0
        self._quote = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "blockquote":
            self._quote += 1  # quoted history in HTML mail: rendered as "> " lines, then stripped
        if tag in self._BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "blockquote":
            self._quote = max(0, self._quote - 1)
        if tag in self._BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._quote:
            data = "\n".join("> " + line for line in data.splitlines())
        self.out.append(data)


def html_to_text(html: str) -> str:
    """A plain-text rendering of an HTML body, good enough for an intent model (not for display)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    lines = [" ".join(line.split()) for line in "".join(extractor.out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_ON_WROTE = re.compile(r"^\s*(on\b.*\bwrote:|le\b.*\ba écrit\s*:|am\b.*\bschrieb\b.*:)\s*$", re.IGNORECASE)
_ON_START = re.compile(r"^\s*(on|le|am)\s.+", re.IGNORECASE)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(original message|forwarded message)\s*-{2,}", re.IGNORECASE)
_OUTLOOK_FROM = re.compile(r"^\s*\*?from:\*?\s+\S", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\s*\*?(sent|date|to|subject|cc):\*?\s", re.IGNORECASE)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_SIGNATURE = re.compile(r"^--\s*$")
_MOBILE = re.compile(
    r"^\s*(sent from my \w+|sent from (outlook|yahoo mail|mail) for \w+|get outlook for \w+|envoyé de mon \w+)",
    re.IGNORECASE,
)


def strip_reply(text: str) -> str:
    """What the customer wrote in this mail: quoted history, signatures and mobile footers removed.

    Everything from the first marker of quoted history on is dropped (clients put new text on
    top); lines quoted with ">" are dropped wherever they are (inline replies keep the rest).
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        following = lines[index + 1 : index + 4]
        if _ON_WROTE.match(line) or _ORIGINAL.match(line) or _UNDERSCORES.match(line):
            break
        if _ON_START.match(line) and following and following[0].strip().lower().endswith("wrote:"):
            break  # "On Mon, 1 Jan 2024, Support <support@x>\nwrote:" wrapped by the client
        if _OUTLOOK_FROM.match(line) and any(_OUTLOOK_NEXT.match(n) for n in following):
            break
        if _SIGNATURE.match(line) or _MOBILE.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class ParsedEmail:
    """The parts of a received mail the pipeline uses."""

    sender: str | None
    display_name: str
    subject: str | None
    header_message_id: str | None
    in_reply_to: str | None
    references: str | None
    text: str
    auto_submitted: bool


def _content(part: Any) -> str:
    try:
        return str(part.get_content())
    except (LookupError, UnicodeDecodeError, AssertionError):  # an unknown or lying charset
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def parse_email(data: bytes) -> ParsedEmail:
    """Parse raw RFC 5322 bytes: the From address, threading headers, and the stripped text."""
    msg = BytesParser(policy=policy.default).parsebytes(data)
    sender, name = None, ""
    try:
        addresses = msg["From"].addresses if msg["From"] is not None else ()
        if addresses and addresses[0].addr_spec and "@" in addresses[0].addr_spec:
            sender, name = addresses[0].addr_spec.lower(), addresses[0].display_name
    except (AttributeError, IndexError, ValueError):  # a malformed From: fall back to a plain parse
        parsed = getaddresses([str(msg.get("From", ""))])
        if parsed and "@" in parsed[0][1]:
            name, sender = parsed[0][0], parsed[0][1].lower()
    body = msg.get_body(preferencelist=("plain", "html"))
    raw = ""
    if body is not None:
        raw = _content(body)
        if body.get_content_subtype() == "html":
            raw = html_to_text(raw)
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if sender is not None and refused_character(sender) is not None:
        sender = None  # an address with control characters or undecodable bytes is no address to answer
    return ParsedEmail(
        sender=sender,
        display_name=clean_text(name),
        subject=_header(msg, "Subject"),
        header_message_id=_header(msg, "Message-ID"),
        in_reply_to=_header(msg, "In-Reply-To"),
        references=_header(msg, "References"),
        text=clean_text(strip_reply(raw)),
        auto_submitted=auto not in ("", "no") or msg.get("X-Autoreply") is not None,
    )


def _header(msg: EmailMessage, name: str) -> str | None:
    """A header as text a record can carry: mail is free text, so what no record may hold is removed.

    Undecodable 8-bit bytes come out of the parser as lone surrogates, and an encoded word may
    hold U+0000; a mail cannot be asked again more clearly, so it is cleaned rather than refused.
    """
    value = msg[name]
    return None if value is None else clean_text(str(value)).strip()


# ---------------------------------------------------------------------------------------------
# Inbound


def _blocked(address: str, blocked: Sequence[str]) -> bool:
    address = address.lower()
    domain = "@" + address.rpartition("@")[2]
    return any(entry.lower() in (address, domain) for entry in blocked)


class InboundHandler:
    """aiosmtpd handler: accept mail for the support addresses, publish it, answer with SMTP codes.

    Refusals: 550 for unknown recipients, blocked senders and mail without text; 552 for mail
    over `max_bytes`; 451 (retry later) when a sender exceeds its rate or the broker is away.
    """

    def __init__(
        self,
        producer: AsyncProducer,
        support_addresses: Sequence[str],
        max_bytes: int,
        blocked_senders: Sequence[str] = (),
        rate_limit: RateLimit | None = None,
        threads: ThreadStore | None = None,
        topic: str = INGRESS_TOPIC,
    ) -> None:
        self.producer = producer
        self.addresses = {a.lower() for a in support_addresses}
        self.domain = next(iter(sorted(self.addresses))).rpartition("@")[2]
        self.max_bytes = max_bytes
        self.blocked = list(blocked_senders)
        limiter = InProcessRateLimiter({"email": rate_limit or DEFAULT_LIMITS["email"]})
        self.admission = Admission(producer.send, limiter, topic)
        self.threads = threads
        self.topic = topic
        self.published: int = 0

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if address and _blocked(address, self.blocked):
            return "550 5.7.1 sender blocked"
        for option in mail_options:  # refuse early when the client announces the size (RFC 1870)
            size = option[5:]  # float(): int() of 4,301 digits raises
            announced = float(size) if option.upper().startswith("SIZE=") and size.isascii() and size.isdigit() else 0
            if announced > self.max_bytes:
                return f"552 5.3.4 message exceeds the {self.max_bytes}-byte limit"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() not in self.addresses:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if len(data) > self.max_bytes:
            return f"552 5.3.4 message exceeds the {self.max_bytes}-byte limit"
        parsed = parse_email(data)
        sender = parsed.sender or (envelope.mail_from or "").lower() or None
        if not envelope.mail_from or parsed.auto_submitted:
            # bounces and auto-replies are accepted and dropped: answering them would loop
            log.info("email: dropped an automatic message from %s", sender or "<>")
            return "250 OK (automatic message not processed)"
        if sender is None:
            return "550 5.1.7 no sender address"
        if _blocked(sender, self.blocked):
            return "550 5.7.1 sender blocked"
        if not parsed.text:
            return "550 5.6.0 message has no text"
        decision = await self.admission.allow("email", sender)
        if not decision.allowed:
            return f"451 4.7.1 too many messages from {sender}; retry in {max(1, int(decision.retry_after_s))}s"
        record = self.to_record(parsed, sender, data)
        if self.threads is not None:
            refs = tuple(message_ids(parsed.references))
            self.threads.put(record.message_id, ThreadInfo(parsed.header_message_id, refs, parsed.subject))
        try:
            await self.admission.publish_raw(record)
        except Exception as exc:  # the broker is away: the sending MTA keeps the mail and retries
            log.warning("email: publishing %s failed: %s", record.message_id, exc)
            return "451 4.3.0 temporarily unable to accept mail; retry later"
        self.published += 1
        return "250 OK queued as " + record.message_id

    def to_record(self, parsed: ParsedEmail, sender: str, data: bytes) -> RawInbound:
        payload: dict[str, Any] = {"subject": parsed.subject, "email_message_id": parsed.header_message_id}
        if parsed.display_name:
            payload["display_name"] = parsed.display_name
        conversation = conversation_from_headers(parsed.in_reply_to, parsed.references, self.domain)
        if conversation is not None:
            payload["thread_conversation_id"] = conversation
        provider_id = parsed.header_message_id[:200] if parsed.header_message_id else None
        return RawInbound(
            message_id=inbound_message_id(parsed.header_message_id, data),
            channel="email",
            sender=sender,
            address_verified=True,  # the From the SMTP listener accepted (envelope, blocklist, loops)
            text=parsed.text,
            provider_message_id=provider_id,
            payload=payload,
        )


class EmailListener:
    """The inbound SMTP server on the running event loop (`async with` or start/stop)."""

    def __init__(self, handler: InboundHandler, host: str, port: int, hostname: str | None = None) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.hostname = hostname
        self._server: asyncio.base_events.Server | None = None

    async def start(self, free_port_if_busy: bool = False) -> None:
        """Listen on host:port; with `free_port_if_busy`, on a free port when that one is taken."""
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            # aiosmtpd answers 552 itself past data_size_limit, before the whole body is buffered
            return SMTP(
                self.handler,
                data_size_limit=self.handler.max_bytes,
                hostname=self.hostname,
                ident="supportflow",
                timeout=60,
                loop=loop,
            )

        try:
            self._server = await loop.create_server(protocol, self.host, self.port)
        except OSError as exc:
            if not (free_port_if_busy and exc.errno == errno.EADDRINUSE):
                raise
            log.warning("email: port %d is taken; listening on a free port instead", self.port)
            self._server = await loop.create_server(protocol, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> EmailListener:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


# ---------------------------------------------------------------------------------------------
# Outbound


class PermanentEmailError(PermanentSendError):
    """The relay refused this message for good (5xx): retrying the same mail cannot succeed."""


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = 30.0


def build_reply(message: OutboundMessage, support_address: str, thread: ThreadInfo | None = None) -> EmailMessage:
    """The MIME reply: text, plus an HTML alternative when there is one, threaded under the customer's mail."""
    domain = support_address.rpartition("@")[2]
    mail = EmailMessage(policy=policy.SMTP)
    mail["From"] = Address(addr_spec=support_address)
    mail["To"] = message.recipient
    mail["Subject"] = reply_subject(thread.subject if thread else None, message.subject)
    mail["Message-ID"] = outbound_message_id(message.reply_id, message.conversation_id, domain)
    mail["Date"] = formatdate(message.created_at.timestamp(), localtime=False)
    mail["Auto-Submitted"] = "auto-replied"  # RFC 3834: the customer's autoresponder must not answer
    if thread is not None and thread.email_message_id:
        mail["In-Reply-To"] = thread.email_message_id
        mail["References"] = " ".join([*thread.references, thread.email_message_id][-20:])
    mail.set_content(message.text)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    return mail


def _reply_mail(message: OutboundMessage, support_address: str, threads: ThreadStore | None) -> EmailMessage:
    """The mail a reply becomes, threaded under the customer's mail when we know it; relay and outbox alike."""
    if message.channel != "email":
        raise PermanentEmailError(f"not an email reply: channel {message.channel}")
    thread = threads.get(message.in_reply_to) if threads is not None else None
    return build_reply(message, support_address, thread)


class EmailSender(OutputChannel):
    """Sends replies through an SMTP relay, one connection per message (replies are infrequent)."""

    provider = "smtp"

    def __init__(self, relay: RelayConfig, support_address: str, threads: ThreadStore | None = None) -> None:
        self.relay = relay
        self.support_address = support_address
        self.threads = threads

    async def send(self, message: OutboundMessage) -> str:
        """Deliver `message`; the Message-ID it went out with."""
        mail = _reply_mail(message, self.support_address, self.threads)
        password = self.relay.password.get_secret_value() if self.relay.password else None
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.relay.host,
                port=self.relay.port,
                start_tls=self.relay.starttls,
                username=self.relay.username,
                password=password,
                timeout=self.relay.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise PermanentEmailError(f"recipient refused: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentEmailError(f"{exc.code} {exc.message}") from exc
            raise
        return str(mail["Message-ID"])

    async def aclose(self) -> None:
        return None


EMAIL_HEADERS = ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Date", "Auto-Submitted")


class EmailOutbox:
    """The email sender with no relay configured: the reply's mail is kept in the outbox, not sent.

    The entry is the mail `EmailSender` would have sent: the text, the HTML alternative and the
    headers, threading included (In-Reply-To and References of the customer's mail).
    """

    provider = "outbox"

    def __init__(self, outbox: Outbox, support_address: str, threads: ThreadStore | None = None) -> None:
        self.outbox = outbox
        self.support_address = support_address
        self.threads = threads

    async def send(self, message: OutboundMessage) -> str:
        mail = _reply_mail(message, self.support_address, self.threads)
        headers = {name: str(mail[name]) for name in EMAIL_HEADERS if mail[name] is not None}
        await self.outbox.store(message, subject=headers["Subject"], html=message.html, headers=headers)
        return headers["Message-ID"]

    async def aclose(self) -> None:
        """The pool belongs to the caller."""


# ---- reply shape ------------------------------------------------------------------------------


def email_html(text: str) -> str:
    """The plain text as HTML paragraphs, escaped: never markup the customer or a tool wrote."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f'<!doctype html><html><body style="font-family:sans-serif">{body}</body></html>'


def email_reply(text: str, style: ReplyStyle) -> Shaped:
    """Email: a greeting and the signature around the text, a subject, and an HTML alternative."""
    body = f"Hello,\n\n{text}\n\n{style.email_signature}"
    return Shaped(body, [body], "text", "Re: your message to support", email_html(body))
