"""The knowledge layer's contracts, stated once: an embedding model and a vector store.

Every implementation (in-process ONNX or Triton for embeddings; pgvector or Weaviate for vectors)
satisfies these, and the same contract tests run against each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from schemas.knowledge import Chunk, Passage

__all__ = ["Embedder", "SearchFilters", "VectorStore"]


class Embedder(Protocol):
    """Text to unit-length vectors, in batches.

    Queries and passages are embedded by separate calls because some models (e5) are trained with a
    different prefix for each; a model without prefixes embeds both the same way.
    """

    @property
    def model_id(self) -> str:
        """Stored beside every vector: a vector is only comparable with others of the same model."""
        ...

    @property
    def dimension(self) -> int: ...

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array of shape (len(texts), dimension), rows L2-normalised."""
        ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchFilters:
    """What a search may return: the live release unless one is named, and optionally only some domains."""

    release: str | None = None
    domains: tuple[str, ...] = ()
    language: str | None = None
    channel: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class VectorStore(Protocol):
    """Chunks with their vectors and their text, searched densely (vectors) and lexically (full text).

    Writes are idempotent by `chunk_id`: a replayed batch changes nothing. `index` names the
    embedding index (one per embedding model), so a new model can be filled beside the live one and
    switched to when complete.
    """

    async def upsert(self, index: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> int: ...

    async def delete_document(self, index: str, doc_id: str) -> int: ...

    async def dense_search(
        self, index: str, vector: np.ndarray, k: int, filters: SearchFilters | None = None
    ) -> list[Passage]: ...

    async def lexical_search(
        self, index: str, query: str, k: int, filters: SearchFilters | None = None
    ) -> list[Passage]: ...

    async def close(self) -> None: ...
