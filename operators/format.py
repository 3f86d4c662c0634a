"""format: shape the reply for the customer's channel (length, segments, markup)."""

from __future__ import annotations

import hashlib
import html
import re
import textwrap
from typing import Any, ClassVar

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext
from schemas import FormattedTurn, GuardedTurn, OutboundMessage

GSM7_SEGMENT = 153
UCS2_SEGMENT = 67
GSM7_CHARS = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)


def reply_id_for(message_id: str) -> str:
    """Derived from the inbound id, so a replayed turn yields the same reply id and is sent once."""
    return "r-" + hashlib.sha256(f"reply:{message_id}".encode()).hexdigest()[:24]


def split_segments(text: str, limit: int) -> list[str]:
    """Split on word boundaries into parts of at most `limit` characters."""
    if len(text) <= limit:
        return [text]
    return textwrap.wrap(text, width=limit, break_long_words=True, break_on_hyphens=False)


def voice_form(text: str, limit: int) -> str:
    """Whole sentences up to `limit` characters: speech cut mid-sentence confuses callers."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    spoken = ""
    for sentence in sentences:
        if spoken and len(spoken) + 1 + len(sentence) > limit:
            break
        spoken = f"{spoken} {sentence}".strip()
    return spoken if len(spoken) <= limit else split_segments(spoken, limit)[0]


def email_html(text: str) -> str:
    """The plain text as HTML paragraphs, escaped: never markup the customer or a tool wrote."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return f'<!doctype html><html><body style="font-family:sans-serif">{body}</body></html>'


def sms_segment_size(text: str) -> int:
    return GSM7_SEGMENT if set(text) <= GSM7_CHARS else UCS2_SEGMENT


class FormatConfig(OperatorConfig):
    email_signature: str = Field(default="— The support team")
    whatsapp_limit: int = Field(default=4096, gt=0)
    slack_limit: int = Field(default=3000, gt=0)
    voice_limit: int = Field(default=600, gt=0, description="long speech loses callers; the rest goes by text")


class Format(Operator[GuardedTurn, FormattedTurn]):
    """Build the OutboundMessage: SMS segments, WhatsApp/Slack limits, an email with a subject and an HTML
    alternative, a voice reply of whole sentences."""

    name = "format"
    input_type = GuardedTurn
    output_type = FormattedTurn
    Config: ClassVar[type[OperatorConfig]] = FormatConfig

    async def run(self, record: GuardedTurn, ctx: OperatorContext) -> FormattedTurn:
        cfg: FormatConfig = self.config  # type: ignore[assignment]
        message = record.message
        shaped = shape_for_channel(message.channel, record.reply.text, cfg)
        outbound = OutboundMessage(
            reply_id=reply_id_for(message.message_id),
            in_reply_to=message.message_id,
            conversation_id=message.conversation_id,
            customer_id=message.customer_id,
            channel=message.channel,
            recipient=message.reply_to or message.sender,
            **shaped,
            created_at=ctx.clock.now(),
        )
        return FormattedTurn(**dict(record), outbound=outbound)


def shape_for_channel(channel: str, text: str, cfg: FormatConfig | None = None) -> dict[str, Any]:
    """The OutboundMessage fields that depend on the channel: text, parts, content_format, subject, html.

    Shared by `format` and the human replies of the workspace, so a person's reply is shaped like the agent's.
    """
    cfg = cfg or FormatConfig()
    text = text.strip()
    subject: str | None = None
    html_body: str | None = None
    content_format = "text"
    match channel:
        case "sms":
            parts = split_segments(text, sms_segment_size(text))
        case "whatsapp":
            parts = split_segments(text, cfg.whatsapp_limit)
        case "slack":
            parts, content_format = split_segments(text, cfg.slack_limit), "markdown"
        case "voice":
            text = voice_form(text, cfg.voice_limit)
            parts = [text]
        case "email":
            text = f"Hello,\n\n{text}\n\n{cfg.email_signature}"
            parts, subject, html_body = [text], "Re: your message to support", email_html(text)
        case _:
            parts, content_format = [text], "markdown"
    return {"text": text, "parts": parts, "content_format": content_format, "subject": subject, "html": html_body}
