"""Structure-aware chunking: sections, whole lists and tables, heading paths, sizes, stable ids."""

from __future__ import annotations

import itertools

from connectors.knowledge.chunking import (
    ChunkingConfig,
    approx_token_count,
    chunk_document,
    contextual_text,
    parse_blocks,
)
from tests.support.knowledge import ARTICLE, article

SMALL = ChunkingConfig(target_tokens=40, max_tokens=60, min_tokens=10, overlap_tokens=8)


def test_blocks_are_headings_paragraphs_lists_and_tables_with_their_heading_path():
    blocks = parse_blocks(ARTICLE)
    kinds = [b.kind for b in blocks]
    assert kinds == ["heading", "paragraph", "heading", "list", "heading", "table", "heading", "paragraph"]
    assert blocks[-1].headings == ("Returns and refunds", "Refund times", "International orders")
    assert blocks[3].headings == ("Returns and refunds", "How to start a return")


def test_each_section_is_its_own_chunk_when_sections_are_big_enough():
    chunks = chunk_document(article(), SMALL)
    firsts = [c.text.splitlines()[0] for c in chunks]
    assert firsts == [
        "# Returns and refunds",
        "## How to start a return",
        "## Refund times",
        "### International orders",
    ]
    assert chunks[3].headings == ["Returns and refunds", "Refund times"]
    assert all(c.title == "Returns and refunds" and c.domain == "orders" for c in chunks)
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]


def test_lists_and_tables_stay_whole_when_they_fit():
    chunks = chunk_document(article(), SMALL)
    table = next(c for c in chunks if "| Payment method" in c.text)
    assert "| Gift card | Immediately |" in table.text
    steps = next(c for c in chunks if "1. Open" in c.text)
    assert "3. Print the label" in steps.text


def test_tiny_sections_share_a_chunk_and_a_heading_never_ends_one():
    chunks = chunk_document(article(), ChunkingConfig(target_tokens=200, max_tokens=256, min_tokens=60))
    assert len(chunks) < 4
    for c in chunks:
        assert not c.text.rstrip().splitlines()[-1].startswith("#")


def test_a_table_too_long_for_one_chunk_is_split_between_rows_and_repeats_its_header():
    rows = "\n".join(f"| Country {i} | {i} to {i + 5} business days by courier |" for i in range(60))
    body = f"## Delivery times\n\n| Country | Time |\n| --- | --- |\n{rows}\n"
    chunks = chunk_document(article(body), SMALL)
    assert len(chunks) > 2
    for c in chunks:
        assert approx_token_count(c.text) <= SMALL.max_tokens + approx_token_count("## Delivery times")
        assert "| Country | Time |" in c.text
    assert sum(c.text.count("| Country ") for c in chunks) == 60 + len(chunks)  # every row once, plus the headers


def test_a_long_paragraph_is_cut_between_sentences_with_overlap():
    sentences = [f"Rule {i} says parcels over {i} kilograms need a signature." for i in range(40)]
    config = ChunkingConfig(target_tokens=40, max_tokens=60, min_tokens=10, overlap_tokens=12)
    chunks = chunk_document(article(" ".join(sentences)), config)  # a sentence is 11 tokens: one is repeated
    assert len(chunks) > 3
    assert all(approx_token_count(c.text) <= SMALL.max_tokens for c in chunks)
    for before, after in itertools.pairwise(chunks):
        last = before.text.split(". ")[-1].rstrip(".")
        assert after.text.startswith(last)  # the previous piece's last sentence starts the next one
    assert all(any(s in c.text for c in chunks) for s in sentences)


def test_chunk_ids_are_deterministic_and_change_with_the_text():
    first = chunk_document(article(), SMALL)
    again = chunk_document(article(), SMALL)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert first[0].chunk_id.startswith("help/returns.md#0-")
    edited = chunk_document(article(ARTICLE.replace("30 days", "60 days")), SMALL)
    assert edited[0].chunk_id != first[0].chunk_id
    assert edited[1].chunk_id == first[1].chunk_id  # an untouched section keeps its id


def test_contextual_text_starts_with_the_title_and_heading_path():
    chunk = chunk_document(article(), SMALL)[3]
    assert contextual_text(chunk).splitlines()[0] == "Returns and refunds > Returns and refunds > Refund times"
    assert "Import duties" in contextual_text(chunk)


def test_an_empty_body_gives_no_chunks_and_plain_text_gives_one():
    assert chunk_document(article("   \n\n")) == []
    (only,) = chunk_document(article("Just one plain line of text."))
    assert only.text == "Just one plain line of text." and only.headings == []
