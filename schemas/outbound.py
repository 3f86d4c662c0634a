"""What leaves: replies to the customer, escalations to humans, dead letters, feedback."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas._base import Record
from schemas.agent import ActionCall
from schemas.inbound import Channel, utcnow
from schemas.knowledge import Passage
from schemas.nlu import NluResult
from schemas.profile import CustomerProfile
from schemas.session import HistoryTurn


class OutboundMessage(Record):
    """A reply ready for a channel sender (topic `sf.outbound`).

    `reply_id` is derived from the inbound message id, so a replayed turn produces the same
    id and senders deliver it once.
    """

    reply_id: str
    in_reply_to: str
    conversation_id: str
    customer_id: str
    channel: Channel
    recipient: str
    recipient_verified: bool = Field(
        default=False,
        description="`recipient` is the address the message came from as its channel verified it, or a verified "
        "contact of the customer; the senders deliver nothing else (operators/format.py's `reply_target`)",
    )
    text: str
    parts: list[str] = Field(default_factory=list, description="channel-sized segments of text, in order")
    content_format: Literal["text", "markdown", "html"] = "text"
    subject: str | None = None
    html: str | None = Field(default=None, description="email: the HTML alternative of `text`")
    author: Literal["agent", "human"] = "agent"
    created_at: datetime = Field(default_factory=utcnow)

    def partition_key(self) -> str:
        return self.customer_id


class ReplyChunk(Record):
    """A piece of a reply while a model generates it (topic `sf.reply.stream`): a preview, never the reply.

    The web chat gateway forwards it to the sockets of `recipient` (`reply.delta` / `reply.restart` frames,
    connectors/channels/webchat.py); the reply itself is the `OutboundMessage` for `reply_to` on `sf.outbound`,
    guarded, and replaces whatever was streamed. Produced fire-and-forget: a chunk lost, late (after the final
    reply) or malformed changes nothing but the preview. `stream` names one generation (a replayed turn streams
    anew under another), `seq` orders its chunks from 0. `kind` "restart": what was streamed is void (a tier
    failed mid-reply and the next starts over); `text` is then empty.
    """

    reply_to: str = Field(min_length=1, max_length=200, description="the inbound message id the reply answers")
    customer_id: str = Field(min_length=1)
    channel: Channel
    recipient: str = Field(min_length=1, description="the address the message came from (`web-<session id>`)")
    stream: str = Field(min_length=1, max_length=64, description="one generation of the reply")
    seq: int = Field(ge=0)
    kind: Literal["token", "restart"] = "token"
    text: str = Field(default="", max_length=8000, description="the pieces since the previous chunk, joined")

    def partition_key(self) -> str:
        return self.customer_id  # with the customer's other records: one partition, chunks in order


class Escalation(Record):
    """A turn handed to a human, with the context they need (topic `sf.escalations`)."""

    escalation_id: str
    message_id: str
    conversation_id: str
    customer_id: str
    session_id: str
    channel: Channel
    recipient: str
    recipient_verified: bool = Field(default=False, description="as OutboundMessage's: a human's reply goes there")
    text: str
    reason: str
    detail: str = ""
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    nlu: NluResult | None = None
    sentiment_trend: list[float] = Field(
        default_factory=list, description="the session's recent sentiment scores, oldest first (is it getting worse?)"
    )
    language: str = Field(default="en", description="the customer's language (profile), for the router's matching")
    history: list[HistoryTurn] = Field(default_factory=list)
    profile: CustomerProfile | None = None
    slots: dict[str, str] = Field(default_factory=dict)
    recommended_actions: list[str] = Field(default_factory=list)
    prepared_actions: list[ActionCall] = Field(
        default_factory=list,
        description="actions the agent prepared but may not run alone (e.g. a large refund), in order; an identity "
        "check the turn planned but did not run yet comes first",
    )
    task_intent: str | None = Field(
        default=None, description="the intent of the task the prepared actions belong to (the policy's allow-list)"
    )
    passages: list[Passage] = Field(
        default_factory=list,
        description="what the knowledge base found when it could not answer well enough (reason knowledge_gap)",
    )
    created_at: datetime = Field(default_factory=utcnow)

    def partition_key(self) -> str:
        return self.customer_id


class DeadLetter(Record):
    """A record no operator could handle, kept whole with the reason (topic `sf.dlq`)."""

    dead_letter_id: str
    stage: str
    operator: str
    error_type: str
    error: str
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    original: str = Field(description="the original bytes decoded as UTF-8 with replacement characters")
    original_b64: str = Field(description="the original bytes, exactly, base64-encoded")
    at: datetime = Field(default_factory=utcnow)

    def partition_key(self) -> str | None:
        return self.key


class WebhookEvent(Record):
    """What the agent did, to announce to the tenant's webhook subscribers (topic `sf.webhooks`).

    Written by the tool registry when a write succeeds, delivered by the webhook deliverer in the
    senders' process. `delivery_id` is the action's idempotency key (derived from the task's message
    ids), so a replayed turn records the same id and every attempt, retry and replay carries it.
    `created_at` is fixed here so every attempt sends the same bytes.
    """

    delivery_id: str = Field(min_length=1)
    event_type: str = Field(min_length=1)
    customer_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)

    def partition_key(self) -> str:
        # one customer's events in one partition: a subscriber sees the refund before the cancellation
        return self.customer_id


FeedbackKind = Literal["resolution", "intent_correction", "reply_rating", "csat"]


class Feedback(Record):
    """A human's verdict on a conversation: a resolution, an intent correction, a reply rating or a CSAT answer.

    Topic `sf.feedback`. The sinks store it for training (PostgreSQL, full text) and count it in
    analytics (ClickHouse, without free text). `feedback_id` is derived from the id of the action
    that produced it (a workspace command, a CSAT answer), so a replayed action is one row.
    """

    feedback_id: str
    conversation_id: str
    message_id: str | None = None
    escalation_id: str | None = None
    kind: FeedbackKind
    resolution_code: str | None = None
    original_intent: str | None = None
    corrected_intent: str | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    comment: str = ""
    author: str = Field(description='the agent id, or "customer"')
    agent_id: str | None = None
    channel: Channel | None = None
    handle_time_s: float | None = Field(default=None, ge=0)
    first_response_s: float | None = Field(default=None, ge=0)
    at: datetime = Field(default_factory=utcnow)

    @staticmethod
    def derive_id(source_action_id: str, kind: str = "") -> str:
        """The feedback id of an action: the same action (replayed, retried) always gives the same id.

        `kind` separates several feedback records one action may produce (e.g. a resolve command
        that also corrects the intent).
        """
        basis = f"feedback:{kind}:{source_action_id}" if kind else f"feedback:{source_action_id}"
        return "f-" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:24]

    @staticmethod
    def csat_source_id(conversation_id: str, request_id: str) -> str:
        """The source action id of a CSAT answer: the client's request id within its conversation.

        A retried answer (same request id) is one row; a second answer with a new request id is a
        new row, so analytics may keep the latest per conversation.
        """
        return f"csat:{conversation_id}:{request_id}"

    @classmethod
    def csat(
        cls,
        conversation_id: str,
        rating: int,
        request_id: str,
        comment: str = "",
        channel: Channel | None = None,
        escalation_id: str | None = None,
    ) -> Feedback:
        """A customer's satisfaction answer; its id comes from the request id, so a resent answer is one row."""
        return cls(
            feedback_id=cls.derive_id(cls.csat_source_id(conversation_id, request_id)),
            conversation_id=conversation_id,
            escalation_id=escalation_id,
            kind="csat",
            rating=rating,
            comment=comment,
            author="customer",
            channel=channel,
        )

    def partition_key(self) -> str:
        return self.conversation_id


