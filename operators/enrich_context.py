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
    human_hold_hours: float = Field(
        default=24.0,
        gt=0,
        description="a hand-over to a human outlives idle gaps (new sessions) for this long, unless handed back sooner",
    )


class EnrichContext(Operator[Message, ContextTurn]):
    """Read the session from the Kafka-backed `sessions` table, count this turn, attach the profile.

    The profile comes from the `profiles` table, a mirror of `sf.profiles` in memory, when the
    stage lists it: never a database query per message.

    The table is written only when the turn's outputs are delivered (by `emit`/`escalate`), so
    a message already in `recent_message_ids` was fully answered before a crash: it is dropped
    here instead of being counted and answered a second time.

    A control message (the workspace's `handback`) is no customer turn: it is passed on with the
    session as it stands, neither counted nor added to the history, so `route` can act on it.
    """

    name = "enrich_context"
    input_type = Message
    output_type = ContextTurn
    Config: ClassVar[type[OperatorConfig]] = EnrichContextConfig

    @property
    def session_idle_limit(self) -> timedelta:
        """After this long without a turn the session is closed (`operators.protocols.KeepsSessions`)."""
        config: EnrichContextConfig = self.config  # type: ignore[assignment]
        return timedelta(minutes=config.session_idle_minutes)

    async def run(self, record: Message, ctx: OperatorContext) -> ContextTurn | None:
        config: EnrichContextConfig = self.config  # type: ignore[assignment]
        now = ctx.clock.now()
        previous: SessionContext | None = ctx.table("sessions").get(record.customer_id)
        if previous is not None and record.message_id in previous.recent_message_ids:
            return None

        if record.control is not None:
            if previous is None:
                return None  # no session, so nothing is with a human: nothing to hand back
            session = previous.model_copy()
            session.recent_message_ids = [*session.recent_message_ids, record.message_id][-MESSAGE_IDS_KEPT:]
            return ContextTurn(message=record, session=session, profile=None)

        idle = timedelta(minutes=config.session_idle_minutes)
        if previous is None:
            session = self._new_session(record, number=1)
        elif previous.closed or now - previous.last_activity_at > idle:
            session = self._new_session(record, number=previous.session_number + 1)
            session.recent_message_ids = list(previous.recent_message_ids)
            hold = timedelta(hours=config.human_hold_hours)
            if previous.escalated and (previous.escalated_at is None or now - previous.escalated_at <= hold):
                # the human still has the conversation: a pause does not hand it back to the AI
                session.escalated = True
                session.escalated_at = previous.escalated_at
                session.escalation_id = previous.escalation_id
                session.escalation_priority = previous.escalation_priority
            # the backend's lockout spans sessions; the copy saves asking a locked customer for details again
            session.identity_locked_until = previous.identity_locked_until
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
