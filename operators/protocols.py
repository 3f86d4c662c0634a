"""The interfaces operators receive their collaborators through, in one place.

Operators never open connections: the runtime builds their clients from typed settings
(`pipelines/runtime/clients.py`) and passes them in the context; a unit test passes its own.
The connectors satisfy these Protocols structurally, so no operator imports a concrete client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from schemas.knowledge import KnowledgeDocument, Passage

__all__ = [
    "Clients",
    "Clock",
    "DictTable",
    "IntentModel",
    "IntentModelOptions",
    "IntentPrediction",
    "KeepsSessions",
    "KnowledgeChange",
    "KnowledgeIndexOptions",
    "KnowledgeIndexer",
    "KnowledgeOptions",
    "KnowledgeRelease",
    "KnowledgeRetrieval",
    "KnowledgeRetriever",
    "LanguageModel",
    "LlmAnswer",
    "OperatorContext",
    "PiiRedactor",
    "ReplyShaper",
    "StateTable",
    "TokenSink",
    "ToolSource",
]

V = TypeVar("V")


@runtime_checkable
class StateTable(Protocol[V]):
    """Keyed state scoped to the partition of the record being processed."""

    def get(self, key: str) -> V | None: ...

    def set(self, key: str, value: V) -> None: ...


class ToolSource(Protocol):
    """Where operators find backend actions by name (`connectors.backends.registry.ToolRegistry`).

    Returns a `connectors.protocols.Tool`, or None when no connector offers that name.
    """

    async def get(self, name: str) -> Any: ...


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime: ...


class IntentPrediction(Protocol):
    """One text's intent as a served classifier answers it (`connectors.triton.Prediction`)."""

    @property
    def intent(self) -> str: ...

    @property
    def confidence(self) -> float: ...

    @property
    def model_used(self) -> str: ...

    @property
    def alternatives(self) -> list[tuple[str, float]]: ...

    @property
    def available(self) -> bool: ...

    @property
    def oos_score(self) -> float | None:
        """The model's out-of-scope score (higher: less like any trained intent); None when it has none."""
        ...


class IntentModel(Protocol):
    """A served intent classifier (`connectors.triton.FallbackIntentModel`); concurrent calls batch."""

    @property
    def oos_threshold(self) -> float: ...

    @property
    def oos_score_threshold(self) -> float | None: ...

    async def classify(self, text: str) -> IntentPrediction: ...

    async def close(self) -> None: ...


class PiiRedactor(Protocol):
    """Replaces PII in texts by placeholders (`connectors.pii.PresidioRedactor`); blocking, batched."""

    def warm_up(self) -> None: ...

    def redact_many(self, texts: Sequence[str]) -> list[str]: ...


class ReplyShaper(Protocol):
    """Shapes a reply for its channel (`connectors.channels.ChannelShaper`): segments, limits, markup."""

    def shape(self, channel: str, text: str) -> dict[str, Any]:
        """The OutboundMessage fields that depend on the channel: text, parts, content_format, subject, html."""
        ...


@dataclass(frozen=True)
class IntentModelOptions:
    """What an operator asks of its intent model; unset fields take the application's settings."""

    triton_url: str | None = None
    model_repository: Path | None = None
    model_name: str = "intent_classifier"
    model_version: str | None = None
    in_process_fallback: bool = True
    max_batch: int = 32
    max_wait_ms: float = 5.0
    timeout_s: float = 1.0
    retries: int = 1
    breaker_open_s: float = 5.0
    max_length: int | None = None


class KnowledgeRetrieval(Protocol):
    """One query's result (`connectors.knowledge.retriever.Retrieval`)."""

    @property
    def query(self) -> str: ...

    @property
    def passages(self) -> list[Passage]: ...

    @property
    def confidence(self) -> float: ...

    @property
    def threshold(self) -> float: ...

    @property
    def answerable(self) -> bool: ...


class KnowledgeRetriever(Protocol):
    """The tenant's knowledge base as operators search it (`pipelines.runtime.knowledge.StoreRetriever`).

    Both calls raise when the store cannot answer (unreachable, empty, another embedding model):
    the caller decides what a turn gets instead.
    """

    async def retrieve(
        self, query: str, *, history: Sequence[str] = (), k: int | None = None, domains: Sequence[str] = ()
    ) -> KnowledgeRetrieval:
        """The best passages for `query`; `history`: the customer's earlier turns, oldest first."""
        ...

    async def article(self, doc_id: str) -> list[Passage]:
        """Every passage of a live document, in its order (empty when it is not live)."""
        ...

    async def similarities(self, query: str, texts: Sequence[str]) -> list[float]:
        """Cosine similarity of each text to the query, by the retriever's embedder."""
        ...

    def terms(self, text: str) -> list[str]:
        """The words a search matches `text` on (lower-cased, stop words out, stemmed), as its lexical side reads it."""
        ...


@dataclass(frozen=True)
class KnowledgeOptions:
    """What an operator asks of the knowledge base; unset fields take the application's settings."""

    model_name: str = "text_embedder"
    model_version: str | None = None
    k: int = 5
    pool_size: int = 2


@dataclass(frozen=True)
class KnowledgeIndexOptions:
    """What the `knowledge` stage asks of the knowledge store it writes; unset fields take the settings."""

    model_name: str = "text_embedder"
    model_version: str | None = None
    index: str | None = None  # also written besides the live and building indexes; unset: those only
    max_batch: int = 32  # chunks embedded per call to the model
    pool_size: int = 2


