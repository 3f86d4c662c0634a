"""Knowledge-base fixtures: a Markdown article with every block kind, and a tiny BEIR-layout set."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.knowledge import KnowledgeDocument

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
