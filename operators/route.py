"""route: decide whether the agent answers or a human takes over, and record why."""

from __future__ import annotations

import itertools
import re
from typing import ClassVar

from pydantic import Field

from operators._events import HISTORY_KEPT
from operators.base import Operator, OperatorConfig
from operators.policy import screen_input
from operators.protocols import OperatorContext
from schemas import HistoryTurn, NluTurn, RouteDecision, RoutedTurn


class RouteConfig(OperatorConfig):
    confidence_threshold: float = Field(default=0.85, ge=0.0, le=1.0)
    per_intent_threshold: dict[str, float] = Field(default_factory=dict)
    human_intents: list[str] = Field(default_factory=lambda: ["contact_human_agent"])
    keyword_triggers: list[str] = Field(
        default_factory=lambda: ["lawyer", "legal action", "sue you", "chargeback", "fraud"],
        description="phrases that always go to a human",
    )
    negative_sentiment_below: float = Field(default=-0.6, ge=-1.0, le=1.0)
    falling_trend_turns: int = Field(
        default=3, ge=2, description="this many falling, negative scores in a row escalate"
    )
    max_failed_turns: int = Field(default=2, ge=1)
    vip_tiers: list[str] = Field(default_factory=lambda: ["gold", "platinum"])
    high_severity_intents: list[str] = Field(
        default_factory=lambda: ["complaint", "payment_issue"], description="a VIP with one of these gets a human"
    )
    screen_input: bool = Field(
        default=True, description="prompt-injection, tool-call look-alike and abuse checks on every message"
    )
    out_of_scope_to_auto: bool = Field(
        default=False,
        description="an out-of-scope message goes on to `auto`, where `answer` answers it from the knowledge base "
        "or hands it to a human; false: straight to a human",
    )


class Route(Operator[NluTurn, RoutedTurn]):
    """Send the turn to `auto` or `human`; the first rule that fires gives the reason.

    While a human has the conversation (`session.escalated`), every message goes to them
    (`with_human`) and the AI stays quiet. The workspace's `handback` control message ends
    that: route clears the hand-over in the session and the turn ends here, with no reply.
    """

    name = "route"
    input_type = NluTurn
    output_type = RoutedTurn
    branches = ("auto", "human")
    Config: ClassVar[type[OperatorConfig]] = RouteConfig

    def __init__(self, config: OperatorConfig | None = None) -> None:
        super().__init__(config)
        cfg: RouteConfig = self.config  # type: ignore[assignment]
        self._triggers = [re.compile(rf"\b{re.escape(t.lower())}\b") for t in cfg.keyword_triggers]

    def choose_branch(self, output: RoutedTurn) -> str:
        return output.route.branch

    async def run(self, record: NluTurn, ctx: OperatorContext) -> RoutedTurn | None:
        if record.message.control == "handback":
            self.hand_back(record, ctx)
            return None
        decision = self.decide(record)
        return RoutedTurn(**dict(record), route=decision)

    @staticmethod
    def hand_back(record: NluTurn, ctx: OperatorContext) -> None:
        """The human is done: the AI answers the next message again (the session write applies on ack)."""
        session = record.session.model_copy()
        if session.escalated:
            back = record.message.message_id
            note = HistoryTurn(role="human", text="[handed back to the agent]", at=ctx.clock.now(), message_id=back)
            session.history = [*session.history, note][-HISTORY_KEPT:]
        session.escalated = False
        session.escalated_at = None
        session.escalation_id = None
        session.escalation_priority = None
        ctx.table("sessions").set(record.message.customer_id, session)

    def decide(self, turn: NluTurn) -> RouteDecision:
        if turn.session.escalated:
            own = self._decide_alone(turn)
            since = f" since {turn.session.escalated_at:%Y-%m-%d %H:%M:%S}" if turn.session.escalated_at else ""
            return RouteDecision(
                branch="human",
                reason="with_human",
                detail=f"follow-up of {turn.session.escalation_id or 'the open hand-over'}{since}",
                underlying_reason=own.reason if own.branch == "human" else None,
            )
        return self._decide_alone(turn)

    def _decide_alone(self, turn: NluTurn) -> RouteDecision:
        """The rules for a message the AI may answer."""
        cfg: RouteConfig = self.config  # type: ignore[assignment]
        nlu = turn.nlu
        text = turn.message.text.lower()
        if cfg.screen_input:
            finding = screen_input(turn.message.text)
            if finding is not None:
                return RouteDecision(branch="human", reason="policy_block", detail=f"{finding.kind}: {finding.reason}")
        if nlu.intent in cfg.human_intents:
            return RouteDecision(branch="human", reason="customer_requested_human", detail=f"intent {nlu.intent}")
        for trigger in self._triggers:
            if trigger.search(text):
                return RouteDecision(branch="human", reason="keyword_trigger", detail=trigger.pattern)
        profile = turn.profile
        if profile is not None and profile.vip_tier in cfg.vip_tiers and nlu.intent in cfg.high_severity_intents:
            return RouteDecision(
                branch="human", reason="vip_high_severity", detail=f"{profile.vip_tier} customer, {nlu.intent}"
            )
        task = turn.session.task
        if task is not None and task.awaiting is not None and turn.session.failed_turns < cfg.max_failed_turns:
            # the message answers the agent's question ("Which order?", "yes"): the planner takes it
            return RouteDecision(
                branch="auto", reason="continuing_task", detail=f"{task.intent} awaiting {task.awaiting}"
            )
        out_of_scope = nlu.intent == "out_of_scope"
        if out_of_scope and not cfg.out_of_scope_to_auto:
            return RouteDecision(branch="human", reason="out_of_scope", detail="no known intent matched")
        threshold = cfg.per_intent_threshold.get(nlu.intent, cfg.confidence_threshold)
        # an out-of-scope verdict's confidence says how sure the model is of no intent, not of one
        if not out_of_scope and nlu.confidence < threshold:
            return RouteDecision(
                branch="human",
                reason="low_confidence",
                detail=f"{nlu.intent} at {nlu.confidence:.2f} < {threshold:.2f}",
            )
        if nlu.sentiment.score <= cfg.negative_sentiment_below:
            return RouteDecision(branch="human", reason="negative_sentiment", detail=f"score {nlu.sentiment.score:.2f}")
        trend = turn.session.sentiment_trend[-cfg.falling_trend_turns :]
        if len(trend) == cfg.falling_trend_turns and all(b < a for a, b in itertools.pairwise(trend)) and trend[-1] < 0:
            return RouteDecision(
                branch="human", reason="negative_sentiment", detail="sentiment falling over the session"
            )
        if turn.session.failed_turns >= cfg.max_failed_turns:
            return RouteDecision(
                branch="human", reason="repeated_failure", detail=f"{turn.session.failed_turns} turns without progress"
            )
        if out_of_scope:  # the knowledge base may know; `answer` hands it over (reason out_of_scope) if not
            return RouteDecision(branch="auto", reason="out_of_scope", detail="no known intent matched")
        return RouteDecision(branch="auto", reason="confident", detail=f"{nlu.intent} at {nlu.confidence:.2f}")