class KnowledgeChange(Protocol):
    """What applying one document or tombstone did (`pipelines.knowledge.ingest.ApplyResult`)."""

    @property
    def action(self) -> str:
        """added, changed, unchanged, deleted or absent."""
        ...

    @property
    def chunks(self) -> int: ...

    @property
    def embedded(self) -> int: ...


@dataclass(frozen=True)
class KnowledgeRelease:
    """A domain's release after a publish: its id (None: the domain never had a document), whether it is new."""

    release_id: str | None
    created: bool


class KnowledgeIndexer(Protocol):
    """The knowledge store as the `knowledge` stage writes it (`pipelines.runtime.knowledge.StoreIndexer`): the
    idempotent units of work of an ingest with this process's embedder and store. Each call may be repeated
    (a redelivered record) and changes nothing the second time. A store that is away is waited for; an error
    raised is the record's own (it cannot be applied) and dead-letters it."""

    async def apply_document(self, document: KnowledgeDocument) -> KnowledgeChange: ...

    async def apply_tombstone(self, doc_id: str) -> KnowledgeChange: ...

    async def publish_release(self, domain: str, note: str | None = None) -> KnowledgeRelease:
        """Cut a release of `domain` from its head and make it live, unless the head equals its latest release."""
        ...


class TokenSink(Protocol):
    """Where a reply goes while it is generated (the web chat's socket); the final text still goes by `emit`."""

    async def token(self, text: str) -> None: ...

    async def restart(self) -> None:
        """The tier failed mid-reply: what was shown is void, the next tier starts over."""
        ...


class LlmToolCall(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def arguments(self) -> str:
        """The raw JSON the model wrote: untrusted, unparsed."""
        ...


class LlmTierFailure(Protocol):
    @property
    def tier(self) -> str: ...

    @property
    def reason(self) -> str: ...


class LlmAnswer(Protocol):
    """One model answer and its cost (`connectors.llm.Completion`)."""

    @property
    def text(self) -> str: ...

    @property
    def tier(self) -> str: ...

    @property
    def model(self) -> str: ...

    @property
    def tokens_in(self) -> int: ...

    @property
    def tokens_out(self) -> int: ...

    @property
    def cost_usd(self) -> float: ...

    @property
    def latency_ms(self) -> float: ...

    @property
    def cached(self) -> bool: ...

    @property
    def truncated(self) -> bool: ...

    @property
    def tool_calls(self) -> Sequence[LlmToolCall]: ...

    @property
    def failures(self) -> Sequence[LlmTierFailure]: ...


class LanguageModel(Protocol):
    """The configured language models as tiers (`connectors.llm.LlmGateway`); never raises for a model."""

    @property
    def tier_names(self) -> list[str]: ...

    async def chat(
        self,
        tiers: Sequence[str],
        messages: Sequence[Mapping[str, str]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        sources: Sequence[str] = (),
        sink: TokenSink | None = None,
    ) -> LlmAnswer | None:
        """The first of `tiers` to answer, or None when none did (the caller's non-LLM path)."""
        ...


class Clients(Protocol):
    """The factory of outside-system clients the runtime offers operators during `warm_up`."""

    def intent_model(self, options: IntentModelOptions) -> IntentModel: ...

    def reply_shaper(self, style: Mapping[str, Any]) -> ReplyShaper:
        """`style`: the format operator's settings (email_signature, whatsapp_limit, slack_limit, voice_limit)."""
        ...

    def pii_redactor(self, entities: Sequence[str] | None, score_threshold: float | None) -> PiiRedactor:
        """None: the redactor's own defaults."""
        ...

    def knowledge_retriever(self, options: KnowledgeOptions) -> KnowledgeRetriever | None:
        """The knowledge base's retriever, one per process; None when no knowledge store is configured."""
        ...

    def knowledge_indexer(self, options: KnowledgeIndexOptions) -> KnowledgeIndexer | None:
        """The knowledge store's writer, one per process; None when no knowledge store is configured."""
        ...

    def language_model(self) -> LanguageModel | None:
        """The configured LLM tiers, one gateway per process; None when no tier is configured."""
        ...

    def reply_stream(self, message: Any) -> TokenSink | None:
        """Where `message`'s reply is streamed while generated (its web chat session); None: not streamed."""
        ...


@runtime_checkable
class KeepsSessions(Protocol):
    """An operator that opens sessions says when one is idle: the runtime's reaper closes those."""

    @property
    def session_idle_limit(self) -> timedelta: ...


class DictTable(dict[str, Any]):
    """A StateTable over a plain dict: for unit tests and one-off tools, never for the stream."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value


@dataclass
class OperatorContext:
    """What an operator may use besides its input record.

    `tables` holds the runtime's state tables by name (`sessions`, `identities`, `seen`); `clock`
    is injectable for tests; `tools` is the backend actions' registry (`ToolSource`); `clients`
    builds the outside systems' clients (models, redaction) from the application's settings.
    """

    tables: Mapping[str, StateTable[Any]]
    clock: Clock
    tools: ToolSource | None = None
    clients: Clients | None = field(default=None)

    def table(self, name: str) -> StateTable[Any]:
        try:
            return self.tables[name]
        except KeyError:
            raise LookupError(f"state table {name!r} is not configured; known: {sorted(self.tables)}") from None

    def require_clients(self, operator: str) -> Clients:
        if self.clients is None:
            raise LookupError(f"{operator} needs the runtime's clients; the context carries none")
        return self.clients
