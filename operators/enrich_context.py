"""enrich_context: attach the customer's session, opening a new one after an idle gap."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import Field

from operators.base import Operator, OperatorConfig
from operators.protocols import OperatorContext
from schemas import ContextTurn, HistoryTurn, Message, SessionContext

HISTORY_KEPT = 20
MESSAGE_IDS_KEPT = 200


class EnrichContextConfig(OperatorConfig):
    session_idle_minutes: float = Field(default=30.0, gt=0)


class EnrichContext(Operator[Message, ContextTurn]):
    """Read the session from the Kafka-backed `sessions` table, count this turn, attach the profile.

    The profile comes from the `profiles` table, a mirror of `sf.profiles` in memory, when the
    stage lists it: never a database query per message.

    The table is written only when the turn's outputs are delivered (by `emit`/`escalate`), so
    a message already in `recent_message_ids` was fully answered before a crash: it is dropped
    here instead of being counted and answered a second time.
    """

    name = "enrich_context"
    input_type = Message
    output_type = ContextTurn
    Config: ClassVar[type[OperatorConfig]] = EnrichContextConfig

    async def run(self, record: Message, ctx: OperatorContext) -> ContextTurn | None:
        config: EnrichContextConfig = self.config  # type: ignore[assignment]
        now = ctx.clock.now()
        previous: SessionContext | None = ctx.table("sessions").get(record.customer_id)
        if previous is not None and record.message_id in previous.recent_message_ids:
            return None

        idle = timedelta(minutes=config.session_idle_minutes)
        if previous is None:
            session = self._new_session(record, number=1)
        elif previous.closed or now - previous.last_activity_at > idle:
            session = self._new_session(record, number=previous.session_number + 1)
            session.recent_message_ids = list(previous.recent_message_ids)
        else:
            session = previous.model_copy()  # shallow: every list below is replaced, never mutated

        session.turn_count += 1
        session.last_activity_at = now
        session.last_channel = record.channel
        if record.channel not in session.channels:
            session.channels = [*session.channels, record.channel]
        session.history = [
            *session.history,
            HistoryTurn(role="customer", text=record.text, at=record.received_at, message_id=record.message_id),
        ][-HISTORY_KEPT:]
        session.recent_message_ids = [*session.recent_message_ids, record.message_id][-MESSAGE_IDS_KEPT:]
        profiles = ctx.tables.get("profiles")
        profile = profiles.get(record.customer_id) if profiles is not None else None
        return ContextTurn(message=record, session=session, profile=profile)

    @staticmethod
    def _new_session(record: Message, number: int) -> SessionContext:
        return SessionContext(
            customer_id=record.customer_id,
            conversation_id=record.conversation_id,
            session_id=f"{record.customer_id}-s{number}",
            session_number=number,
            started_at=record.received_at,
            last_activity_at=record.received_at,
        )
