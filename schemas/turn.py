"""A turn grows as it flows: each operator's output extends its input's record.

Because every later record is a subclass of the earlier ones, an operator that accepts a
`RoutedTurn` (like `escalate`) can follow `route` or `guard` alike, and the topology checker
can prove consecutive operators fit with a plain subclass test.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas._base import Record
from schemas.agent import ActionResult, GuardVerdict, Plan, Reply, RouteDecision
from schemas.inbound import Message
from schemas.nlu import NluResult
from schemas.outbound import ConversationEvent, Escalation, OutboundMessage
from schemas.profile import CustomerProfile
from schemas.session import SessionContext


class ContextTurn(Record):
    message: Message
    session: SessionContext
    profile: CustomerProfile | None = None

    def partition_key(self) -> str:
        return self.message.customer_id


class NluTurn(ContextTurn):
    nlu: NluResult


class HandOver(NamedTuple):
    """Why a turn goes to a human, as the step that decided it says; `plan` when a human may approve it."""

    reason: str
    detail: str
    plan: Plan | None = None


class RoutedTurn(NluTurn):
    route: RouteDecision

    def hand_over(self) -> HandOver:
        """The reason a human takes this turn: each later step that can block overrides it."""
        return HandOver(self.route.reason, self.route.detail)


class PlannedTurn(RoutedTurn):
    plan: Plan

    def hand_over(self) -> HandOver:
        knowledge = self.plan.knowledge
        if knowledge is not None and not knowledge.answered:  # `answer` found nothing good enough to say
            detail = f"knowledge confidence {knowledge.confidence:.2f} < {knowledge.threshold:.2f}"
            return HandOver("knowledge_gap", detail)
        return super().hand_over()


class AuthorizedTurn(PlannedTurn):
    """A plan checked against the action policy before any of its steps runs."""

    authorization: GuardVerdict

    def hand_over(self) -> HandOver:
        if self.authorization.branch != "block":
            return super().hand_over()
        if self.authorization.kind == "needs_approval":  # a human approves the prepared action
            return HandOver("needs_approval", self.authorization.reason, self.plan)
        if self.authorization.kind == "identity_locked":  # nothing to approve: a human checks who it is
            return HandOver("identity_locked", self.authorization.reason)
        return HandOver("policy_block", self.authorization.reason)


class ExecutedTurn(AuthorizedTurn):
    results: list[ActionResult]
    reply: Reply


class GuardedTurn(ExecutedTurn):
    guard: GuardVerdict

    def hand_over(self) -> HandOver:
        if self.guard.branch == "block":
            return HandOver("policy_block", self.guard.reason)
        return super().hand_over()


class FormattedTurn(GuardedTurn):
    outbound: OutboundMessage


class Emitted(Record):
    """The end of a chain: records for the stage's sink topics, each routed by its type."""

    records: list[OutboundMessage | Escalation | ConversationEvent | Message]
