"""What a caller asks of a model and what it gets back, independent of any provider."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ChatRequest", "Completion", "TierFailure", "TokenSink", "ToolCall"]


class TokenSink(Protocol):
    """Receives a reply as the model streams it (the web chat shows the reply as it grows)."""

    async def token(self, text: str) -> None:
        """The next piece of the reply."""
        ...

    async def restart(self) -> None:
        """Forget what was streamed: the tier failed mid-reply and the next tier starts over."""
        ...


@dataclass(frozen=True)
class ChatRequest:
    """OpenAI chat messages (`{"role", "content"}`), the tools offered (OpenAI function specs) and the sources.

    `sources` are the texts the reply must be grounded in; they are part of the cache key, so the same
    question over changed passages or tool results is asked again.
    """

    messages: tuple[dict[str, str], ...]
    tools: tuple[dict[str, Any], ...] = ()
    sources: tuple[str, ...] = ()
    purpose: str = "reply"

    def cache_key(self, model: str) -> str:
        blob = json.dumps([model, self.messages, self.tools, self.sources], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def prompt_chars(self) -> int:
        return sum(len(m.get("content") or "") for m in self.messages) + len(json.dumps(self.tools))


@dataclass(frozen=True)
class ToolCall:
    """A tool call as the model proposed it: `arguments` is the raw JSON text, unparsed and untrusted."""

    name: str
    arguments: str


@dataclass(frozen=True)
class TierFailure:
    tier: str
    reason: str  # timeout | error | budget | prompt_too_long | empty | not_configured
    detail: str = ""  # what went wrong, for a person (`supportflow llm check`); never a key


@dataclass(frozen=True)
class Completion:
    """One model answer with what it cost; `failures` lists the tiers tried before it and why they failed."""

    text: str
    tier: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_ms: float
    first_token_ms: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    cached: bool = False
    truncated: bool = False
    failures: tuple[TierFailure, ...] = field(default=())
