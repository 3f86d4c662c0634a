"""`read_usage`: the usage prior's two file layouts, and the rows it refuses (with their line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.knowledge.usage import UsageFileError, read_usage


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_counts_add_up_per_article(tmp_path: Path) -> None:
    path = write(tmp_path, "uses.csv", "doc_id,uses\nreturns.md,3\nshipping.md,1\nreturns.md,2\n")
    assert read_usage(path) == {"returns.md": 5, "shipping.md": 1}


def test_links_count_each_ticket_once_per_article_and_skip_unrelated_qrels(tmp_path: Path) -> None:
    links = write(tmp_path, "links.csv", "Ticket_ID,doc_id\nt1,returns.md\nt1,returns.md\nt2,returns.md\nt2,fees.md\n")
    assert read_usage(links) == {"returns.md": 2, "fees.md": 1}
    qrels = write(tmp_path, "test.tsv", "query-id\tcorpus-id\tscore\nq1\tdoc_a\t1\nq2\tdoc_a\t2\nq2\tdoc_b\t0\n")
    assert read_usage(qrels) == {"doc_a": 2}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("article,uses\nreturns.md,3\n", "no document column"),
        ("doc_id,views\nreturns.md,3\n", "neither `uses`"),
        ("doc_id,uses\nreturns.md,three\n", ":2: uses 'three' is not a whole number"),
        ("doc_id,uses\nreturns.md,0\n", ":2: uses 0 is not positive"),
        ("doc_id,uses\nreturns.md,1\n\x00bad,1\n", ":3: doc_id is empty, too long or holds a NUL byte"),
        ("ticket_id,doc_id,score\nt1,returns.md,nan\n", ":2: score 'nan' is not a finite number"),
        ("ticket_id,doc_id\n,returns.md\n", ":2: no ticket_id"),
    ],
)
def test_a_malformed_file_is_refused_with_the_line_at_fault(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(UsageFileError, match=reason):
        read_usage(write(tmp_path, "usage.csv", text))


def test_a_file_that_is_not_utf8_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_bytes(b"doc_id,uses\n\xff\xfe,1\n")
    with pytest.raises(UsageFileError, match="not UTF-8"):
        read_usage(path)


def test_a_huge_count_is_capped_to_what_the_store_keeps(tmp_path: Path) -> None:
    path = write(tmp_path, "uses.csv", f"doc_id,uses\nreturns.md,{10**30}\n")
    assert read_usage(path) == {"returns.md": 2**31 - 1}
