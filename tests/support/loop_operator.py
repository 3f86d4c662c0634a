"""An operator that turns a Message back into a RawInbound: only to build a cyclic topology in tests."""

from __future__ import annotations

from operators.base import Operator
from operators.protocols import OperatorContext
from schemas import Message, RawInbound


class MessageToRaw(Operator[Message, RawInbound]):
    name = "message_to_raw"
    input_type = Message
    output_type = RawInbound

    async def run(self, record: Message, ctx: OperatorContext) -> RawInbound:
        return RawInbound(message_id=record.message_id, channel=record.channel, sender=record.sender, text=record.text)