class _Part(BaseModel):
    """A nested part of a record; versioned with the record that holds it."""

    model_config = ConfigDict(extra="forbid")


class EventMessage(_Part):
    id: str
    content: str
    type: str


class EventEntity(_Part):
    type: str
    value: str
    confidence: float


class EventSentiment(_Part):
    label: str
    score: float


class EventNlu(_Part):
    intent: str
    confidence: float
    entities: list[EventEntity] = Field(default_factory=list)
    sentiment: EventSentiment


class EventAction(_Part):
    type: str
    name: str
    status: str
    result: dict[str, Any] = Field(default_factory=dict)


class EventResponse(_Part):
    content: str
    confidence: float


class EventKnowledge(_Part):
    """What the knowledge base said about the turn, without the passages' text (articles are not PII, the query
    is the message): the workspace lists the conversations that used an article from it, analytics the gaps."""

    confidence: float = Field(description="the retriever's calibrated answerability confidence")
    threshold: float = Field(description="the confidence an answer needed")
    answered: bool = Field(description="the knowledge base answered (a cited reply), else a human or the template")
    cited: list[str] = Field(default_factory=list, description="doc ids the reply sent to the customer quotes")
    found: list[str] = Field(
        default_factory=list,
        description="doc ids of the passages found, best first, each once; a knowledge_gap hand-over carries them",
    )
    domain: str = Field(default="", description="the cited article's domain, else the best passage's ('' if none)")


class EventMetadata(_Part):
    latency_ms: float
    model_used: str = Field(description="the NLU model that read the message")
    cost_usd: float = Field(default=0.0, description="language-model spend on the turn (plan and reply)")
    llm_tier: str = Field(default="", description="the tier that wrote the reply or the plan ('' without an LLM)")
    llm_model: str = ""
    llm_tokens_in: int = 0
    llm_tokens_out: int = 0


class ConversationEvent(Record):
    """One processed turn (or session boundary) for analysts (topic `sf.events`), per the design's event schema."""

    event_id: str
    event_type: Literal["turn_processed", "escalated", "session_closed"]
    timestamp: datetime = Field(default_factory=utcnow)
    conversation_id: str
    session_id: str
    customer_id: str
    channel: str
    message: EventMessage | None = None
    nlu: EventNlu | None = None
    action: EventAction | None = None
    response: EventResponse | None = None
    metadata: EventMetadata
    knowledge: EventKnowledge | None = Field(default=None, description="set when the turn searched the knowledge base")

    def partition_key(self) -> str:
        return self.customer_id


class RawConversationEvent(ConversationEvent):
    """A turn's event before PII redaction (internal topic `sf.events.raw`).

    Only the `redact_pii` operator reads it; analysts get the redacted `ConversationEvent` on
    `sf.events`, so raw customer text stays in the internal topics and the conversation store.
    """
