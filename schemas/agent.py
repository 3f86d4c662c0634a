"""The agent's decisions: route, plan, action results, the reply and the guard's verdict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas._base import Record
from schemas.knowledge import Passage

VERIFY_TOOL = "crm.verify_identity"
"""The identity check a plan runs before account actions: planners add it, the policy requires it,
`execute` reads its result and `escalate` carries it with a prepared action."""

RouteReason = Literal[
    "confident",
    "low_confidence",
    "out_of_scope",
    "customer_requested_human",
    "negative_sentiment",
    "keyword_trigger",
    "repeated_failure",
    "policy_block",
    "continuing_task",
    "vip_high_severity",
    "with_human",
]


class RouteDecision(Record):
    branch: Literal["auto", "human"]
    reason: RouteReason
    detail: str = ""
    underlying_reason: RouteReason | None = Field(
        default=None,
        description="with_human only: the rule that would have sent this message to a human on its own, if any "
        "(escalate raises a follow-up's priority by it, never lowers it)",
    )


class ActionCall(Record):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str
    writes: bool = False
    save_as: str | None = Field(default=None, description="name under which the result's fields reach the reply")


class KnowledgeUse(Record):
    """What the knowledge base said about a turn: the reply quotes `cited`, or a human takes it (`answered` False).

    The passages travel with the turn so an escalation carries what was found: a human starts from it.
    """

    query: str = Field(description="what was searched: the customer's text, completed from earlier turns")
    confidence: float
    threshold: float = Field(description="the confidence an answer needs")
    answerable: bool = Field(
        default=False, description="passages were found and their confidence reaches the threshold"
    )
    answered: bool = Field(description="the reply quotes the passages (False: a human, or a planner, takes the turn)")
    passages: list[Passage] = Field(default_factory=list)
    cited: list[str] = Field(default_factory=list, description="doc ids the reply quotes")
    citation: str = Field(default="", description="how the reply names its source, in the channel's style")


class LlmUsage(Record):
    """What a language model did for a turn: which tier and model, its tokens and cost (0 when cached)."""

    tier: str
    model: str
    tokens_in: int = Field(ge=0)
    tokens_out: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    cached: bool = False
    latency_ms: float = Field(default=0.0, ge=0)
    fell_back_from: list[str] = Field(default_factory=list, description="tiers tried first, as `tier: reason`")


class Plan(Record):
    """A plan is data: the steps to run and the reply to give, whoever (playbook or LLM) made it.

    `reply_template` is the reply when every step succeeds (or there are none); `replies` holds
    one template per other outcome (`not_found`, `not_allowed`, `invalid`, `unverified`,
    `failed`), so a failed action is never answered with the success text. Templates use
    `{name}` placeholders filled from `reply_variables` and the steps' results.
    """

    planner: str
    intent: str
    steps: list[ActionCall] = Field(default_factory=list)
    reply_template: str
    reply_variables: dict[str, str] = Field(default_factory=dict)
    replies: dict[str, str] = Field(default_factory=dict)
    pending_steps: list[ActionCall] = Field(
        default_factory=list, description="write steps waiting for the customer's yes; checked by policy before asking"
    )
    awaiting: Literal["slot", "verification", "confirmation"] | None = None
    knowledge: KnowledgeUse | None = Field(
        default=None, description="set by `answer` when it looked the turn up in the knowledge base"
    )
    aside: str | None = Field(
        default=None,
        description="the opening of `reply_template` that answers a side question asked mid-task from its reply "
        "template; `answer` may put the knowledge base's answer in its place",
    )
    llm: LlmUsage | None = Field(default=None, description="set when a language model made this plan")
    fallback_template: str | None = Field(
        default=None,
        description="set when a language model wrote `reply_template` (the LLM planner): the non-generated reply "
        "(the template turn's) that `execute` keeps as `Reply.fallback_text`, which `guard` sends instead of an "
        "ungrounded generated reply",
    )


class ActionResult(Record):
    name: str
    idempotency_key: str
    status: Literal["succeeded", "failed", "skipped"]
    result: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    # needs_approval: the backend refused a refund above the automatic limit (a human approves it);
    # identity_locked: too many failed identity checks for the customer or the source
    error_kind: (
        Literal["not_found", "not_allowed", "invalid", "unavailable", "unverified", "identity_locked", "needs_approval"]
        | None
    ) = None


class Reply(Record):
    text: str
    confidence: float = Field(ge=0.0, le=1.0)
    llm: LlmUsage | None = Field(default=None, description="set when `compose` generated `text`")
    fallback_text: str | None = Field(
        default=None,
        description="set when `text` was generated (by `compose`, or by the LLM planner as `Plan.fallback_template` "
        "says): the non-LLM reply, what `guard` sends if it rejects `text`",
    )
    sources: list[str] = Field(
        default_factory=list, description="the texts a generated reply was grounded in (passages, tool results)"
    )


class GuardVerdict(Record):
    branch: Literal["pass", "block"]
    reason: str = ""
    kind: str | None = Field(
        default=None,
        description="what blocked, as a word a program acts on (the action policy's finding: `needs_approval`, "
        "`not_allowed`...); `reason` is for people",
    )
