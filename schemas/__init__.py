"""The records that flow between supportflow's operators and topics: the contract of the system."""

from __future__ import annotations

from schemas._base import Record
from schemas.agent import (
    VERIFY_TOOL,
    ActionCall,
    ActionResult,
    GuardVerdict,
    KnowledgeUse,
    LlmUsage,
    Plan,
    Reply,
    RouteDecision,
    RouteReason,
)
from schemas.inbound import CHANNEL_META_KEYS, CHANNELS, Channel, Message, RawInbound, utcnow
from schemas.knowledge import KnowledgeApplied, KnowledgeDocument, KnowledgeRecord
from schemas.nlu import Entity, NluResult, Sentiment
from schemas.outbound import (
    ConversationEvent,
    DeadLetter,
    Escalation,
    EventAction,
    EventEntity,
    EventKnowledge,
    EventMessage,
    EventMetadata,
    EventNlu,
    EventResponse,
    EventSentiment,
    Feedback,
    FeedbackKind,
    OutboundMessage,
    RawConversationEvent,
    ReplyChunk,
    WebhookEvent,
)
from schemas.profile import ContactAddress, CustomerProfile, LifetimeSummary, contact_key
from schemas.provider import STATUS_RANK, CallRecording, DeliveryStatus
from schemas.session import HistoryTurn, SessionContext, TaskState
from schemas.turn import (
    AuthorizedTurn,
    ContextTurn,
    Emitted,
    ExecutedTurn,
    FormattedTurn,
    GuardedTurn,
    HandOver,
    NluTurn,
    PlannedTurn,
    RoutedTurn,
)
from schemas.workspace import AgentSpec, AgentState, Presence, QueueEntry, RouterCommand, WorkspaceState

__all__ = [
    "CHANNELS",
    "CHANNEL_META_KEYS",
    "STATUS_RANK",
    "VERIFY_TOOL",
    "ActionCall",
    "ActionResult",
    "AgentSpec",
    "AgentState",
    "AuthorizedTurn",
    "CallRecording",
    "Channel",
    "ContactAddress",
    "ContextTurn",
    "ConversationEvent",
    "CustomerProfile",
    "DeadLetter",
    "DeliveryStatus",
    "Emitted",
    "Entity",
    "Escalation",
    "EventAction",
    "EventEntity",
    "EventKnowledge",
    "EventMessage",
    "EventMetadata",
    "EventNlu",
    "EventResponse",
    "EventSentiment",
    "ExecutedTurn",
    "Feedback",
    "FeedbackKind",
    "FormattedTurn",
    "GuardVerdict",
    "GuardedTurn",
    "HandOver",
    "HistoryTurn",
    "KnowledgeApplied",
    "KnowledgeDocument",
    "KnowledgeRecord",
    "KnowledgeUse",
    "LifetimeSummary",
    "LlmUsage",
    "Message",
    "NluResult",
    "NluTurn",
    "OutboundMessage",
    "Plan",
    "PlannedTurn",
    "Presence",
    "QueueEntry",
    "RawConversationEvent",
    "RawInbound",
    "Record",
    "Reply",
    "ReplyChunk",
    "RouteDecision",
    "RouteReason",
    "RoutedTurn",
    "RouterCommand",
    "Sentiment",
    "SessionContext",
    "TaskState",
    "WebhookEvent",
    "WorkspaceState",
    "contact_key",
    "record_types",
    "utcnow",
]


def record_types() -> dict[str, type[Record]]:
    """Every record class by name: what topology.yaml may name and `schemas export` writes."""
    return {
        name: obj
        for name, obj in globals().items()
        if isinstance(obj, type) and issubclass(obj, Record) and obj is not Record
    }
