"""The interfaces connectors offer the runtime, in one place (the operator-facing ones are in
`operators/protocols.py`).

Each has an embedded implementation (in process, no server) and a production one (a server
reached by URL); the runtime and the tests only ever see these Protocols.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas import ConversationEvent


@dataclass(frozen=True)
class Decision:
    """A rate limiter's answer: admit now, or refuse and say when to retry."""

    allowed: bool
    retry_after_s: float = 0.0


class RateLimiter(Protocol):
    """Per-channel token buckets shared by every ingress replica that uses the same backend."""

    async def allow(self, channel: str, sender: str) -> Decision: ...

    async def close(self) -> None: ...


class EventStore(Protocol):
    """The analytics table of `sf.events` (ClickHouse, or chdb in process).

    `insert` is idempotent by event id: a retried or replayed batch changes no count.
    """

    async def migrate(self) -> None: ...

    async def insert(self, events: Sequence[ConversationEvent]) -> int: ...

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


class Redactor(Protocol):
    """Replaces PII in texts with typed placeholders such as `<EMAIL_ADDRESS>`."""

    def warm_up(self) -> None: ...

    def redact_many(self, texts: Sequence[str]) -> list[str]: ...


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
    "Decision",
    "EventStore",
    "IntentModel",
    "RateLimiter",
    "Redactor",
    "SnapshotCache",
]
