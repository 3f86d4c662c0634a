"""The interfaces connectors offer the runtime, in one place (the operator-facing ones are in
`operators/protocols.py`).

Each has an embedded implementation (in process, no server) and a production one (a server
reached by URL); the runtime and the tests only ever see these Protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas import ConversationEvent, DeadLetter, Feedback


@dataclass(frozen=True)
class Decision:
    """A rate limiter's answer: admit now, or refuse and say when to retry."""

    allowed: bool
    retry_after_s: float = 0.0


class RateLimiter(Protocol):
    """Per-channel token buckets shared by every ingress replica that uses the same backend."""

    async def allow(self, channel: str, sender: str) -> Decision: ...

    async def close(self) -> None: ...


class SessionRevocations(Protocol):
    """Web chat sessions ended by a logout: every ingress replica refuses their tokens until they expire."""

    async def revoke(self, session_id: str, ttl_s: float) -> None: ...

    async def revoked(self, session_id: str) -> bool: ...

    async def close(self) -> None: ...


class EventStore(Protocol):
    """The analytics tables of `sf.events` and `sf.feedback` (ClickHouse, or chdb in process).

    `insert` takes either record type (each goes to its table) and is idempotent by record id:
    a retried or replayed batch changes no count.
    """

    async def migrate(self) -> None: ...

    async def insert(self, records: Sequence[ConversationEvent | Feedback]) -> int: ...

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


class ConversationStore(Protocol):
    """The durable conversation store (PostgreSQL): every record upserted by its id."""

    async def migrate(self) -> list[str]: ...

    async def write(self, topic: str, records: Sequence[Any]) -> int: ...

    async def close(self) -> None: ...


class SnapshotCache(Protocol):
    """A short-lived cache of conversation snapshots for the web pages."""

    async def get(self, conversation_id: str) -> dict[str, Any] | None: ...

    async def put(self, conversation_id: str, snapshot: dict[str, Any], ttl_s: float) -> None: ...

    async def close(self) -> None: ...


class ToolError(Exception):
    """An action that did not happen, and why, in words safe to show the customer.

    `kind` decides what the agent does next: `not_found` (nothing matched — also what a caller
    gets for another customer's order, so nothing is revealed), `not_allowed` (the business rule
    says no, e.g. an order already shipped), `invalid` (bad arguments), `unavailable` (the backend
    failed or timed out; retrying may help).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class ToolCall:
    """One call of a backend action, on behalf of one customer.

    `idempotency_key` is derived from the message ids of the task (never random), so a replayed
    turn repeats the same key and a write action happens once. `source` is the channel address the
    request came from (`<channel>:<sender>`), set like `customer_id` by the runtime from the message,
    never from the arguments: the identity check counts failures against it.
    """

    name: str
    arguments: dict[str, Any]
    customer_id: str
    idempotency_key: str
    source: str | None = None


class Tool(Protocol):
    """A backend action the agent may call: CRM, orders, payments, a tenant's REST API.

    `writes` marks actions that change something (they need a confirmation and an idempotency
    key). `call` returns a JSON-able result or raises `ToolError`; it never acts for another
    customer than `call.customer_id`.
    """

    name: str
    writes: bool
    description: str

    async def call(self, call: ToolCall) -> dict[str, Any]: ...


class DeadLetterSink(Protocol):
    """Where work that failed for good is kept whole with its reason, for a human to replay or drop.

    It takes the same `DeadLetter` record the stages write, so one reader serves every failure.
    """

    async def send(self, letter: DeadLetter) -> None: ...

    async def close(self) -> None: ...


class IntentModel(Protocol):
    """A served intent classifier: token ids in, one row of logits per text out.

    `model_used` names who answers, e.g. `triton:intent_classifier:1` or
    `onnxruntime:intent_classifier:1` (connectors/triton/client.py).
    """

    model_used: str

    async def logits(self, input_ids: Any, attention_mask: Any) -> Any: ...

    async def close(self) -> None: ...


__all__ = [
    "ConversationStore",
    "DeadLetterSink",
    "Decision",
    "EventStore",
    "IntentModel",
    "RateLimiter",
    "SnapshotCache",
    "Tool",
    "ToolCall",
    "ToolError",
]
