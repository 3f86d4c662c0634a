"""The `VectorStore` on Weaviate (weaviate-client v4, async): one collection per embedding index.

Each chunk is an object whose uuid derives from its `chunk_id` (uuid5), so a replayed upsert
overwrites the object with itself. Vectors are self-provided (the project embeds; Weaviate
never calls a model), indexed by HNSW with cosine distance; lexical search is Weaviate's BM25
over title, headings and text.

Releases live in PostgreSQL (`PgVectorStore`): this adapter serves the head (each document's
latest version) only, and refuses a search that names a release rather than ignoring it.
No Weaviate server runs on the project's test machines (its embedded mode downloads a binary):
the contract tests run it when `WEAVIATE_URL` is set.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from connectors.knowledge.protocols import SearchFilters
from schemas.knowledge import Chunk, Passage

with warnings.catch_warnings():
    # authlib, imported by the client, warns about httpx at import; nothing here uses it
    warnings.simplefilter("ignore")
    import weaviate
    from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
    from weaviate.classes.data import DataObject
    from weaviate.classes.query import Filter, MetadataQuery
    from weaviate.util import generate_uuid5

__all__ = ["WeaviateStore", "collection_name"]

_PROPERTIES = (
    ("chunk_id", DataType.TEXT),
    ("doc_id", DataType.TEXT),
    ("content_hash", DataType.TEXT),
    ("ordinal", DataType.INT),
    ("text", DataType.TEXT),
    ("headings", DataType.TEXT_ARRAY),
    ("title", DataType.TEXT),
    ("url", DataType.TEXT),
    ("section", DataType.TEXT),
    ("domain", DataType.TEXT),
    ("language", DataType.TEXT),
)
# identifiers are matched exactly, never tokenised into words
_EXACT = {"chunk_id", "doc_id", "content_hash", "url", "domain", "language"}


def collection_name(index: str) -> str:
    """A Weaviate class name (capitalised, alphanumerics and underscores) for an index name."""
    return "KbChunks_" + (re.sub(r"[^A-Za-z0-9]+", "_", index).strip("_") or "index")


class WeaviateStore:
    """`VectorStore` on a Weaviate server; `await WeaviateStore.connect(url)` then `ensure_index`."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    async def connect(cls, url: str, grpc_port: int = 50051, api_key: str | None = None) -> WeaviateStore:
        """Connect to `url` (http(s)://host:port) with gRPC on `grpc_port` of the same host."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WEAVIATE_URL must be http(s)://host[:port], not {url!r}")
        secure = parts.scheme == "https"
        client = weaviate.use_async_with_custom(
            http_host=parts.hostname,
            http_port=parts.port or (443 if secure else 80),
            http_secure=secure,
            grpc_host=parts.hostname,
            grpc_port=grpc_port,
            grpc_secure=secure,
            auth_credentials=api_key,
        )
        await client.connect()
        return cls(client)

    async def ensure_index(self, name: str, model_id: str, dimension: int) -> None:
        """Create the index's collection if new; an existing one must hold the same model's vectors."""
        collection = collection_name(name)
        description = f"supportflow knowledge index {name}: model_id={model_id} dimension={dimension}"
        if await self._client.collections.exists(collection):
            config = await self._client.collections.get(collection).config.get()
            if config.description != description:
                raise ValueError(f"index {name!r} was made for another model: {config.description}")
            return
        await self._client.collections.create(
            collection,
            description=description,
            properties=[
                Property(name=prop, data_type=kind, skip_vectorization=True, tokenization=_tokenization(prop, kind))
                for prop, kind in _PROPERTIES
            ],
            vector_config=Configure.Vectors.self_provided(
                vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
            ),
        )

    async def drop_index(self, name: str) -> None:
        await self._client.collections.delete(collection_name(name))

    def _collection(self, index: str) -> Any:
        return self._client.collections.get(collection_name(index))

    async def upsert(self, index: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> int:
        """Write chunks by their ids; a document's chunks of other versions are removed (the head
        holds one version per document)."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        collection = self._collection(index)
        objects = [
            DataObject(
                uuid=generate_uuid5(chunk.chunk_id),
                properties={
                    "chunk_id": chunk.chunk_id,
                    "doc_id": chunk.doc_id,
                    "content_hash": chunk.content_hash,
                    "ordinal": chunk.ordinal,
                    "text": chunk.text,
                    "headings": chunk.headings,
                    "title": chunk.title,
                    "url": chunk.url or "",
                    "section": chunk.section or "",
                    "domain": chunk.domain,
                    "language": chunk.language,
                },
                vector=np.asarray(vector, dtype=np.float32).tolist(),
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        result = await collection.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(f"Weaviate refused {len(result.errors)} chunk(s): {first.message}")
        for doc_id, content_hash in sorted({(c.doc_id, c.content_hash) for c in chunks}):
            await collection.data.delete_many(
                where=Filter.by_property("doc_id").equal(doc_id)
                & Filter.by_property("content_hash").not_equal(content_hash)
            )
        return len(chunks)

    async def delete_document(self, index: str, doc_id: str) -> int:
        result = await self._collection(index).data.delete_many(where=Filter.by_property("doc_id").equal(doc_id))
        return int(result.successful)

    def _filters(self, filters: SearchFilters | None) -> Any:
        filters = filters or SearchFilters()
        if filters.release is not None:
            raise NotImplementedError("releases are kept in PostgreSQL; the Weaviate store serves the head only")
        clauses = []
        if filters.domains:
            clauses.append(Filter.by_property("domain").contains_any(list(filters.domains)))
        if filters.language:
            clauses.append(Filter.by_property("language").equal(filters.language))
        if not clauses:
            return None
        combined = clauses[0]
        for clause in clauses[1:]:
            combined = combined & clause
        return combined

    async def dense_search(
        self, index: str, vector: np.ndarray, k: int, filters: SearchFilters | None = None
    ) -> list[Passage]:
        result = await self._collection(index).query.near_vector(
            near_vector=np.asarray(vector, dtype=np.float32).tolist(),
            limit=k,
            filters=self._filters(filters),
            return_metadata=MetadataQuery(distance=True),
        )
        return [_passage(o.properties, "dense", 1.0 - float(o.metadata.distance)) for o in result.objects]

    async def lexical_search(
        self, index: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[Passage]:
        if not query.strip():
            return []
        result = await self._collection(index).query.bm25(
            query=query,
            query_properties=["title^3", "headings^2", "text"],
            limit=k,
            filters=self._filters(filters),
            return_metadata=MetadataQuery(score=True),
        )
        return [_passage(o.properties, "lexical", float(o.metadata.score)) for o in result.objects]

    async def hybrid_search(
        self,
        index: str,
        query: str,
        vector: np.ndarray,
        k: int,
        alpha: float = 0.5,
        filters: SearchFilters | None = None,
    ) -> list[Passage]:
        """Weaviate's own fusion of BM25 and the vector (alpha 1 = dense only), for comparison."""
        result = await self._collection(index).query.hybrid(
            query=query,
            vector=np.asarray(vector, dtype=np.float32).tolist(),
            alpha=alpha,
            limit=k,
            filters=self._filters(filters),
            return_metadata=MetadataQuery(score=True),
        )
        return [_passage(o.properties, "hybrid", float(o.metadata.score)) for o in result.objects]

    async def close(self) -> None:
        await self._client.close()


def _tokenization(prop: str, kind: Any) -> Any:
    if kind not in (DataType.TEXT, DataType.TEXT_ARRAY):
        return None
    return Tokenization.FIELD if prop in _EXACT else Tokenization.WORD


def _passage(props: dict[str, Any], retriever: str, score: float) -> Passage:
    return Passage(
        chunk_id=props["chunk_id"],
        doc_id=props["doc_id"],
        title=props["title"],
        text=props["text"],
        url=props.get("url") or None,
        section=props.get("section") or None,
        domain=props["domain"],
        score=score,
        scores={retriever: score},
    )
