"""The intent classifier: the committed int8 model on its held-out test split, `nlu eval`, `nlu train` end to end."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.ml.evaluate import DEFAULT_REPO, OUT_OF_SCOPE, IntentClassifier, evaluate, read_labelled_csv
from pipelines.ml.train import dedupe, sha256_file, stratified_split
from tests.support.stream import missing

ROOT = Path(__file__).resolve().parents[3]
VERSION = DEFAULT_REPO / "1"
TEST_SPLIT = VERSION / "test_split.csv"
BITEXT = ROOT / "datasets" / "bitext-customer-support" / "bitext_customer_support_4514.csv"
OOS = ROOT / "datasets" / "out-of-scope" / "oos_heldout.csv"
OOS_TRAIN = ROOT / "datasets" / "out-of-scope" / "oos_train.csv"
runner = CliRunner()


def test_committed_model_meets_the_target_on_its_held_out_test_split():
    card = json.loads((VERSION / "training_card.json").read_text())
    assert card["data"]["test_sha256"] == sha256_file(TEST_SPLIT)  # the split the card reports on
    assert card["data"]["sha256"] == sha256_file(BITEXT)  # trained on the committed Bitext file
    assert card["data"]["oos_train_sha256"] == sha256_file(OOS_TRAIN)
    texts, labels = read_labelled_csv(TEST_SPLIT, "text", "label")
    model = IntentClassifier(VERSION)
    assert len(model.labels) == 27 and model.oos_signal == "oos_score"
    report = evaluate(model, texts, labels, oos_texts=read_labelled_csv(OOS, "text", None)[0], latency=False)
    assert report["accuracy"] >= 0.97 and report["macro_f1"] >= 0.97, report
    assert report["ece"] < 0.05
    oos = report["out_of_scope"]
    assert oos["threshold"] == card["out_of_scope"]["threshold"]
    assert oos["in_scope_flag_rate"] <= 0.03, oos  # what the threshold rule allows on validation
    assert oos["by_source"]["oos_file"]["recall"] >= 0.95, "held-out topics, never trained or tuned on"
    assert oos["by_source"]["data"]["recall"] >= 0.9, "the test split's own out-of-scope rows"
    assert model.predict(["I want to cancel my order"])[0][0] == "cancel_order"
    assert model.predict(["what is 4417 plus 2290"])[0][0] == OUT_OF_SCOPE


def test_test_split_never_overlaps_training_texts():
    texts, labels = read_labelled_csv(BITEXT, "instruction", "intent")
    oos = read_labelled_csv(OOS_TRAIN, "text", None)[0]
    bitext_only = stratified_split(dedupe(texts, labels)[1], 0.15, 0.10, 13)
    texts, labels, _ = dedupe(texts + oos, labels + [OUT_OF_SCOPE] * len(oos))
    train, val, test = stratified_split(labels, 0.15, 0.10, 13)
    assert not (set(train) & set(test)) and not (set(val) & set(test)) and not (set(train) & set(val))
    held_out, held_labels = read_labelled_csv(TEST_SPLIT, "text", "label")
    assert sorted(held_out) == sorted(texts[i] for i in test)  # the committed split is the seeded split
    assert stratified_split(labels, 0.15, 0.10, 13) == (train, val, test)  # and it is reproducible
    # the out-of-scope rows did not move a single Bitext row: figures before and after compare
    assert [i for i in test if labels[i] != OUT_OF_SCOPE] == bitext_only[2]
    assert 20 <= held_labels.count(OUT_OF_SCOPE) <= 30


def test_nlu_eval_json_prints_the_metrics(tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(
        app, ["nlu", "eval", "--data", str(TEST_SPLIT), "--oos-data", str(OOS), "--json", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accuracy"] >= 0.97 and report["macro_f1"] >= 0.97
    assert {"per_intent", "confusions", "ece", "latency", "out_of_scope"} <= set(report)
    oos = report["out_of_scope"]
    assert oos["by_source"]["oos_file"]["n"] == 124 and oos["oos_n"] == 124 + report["oos_n_in_data"]
    assert {"oos_recall", "in_scope_flag_rate", "in_scope_accuracy", "overall_accuracy", "auroc"} <= set(oos)
    assert len(oos["curve"]) >= 10 and {p["in_scope_flag_rate"] for p in oos["curve"]} >= {0.0}
    assert json.loads(out.read_text())["accuracy"] == report["accuracy"]

    plot = tmp_path / "curve.png"
    table = runner.invoke(app, ["nlu", "eval", "--data", str(TEST_SPLIT), "--no-latency", "--plot", str(plot)])
    assert table.exit_code == 0 and "macro-F1" in table.output and "cancel_order" in table.output
    assert "out-of-scope caught" in table.output and "OOS recall" in table.output, "the rates and the curve table"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nlu_commands_give_clear_errors_with_exit_code_2(tmp_path):
    result = runner.invoke(app, ["nlu", "eval", "--data", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["nlu", "eval", "--data", str(TEST_SPLIT), "--label-column", "intent"])
    assert result.exit_code == 2 and "missing column(s) intent" in result.output
    result = runner.invoke(app, ["nlu", "train", "--data", str(BITEXT), "--text-column", "utterance"])
    assert result.exit_code == 2 and "missing column(s) utterance" in result.output


def tiny_csv(path: Path) -> Path:
    texts, labels = read_labelled_csv(BITEXT, "instruction", "intent")
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y in {"cancel_order", "track_order", "get_refund"}]
    random.Random(0).shuffle(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["utterance", "intent"])
        w.writerows(rows[:60])
    return path


def test_nlu_train_runs_end_to_end_on_a_tiny_csv(tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        missing("torch is not installed: `pip install -e '.[train]'` (the test extra has it)")
    data = tiny_csv(tmp_path / "tiny.csv")
    extra = tmp_path / "extra.csv"
    extra.write_text("text,label\nwhere is my order?,track_order\nplease cancel it,cancel_order\n")
    repo = tmp_path / "intent_classifier"
    args = ["nlu", "train", "--data", str(data), "--text-column", "utterance", "--label-column", "intent"]
    args += ["--out", str(repo), "--epochs", "1", "--max-length", "16", "--batch-size", "16", "--oos-data", str(OOS)]
    args += ["--extra-train", str(extra), "--oos-train", str(OOS_TRAIN)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    version = repo / "1"
    for name in ("model.onnx", "labels.json", "tokenizer.json", "vocab.txt", "test_split.csv"):
        assert (version / name).is_file(), name
    assert not (version / "model.fp32.onnx").exists()
    card = json.loads((version / "training_card.json").read_text())
    assert card["data"]["sha256"] == sha256_file(data) and card["data"]["labels"] == 3
    assert card["parameters"]["epochs"] == 1 and card["parameters"]["seed"] == 13
    assert card["data"]["extra_train_rows"] == 2, "the extra rows were trained on"
    held_out = (version / "test_split.csv").read_text()
    assert "where is my order?" not in held_out and "please cancel it" not in held_out, "extra rows stay out of test"
    assert {"test_accuracy", "test_macro_f1", "test_ece", "fp32_test_accuracy"} <= set(card["metrics"])
    report = json.loads((version / "eval_report.json").read_text())
    assert report["out_of_scope"]["by_source"]["oos_file"]["n"] == 124 and "latency" in report
    labels = json.loads((version / "labels.json").read_text())
    assert labels["labels"] == ["cancel_order", "get_refund", "track_order"] and labels["temperature"] > 0
    # out of scope: split like the rest, an explicit class, a score in the graph, its threshold in labels.json
    split_labels = read_labelled_csv(version / "test_split.csv", "text", "label")[1]
    assert split_labels.count(OUT_OF_SCOPE) == 26 and report["oos_n_in_data"] == 26
    chosen = card["out_of_scope"]
    assert chosen["explicit_class"] and chosen["classifier_evidence"] == "oos_logit_margin"
    assert card["data"]["out_of_scope_rows"]["validation"] == 17 and chosen["validation"]["oos_n"] == 17
    assert (
        labels["oos_score"]["threshold"] == chosen["threshold"]
        and "in-scope validation" in chosen["threshold_chosen_by"]
    )
    model = IntentClassifier(version)
    assert model.oos_signal == "oos_score" and model.logits(["refund"]).shape == (1, 3), "logits stay in-scope only"

    again = runner.invoke(app, ["nlu", "eval", "--data", str(version / "test_split.csv"), "--model", str(version)])
    assert again.exit_code == 0, again.output

    # seeded: the same data and options give the same model, byte for byte
    rerun = runner.invoke(app, [*args, "--version", "7"])
    assert rerun.exit_code == 0, rerun.output
    assert sha256_file(repo / "7" / "model.onnx") == sha256_file(version / "model.onnx")
