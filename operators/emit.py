"""emit: the end of the automated path — the reply, its event, and the session update."""

from __future__ import annotations

from operators._events import session_after_turn, turn_event
from operators.base import Operator
from operators.protocols import OperatorContext
from schemas import Emitted, EventAction, EventResponse, FormattedTurn, OutboundMessage, RawConversationEvent


class Emit(Operator[FormattedTurn, Emitted]):
    """Emit the reply to `sf.outbound` and the raw turn event to `sf.events.raw`; stage the session write.

    The event is redacted by the `analytics` stage on its way to `sf.events`.

    The runtime applies the session write only after both records are delivered, so a crash in
    between replays the turn (same derived ids) rather than forgetting it.
    """

    name = "emit"
    input_type = FormattedTurn
    output_type = Emitted
    emits = (OutboundMessage, RawConversationEvent)

    async def run(self, record: FormattedTurn, ctx: OperatorContext) -> Emitted:
        now = ctx.clock.now()
        last = record.results[-1] if record.results else None
        event = turn_event(
            record,
            "turn_processed",
            now,
            action=EventAction(type="tool", name=last.name, status=last.status, result=last.result) if last else None,
            response=EventResponse(content=record.outbound.text, confidence=record.reply.confidence),
        )
        session = session_after_turn(record, "agent", record.outbound.text, now)  # failed_turns: set by execute
        ctx.table("sessions").set(record.message.customer_id, session)
        return Emitted(records=[record.outbound, event])
