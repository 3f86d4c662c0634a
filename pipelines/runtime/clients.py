"""The clients operators receive in their context: built here, from the typed settings.

Operators never open connections (`operators/protocols.py`); when one needs an outside system
during `warm_up` it asks this factory, which knows where the system lives. The NER-heavy PII
redactor is built once per process: every stage that asks shares it, and so are the knowledge
base's retriever and its indexer (one embedder model per process, shared by both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.channels import ChannelShaper
from connectors.channels.base import ReplyStyle
from connectors.llm import LlmGateway
from connectors.pii import DEFAULT_ENTITIES, DEFAULT_SCORE_THRESHOLD, PresidioRedactor
from connectors.triton import build_intent_model
from operators.format import Format
from operators.protocols import (
    IntentModel,
    IntentModelOptions,
    KnowledgeIndexOptions,
    KnowledgeOptions,
    PiiRedactor,
    ReplyShaper,
    TokenSink,
)
from pipelines.runtime.knowledge import StoreIndexer, StoreRetriever
from pipelines.runtime.reply_stream import ReplyStreams
from pipelines.runtime.settings import PROJECT_DIR, Settings
from pipelines.runtime.topology import Topology

__all__ = ["RuntimeClients", "reply_shaper_for"]


class RuntimeClients:
    """`operators.protocols.Clients` for the stream workers (and for tools that run operators)."""

    def __init__(self, settings: Settings | None = None, reply_streams: ReplyStreams | None = None) -> None:
        self.settings = settings
        self.reply_streams = reply_streams
        self._redactors: dict[tuple[tuple[str, ...] | None, float | None], PiiRedactor] = {}
        self._knowledge: dict[KnowledgeOptions, StoreRetriever] = {}
        self._indexers: dict[KnowledgeIndexOptions, StoreIndexer] = {}
        self._embedders: dict[tuple[str, str | None], Any] = {}
        self._registry: Any = None
        self._llm: LlmGateway | None = None

    def intent_model(self, options: IntentModelOptions) -> IntentModel:
        settings = self.settings
        repository = options.model_repository or (
            settings.model_repository if settings is not None else PROJECT_DIR / "triton_models"
        )
        return build_intent_model(
            repository,
            options.model_name,
            options.model_version,
            triton_url=options.triton_url or (settings.triton_url if settings is not None else None),
            in_process_fallback=options.in_process_fallback,
            timeout_s=options.timeout_s,
            retries=options.retries,
            max_batch=options.max_batch,
            max_wait_ms=options.max_wait_ms,
            breaker_open_s=options.breaker_open_s,
            max_length=options.max_length,
        )

    def reply_shaper(self, style: Mapping[str, Any]) -> ReplyShaper:
        return ChannelShaper(ReplyStyle(**style))

    def pii_redactor(self, entities: Sequence[str] | None, score_threshold: float | None) -> PiiRedactor:
        key = (tuple(entities) if entities is not None else None, score_threshold)
        if key not in self._redactors:
            self._redactors[key] = PresidioRedactor(
                entities if entities is not None else DEFAULT_ENTITIES,
                score_threshold if score_threshold is not None else DEFAULT_SCORE_THRESHOLD,
            )
        return self._redactors[key]

    def knowledge_retriever(self, options: KnowledgeOptions) -> StoreRetriever | None:
        """The retriever over DATABASE_URL's knowledge base; None without a database.

        The embedder goes through Triton when one is configured (the same model in process behind it),
        in process otherwise; it is the exported `triton_models/text_embedder`, never a download.
        """
        settings = self.settings
        if settings is None or settings.database_url is None:
            return None
        if options not in self._knowledge:
            from connectors.knowledge.embedding import CachedQueryEmbedder
            from connectors.knowledge.retriever import fusion_with_prior

            embedder = self._embedder(options.model_name, options.model_version)
            dsn = settings.database_url.get_secret_value()
            # the articles' sentences `answer` compares with each question are the same all day: each is
            # embedded once per process, not on every question
            cached = CachedQueryEmbedder(embedder)
            self._knowledge[options] = StoreRetriever(
                dsn,
                cached,
                k=options.k,
                pool_size=options.pool_size,
                embedder_for=lambda model_id: CachedQueryEmbedder(self.embedder_for_model(model_id)),
                refresh_s=settings.knowledge_refresh_s,
                fusion=fusion_with_prior(settings.knowledge_prior_weight),
            )
        return self._knowledge[options]

    def knowledge_indexer(self, options: KnowledgeIndexOptions) -> StoreIndexer | None:
        """The writer of DATABASE_URL's knowledge base (the `knowledge` stage's); None without a database.

        It embeds with the retriever's model (one copy per process); its store is opened on the first record.
        """
        settings = self.settings
        if settings is None or settings.database_url is None:
            return None
        if options not in self._indexers:
            embedder = self._embedder(options.model_name, options.model_version)
            self._indexers[options] = StoreIndexer(
                settings.database_url.get_secret_value(),
                embedder,
                index=options.index,
                max_batch=options.max_batch,
                pool_size=options.pool_size,
                embedder_for=self.embedder_for_model,
            )
        return self._indexers[options]

    def embedder_for_model(self, model_id: str) -> Any:
        """The embedder of `model_id` (a live or building index's model after `kb reembed`): this process's
        configured one when it is that model, else the installed model (`connectors/knowledge/models.py`),
        loaded once per process; never a download."""
        for embedder in self._embedders.values():
            if embedder.model_id == model_id:
                return embedder
        if self._registry is None:
            from connectors.knowledge.models import EmbedderRegistry

            assert self.settings is not None
            self._registry = EmbedderRegistry(
                self.settings.model_repository, triton_url=self.settings.triton_url, threads=1
            )
        return self._registry(model_id)

    def _embedder(self, model_name: str, model_version: str | None) -> Any:
        """The exported text embedder, through Triton when one is configured (the same model in process behind
        it), in process otherwise; never a download. One per model per process."""
        key = (model_name, model_version)
        if key not in self._embedders:
            from connectors.knowledge.triton_embedder import build_embedder

            assert self.settings is not None
            # one onnxruntime thread: the workers share the machine's cores with the broker and the stores
            self._embedders[key] = build_embedder(
                self.settings.model_repository,
                self.settings.triton_url,
                model_name=model_name,
                model_version=model_version,
                intra_op_threads=1,
            )
        return self._embedders[key]

    def language_model(self) -> LlmGateway | None:
        """One gateway per process over `llm_tiers` (shared cache, spend meters and connections); None without."""
        settings = self.settings
        if settings is None or not settings.llm_tiers:
            return None
        if self._llm is None:
            self._llm = LlmGateway(
                settings.llm_tiers, cache_size=settings.llm_cache_size, cache_ttl_s=settings.llm_cache_ttl_s
            )
        return self._llm

    def reply_stream(self, message: Any) -> TokenSink | None:
        """A sink that puts `message`'s reply, as generated, on `sf.reply.stream` (pipelines/runtime/reply_stream.py);
        None (the reply reaches the customer whole, by `emit`) without streams or for a channel not streamed to."""
        return self.reply_streams.sink_for(message) if self.reply_streams is not None else None

    async def close(self) -> None:
        """Close the pools the clients opened (the knowledge base's, the model endpoints')."""
        retrievers, self._knowledge = list(self._knowledge.values()), {}
        for retriever in retrievers:
            await retriever.close()
        indexers, self._indexers = list(self._indexers.values()), {}
        for indexer in indexers:
            await indexer.close()
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await llm.close()
        if self.reply_streams is not None:
            self.reply_streams.close()


def reply_shaper_for(topology: Topology, clients: RuntimeClients) -> ReplyShaper:
    """The shaper with the style of the topology's `format` operator: replies from outside the stream
    (a human's, the router's notices) are shaped exactly like the agent's."""
    fmt = topology.operator(Format)
    return clients.reply_shaper(fmt.config.model_dump() if fmt is not None else {})
