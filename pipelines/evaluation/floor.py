"""The platform floor: an operator that answers every turn with a fixed text and does nothing else.

`bench/floor/topology.yaml` puts it after `enrich_context` in place of the agent's middle (NLU, playbooks,
knowledge, tools, guard), so `supportflow bench` on that topology measures what the streaming platform
alone costs a turn on this machine: the HTTP ingress, the broker, the `ingest` stage with its tables, the
`agent` stage reading and writing its `sessions` table, and the reply back to the caller. No production
topology uses it: a customer would get the same sentence whatever they wrote.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.enrich_context import HISTORY_KEPT
from operators.format import agent_reply
from operators.protocols import OperatorContext, ReplyShaper
from schemas import ContextTurn, Emitted, HistoryTurn, OutboundMessage

__all__ = ["FixedReply", "FixedReplyConfig"]


class FixedReplyConfig(OperatorConfig):
    text: str = Field(default="Thanks, we have your message.", min_length=1)


class FixedReply(Operator[ContextTurn, Emitted]):
    """Reply with the configured text and record the turn in the session, as `emit` would."""

    name = "fixed_reply"
    input_type = ContextTurn
    output_type = Emitted
    emits = (OutboundMessage,)
    Config: ClassVar[type[OperatorConfig]] = FixedReplyConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        self._shaper: ReplyShaper | None = None

    def warm_up(self, ctx: OperatorContext) -> None:
        self._shaper = ctx.require_clients(self.name).reply_shaper({})

    async def run(self, record: ContextTurn, ctx: OperatorContext) -> Emitted:
        if self._shaper is None:
            self.warm_up(ctx)
        assert self._shaper is not None
        config: FixedReplyConfig = self.config  # type: ignore[assignment]
        message, now = record.message, ctx.clock.now()
        outbound = agent_reply(self._shaper, message, record.profile, config.text, now)
        session = record.session.model_copy()
        session.history = [
            *session.history,
            HistoryTurn(role="agent", text=config.text, at=now, message_id=message.message_id),
        ][-HISTORY_KEPT:]
        ctx.table("sessions").set(message.customer_id, session)
        return Emitted(records=[outbound])
