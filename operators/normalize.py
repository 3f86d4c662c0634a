"""normalize: turn a channel-native record into the unified Message, resolving who wrote it."""

from __future__ import annotations

import hashlib
from typing import ClassVar

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext
from schemas import CHANNEL_META_KEYS, Message, RawInbound, contact_key
from schemas.text import refused_character

SEEN_PROVIDER_IDS_KEPT = 500


class NormalizeConfig(OperatorConfig):
    max_text_chars: int = Field(default=4000, gt=0, description="longer messages are dead-lettered, not truncated")


def customer_id_for_address(address_key: str) -> str:
    """A stable id for a sender nobody has identified yet, so a replayed record maps to the same customer."""
    return "c-" + hashlib.sha256(address_key.encode("utf-8")).hexdigest()[:16]


def _refuse_control_characters(record: RawInbound, channel_meta: dict[str, str]) -> None:
    """ValueError (so a dead letter with the reason) for a record whose kept strings hold U+0000 and the like.

    The ingress refuses them at its boundaries; a record an outside client wrote to `sf.ingress`
    directly never met those, and one U+0000 would stop the conversation store's sink for everyone.
    """
    fields = {name: getattr(record, name) for name in ("message_id", "sender", "text", "customer_id",
                                                       "provider_message_id", "reply_to")}  # fmt: skip
    fields.update({f"payload.{k}": v for k, v in channel_meta.items()})
    for name, value in fields.items():
        found = refused_character(value) if value else None
        if found is not None:
            raise ValueError(f"{name} holds {found}, a control character no record may carry")


class Normalize(Operator[RawInbound, Message]):
    """Validate the text, drop provider retries, and resolve the channel address to a customer.

    Identity: an authenticated `customer_id` on the record wins and is remembered for the address
    (only a verified source sets it: a customer token, an API key with `customers:act`); otherwise
    a customer profile listing the address when the channel verified it (the `profiles` table);
    otherwise the identity map; otherwise a stable id derived from the address.
    Provider retries (same provider message id, new ingress message id) are dropped here; a replay
    of the very same record (same message id) after a crash is not a retry and passes.
    Text holding U+0000 or another refused control character (`schemas/text.py`) is dead-lettered.
    The payload's few keys worth keeping (`CHANNEL_META_KEYS`: a call's sid, recording URL and
    transcription confidence) ride along as `channel_meta`; the rest of the payload stays behind.
    """

    name = "normalize"
    input_type = RawInbound
    output_type = Message
    Config: ClassVar[type[OperatorConfig]] = NormalizeConfig

    async def run(self, record: RawInbound, ctx: OperatorContext) -> Message | None:
        config: NormalizeConfig = self.config  # type: ignore[assignment]
        channel_meta = {k: str(record.payload[k])[:2000] for k in CHANNEL_META_KEYS if record.payload.get(k)}
        _refuse_control_characters(record, channel_meta)
        text = " ".join(record.text.split())
        if len(text) > config.max_text_chars:
            raise ValueError(f"text is {len(text)} characters; the limit is {config.max_text_chars}")
        address_key = record.partition_key()

        if record.provider_message_id:
            seen = ctx.table("seen")
            seen_ids: dict[str, str] = dict(seen.get(address_key) or {})
            first_message_id = seen_ids.get(record.provider_message_id)
            if first_message_id is not None and first_message_id != record.message_id:
                return None
            seen_ids[record.provider_message_id] = record.message_id
            if len(seen_ids) > SEEN_PROVIDER_IDS_KEPT:  # oldest first: dicts keep insertion order
                del seen_ids[next(iter(seen_ids))]
            seen.set(address_key, seen_ids)

        identities = ctx.table("identities")
        # an unverified address neither inherits nor binds a customer: claiming someone's number gets nothing
        known = identities.get(address_key) if record.address_verified else None
        # an address nobody verified (a REST body's claim) is not matched to a customer's profile
        profile = (
            ctx.tables["profiles"].get(contact_key(record.channel, record.sender))
            if "profiles" in ctx.tables and record.address_verified
            else None
        )
        customer_id = (
            record.customer_id
            or (profile.customer_id if profile is not None else None)
            or known
            or customer_id_for_address(address_key)
        )
        if customer_id != known and record.address_verified:
            identities.set(address_key, customer_id)

        return Message(
            message_id=record.message_id,
            conversation_id=f"conv-{customer_id}",
            customer_id=customer_id,
            channel=record.channel,
            sender=record.sender,
            text=text,
            content_type="text" if text else "empty",
            provider_message_id=record.provider_message_id,
            channel_meta=channel_meta,
            reply_to=record.reply_to,
            address_verified=record.address_verified,
            received_at=record.received_at,
            normalized_at=ctx.clock.now(),
        )
