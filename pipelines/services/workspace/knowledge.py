"""The knowledge base as supervisors see it in the workspace: search it as the agent does, preview an article.

One retriever per workspace process, the stream workers' own (`RuntimeClients.knowledge_retriever`: the
same embedder build, the same `HybridRetriever` over DATABASE_URL), built on the first search so a
workspace whose database is down or whose knowledge base is empty still starts and serves the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import asyncpg

from connectors.knowledge.pgvector import DocumentView
from operators.protocols import KnowledgeOptions
from operators.retrieve import Retrieve, RetrieveConfig
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.knowledge import KnowledgeUnavailable, StoreRetriever
from pipelines.runtime.topology import Topology
from pipelines.services.workspace.requests import WorkspaceError
from schemas.text import refused_character

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500
MAX_DOC_ID_CHARS = 512  # KnowledgeDocument.doc_id's limit
MAX_PAGE = 100  # conversations per page of an article's uses
DEFAULT_PAGE = 20
USES_TIMEOUT_S = 10.0
SEARCH_TIMEOUT_S = 15.0  # the first search also builds the lexical index over every visible chunk
# what a database that is down, restarting or not migrated raises through asyncpg
UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

ArticleUses = Callable[[str, int, int], Awaitable[dict[str, Any]]]
"""(doc_id, limit, offset) → {"total", "conversations"}: `PostgresStore.article_conversations`."""


class WorkspaceKnowledge:
    """Search and article preview over the knowledge base the `retrieve` operator searches."""

    def __init__(
        self,
        clients: RuntimeClients,
        options: KnowledgeOptions,
        domains: Sequence[str] = (),
        uses: ArticleUses | None = None,
    ) -> None:
        self.clients = clients
        self.options = options
        self.domains = tuple(domains)
        self.uses = uses
        self._retriever: StoreRetriever | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_topology(
        cls, topology: Topology, clients: RuntimeClients, uses: ArticleUses | None = None
    ) -> WorkspaceKnowledge:
        """With the topology's `retrieve` settings (its model, k and domains): the passages the agent would use."""
        retrieve = topology.operator(Retrieve)
        cfg = cast(RetrieveConfig, retrieve.config) if retrieve is not None else RetrieveConfig()
        return cls(clients, KnowledgeOptions(model_name=cfg.model_name, k=cfg.k), cfg.domains, uses)

    async def retriever(self) -> StoreRetriever:
        if self._retriever is not None:
            return self._retriever
        async with self._lock:
            if self._retriever is None:
                try:
                    # loading the model takes a moment: off the event loop that carries the queue's live updates
                    built = await asyncio.to_thread(self.clients.knowledge_retriever, self.options)
                except (OSError, ImportError, ValueError) as exc:
                    log.error("workspace: no knowledge base embedder: %s", exc)
                    raise WorkspaceError(503, f"the knowledge base cannot be searched here: {exc}") from None
                if built is None:
                    raise WorkspaceError(503, "no knowledge base is configured: the workspace has no DATABASE_URL")
                self._retriever = built
            return self._retriever

    async def search(self, query: str) -> dict[str, Any]:
        """The passages the agent would answer `query` from, and whether it would answer or hand over."""
        text = " ".join(query.split())
        if not text:
            raise WorkspaceError(400, "type a question or a few words to search for (parameter q)")
        if len(text) > MAX_QUERY_CHARS:
            raise WorkspaceError(400, f"a search is at most {MAX_QUERY_CHARS} characters; this one has {len(text)}")
        _check_characters(text, "a search")
        retriever = await self.retriever()
        try:
            result = await asyncio.wait_for(retriever.retrieve(text, domains=self.domains), SEARCH_TIMEOUT_S)
        except KnowledgeUnavailable as exc:
            raise WorkspaceError(503, f"the knowledge base cannot answer: {exc}") from None
        except UNREACHABLE as exc:
            log.warning("workspace: knowledge search failed: %r", exc)
            raise WorkspaceError(503, "the knowledge base is unreachable just now; try again shortly") from None
        return {
            "query": result.query,
            "confidence": result.confidence,
            "threshold": result.threshold,
            "answerable": result.answerable,
            "passages": [passage.model_dump(mode="json") for passage in result.passages],
        }

    async def article(self, doc_id: str) -> dict[str, Any]:
        """The article as the agent answers from it: the version its domain's live release holds."""
        if not doc_id or len(doc_id) > MAX_DOC_ID_CHARS:
            raise WorkspaceError(400, f"an article id has 1 to {MAX_DOC_ID_CHARS} characters")
        _check_characters(doc_id, "an article id")
        store = (await self.retriever()).store
        try:
            view = await store.get_document(doc_id)
            if view is None:
                raise WorkspaceError(404, f"no article {doc_id!r} in the knowledge base")
            live = await store.live_release(view.domain)
            if live is not None and live.release_id not in view.releases:
                # the head was edited (or deleted) after the live release: the agent still quotes the released text
                view = await store.get_document(doc_id, live.release_id) or view
        except UNREACHABLE as exc:
            log.warning("workspace: article %r not read: %r", doc_id, exc)
            raise WorkspaceError(503, "the knowledge base is unreachable just now; try again shortly") from None
        if view.deleted:
            raise WorkspaceError(404, f"article {doc_id!r} was deleted from the knowledge base")
        released = live is not None and live.release_id in view.releases
        return _article(view, live.release_id if released and live is not None else None)

    async def conversations(self, doc_id: str, limit: str | None, offset: str | None) -> dict[str, Any]:
        """The conversations whose replies cited the article or whose hand-overs carried it, newest first, paged.

        Read from the conversation store (`knowledge_uses`), not the knowledge base: an article deleted or
        edited since keeps the conversations that used it, so an unknown id is an empty list, not a 404.
        """
        if not doc_id or len(doc_id) > MAX_DOC_ID_CHARS:
            raise WorkspaceError(400, f"an article id has 1 to {MAX_DOC_ID_CHARS} characters")
        _check_characters(doc_id, "an article id")
        page = _whole(limit, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        start = _whole(offset, "offset", 0, 0, 10**9)
        if self.uses is None:
            raise WorkspaceError(503, "no conversation store is configured: the workspace has no DATABASE_URL")
        try:
            found = await asyncio.wait_for(self.uses(doc_id, page, start), USES_TIMEOUT_S)
        except UNREACHABLE as exc:
            log.warning("workspace: conversations of article %r not read: %r", doc_id, exc)
            raise WorkspaceError(503, "the conversation store is unreachable just now; try again shortly") from None
        rows = found["conversations"]
        following = start + len(rows)
        return {
            "doc_id": doc_id,
            "total": found["total"],
            "limit": page,
            "offset": start,
            "next_offset": following if following < found["total"] else None,
            "conversations": [_use(row) for row in rows],
        }


def _whole(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise WorkspaceError(400, f"{name} is a whole number from {low} to {high}; got {text[:40]!r}") from None
    if not low <= value <= high:
        raise WorkspaceError(400, f"{name} is a whole number from {low} to {high}; got {value}")
    return value


def _use(row: dict[str, Any]) -> dict[str, Any]:
    # handed over wins: a conversation whose reply cited the article and that later went to a human with it
    # needed the human in the end
    outcome = "handed_over" if row["handed_over"] else "answered"
    return {
        "conversation_id": row["conversation_id"],
        "customer_id": row["customer_id"],
        "at": row["last_used_at"].isoformat(),
        "channel": row["channel"],
        "intent": row["intent"],
        "confidence": row["confidence"],
        "outcome": outcome,
        "cited": row["cited"],
        "handed_over": row["handed_over"],
        "uses": row["uses"],
        "escalation_id": row["escalation_id"],
    }


def _check_characters(text: str, what: str) -> None:
    # PostgreSQL refuses U+0000 in text: without this it would read as an unreachable knowledge base
    refused = refused_character(text)
    if refused is not None:
        raise WorkspaceError(400, f"{what} may not contain the control character {refused}")


def _article(view: DocumentView, release: str | None) -> dict[str, Any]:
    return {
        "doc_id": view.doc_id,
        "title": view.title,
        "url": view.url,
        "section": view.section,
        "domain": view.domain,
        "language": view.language,
        "release": release,
        "updated_at": view.updated_at.isoformat() if view.updated_at else None,
        # a document written as chunks only (an export without a body) reads as its chunks, in order
        "text": view.body if view.body is not None else "\n\n".join(text for _, _, text in view.chunks),
    }
