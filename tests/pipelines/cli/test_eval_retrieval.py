"""`supportflow eval retrieval` on a tiny BEIR set, with the committed embedding model."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app
from tests.support.knowledge import write_tiny_beir

runner = CliRunner()


def test_all_three_retrievers_are_scored_and_the_json_records_commit_model_and_config(tmp_path: Path):
    folder = write_tiny_beir(tmp_path / "tiny")
    out = tmp_path / "result.json"
    result = runner.invoke(
        app, ["eval", "retrieval", "--corpus", str(folder / "corpus.jsonl"), "--threads", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "nDCG@10" in result.output and "hybrid" in result.output
    saved = json.loads(out.read_text())
    assert set(saved["results"]) == {"lexical", "dense", "hybrid"}
    assert len(saved["commit"]) == 40 and "dirty" in saved
    assert saved["model"]["dimension"] == 384 and saved["model"]["id"].startswith("sentence-transformers/all-MiniLM")
    assert saved["config"]["chunking"]["target_tokens"] == 200
    assert saved["fusion"]["method"] in ("rrf", "minmax")
    for name in ("lexical", "dense", "hybrid"):
        assert 0.0 <= saved["results"][name]["all"]["ndcg@10"] <= 1.0
    # on these four queries meaning beats word overlap ("send something back" is "return")
    assert saved["results"]["dense"]["all"]["mrr@10"] >= saved["results"]["lexical"]["all"]["mrr@10"]


def test_lexical_only_needs_no_model_and_a_bad_retriever_is_refused(tmp_path: Path):
    folder = write_tiny_beir(tmp_path / "tiny")
    result = runner.invoke(app, ["eval", "retrieval", "--corpus", str(folder), "--retriever", "lexical", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] is None
    bad = runner.invoke(app, ["eval", "retrieval", "--corpus", str(folder), "--retriever", "sparse"])
    assert bad.exit_code == 2


def test_production_fusion_scores_the_retrievers_fixed_setting_without_tuning(tmp_path: Path):
    from connectors.knowledge.retriever import DEFAULT_FUSION

    folder = write_tiny_beir(tmp_path / "tiny")
    out = tmp_path / "result.json"
    args = ["--corpus", str(folder), "--threads", "1", "--fusion", "production", "--out", str(out)]
    result = runner.invoke(app, ["eval", "retrieval", *args])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["fusion"] == DEFAULT_FUSION.describe() and len(saved["fusion_grid"]) == 1
    assert saved["config"]["fusion"] == "production"
    bad = runner.invoke(app, ["eval", "retrieval", "--corpus", str(folder), "--fusion", "best"])
    assert bad.exit_code == 2 and "--fusion must be tune or production" in bad.output


def test_a_prior_is_learned_from_development_qrels_only_and_needs_the_tuned_fusion(tmp_path: Path):
    folder = write_tiny_beir(tmp_path / "tiny")
    lexical = ["eval", "retrieval", "--corpus", str(folder), "--retriever", "lexical"]
    bad = runner.invoke(app, [*lexical, "--prior-from", "all-qrels"])
    assert bad.exit_code == 2 and "--prior-from must be dev-qrels" in bad.output
    fixed = runner.invoke(app, [*lexical, "--fusion", "production", "--prior-from", "dev-qrels"])
    assert fixed.exit_code == 2 and "needs --fusion tune" in fixed.output
    result = runner.invoke(app, [*lexical, "--prior-from", "dev-qrels", "--json"])
    assert result.exit_code == 0, result.output
    saved = json.loads(result.stdout)
    assert saved["config"]["prior_from"] == "dev-qrels" and saved["prior"]["learned_on"]["half"] == "dev"
