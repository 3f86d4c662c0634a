"""`supportflow nlu`: train and evaluate the intent classifier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import (
    console,
    err,
)

nlu_app = typer.Typer(
    help="Train and evaluate the intent classifier (triton_models/intent_classifier).", no_args_is_help=True
)


def _nlu_fail(command: str, message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]nlu {command}:[/red] {escape(message)}")
    return typer.Exit(code)


@nlu_app.command("train")
def nlu_train(
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV to train on.")],
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the utterance.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the intent.")] = "label",
    out: Annotated[Optional[Path], typer.Option("--out", help="Model folder; the version is written under it.")] = None,
    version: Annotated[Optional[str], typer.Option(help="Version folder name (default: next integer).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 3,
    max_length: Annotated[int, typer.Option(min=8, help="Max tokens per utterance.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Training batch size.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Encoder learning rate (the head uses 25x).")] = 8e-5,
    seed: Annotated[int, typer.Option(help="Seed for the split, the shuffling and the head initialisation.")] = 13,
    test_size: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share held out as test split.")] = 0.15,
    val_size: Annotated[float, typer.Option(min=0.01, max=0.5, help="Share held out for calibration.")] = 0.10,
    oos_flag_rate: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="In-scope share allowed below the out-of-scope threshold.")
    ] = 0.01,
    oos_data: Annotated[
        Optional[Path], typer.Option("--oos-data", help="CSV of out-of-scope texts (column `text`) to report on.")
    ] = None,
    extra_train: Annotated[
        Optional[Path],
        typer.Option(
            "--extra-train", help="CSV (columns text, label) added to the training split only, never to val/test."
        ),
    ] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch (default: all cores).")] = None,
) -> None:
    """Fine-tune all-MiniLM-L6-v2 on a labelled CSV and write an int8 ONNX version with its card and report."""
    from pipelines.ml.evaluate import DEFAULT_REPO, DataError, read_labelled_csv

    try:  # the data first: a wrong column name is worth knowing before installing torch
        read_labelled_csv(data, text_column, label_column)
    except DataError as exc:
        raise _nlu_fail("train", str(exc)) from None
    if oos_data is not None and not oos_data.is_file():
        raise _nlu_fail("train", f"no such file: {oos_data}")
    if extra_train is not None:
        try:
            read_labelled_csv(extra_train, "text", "label")
        except DataError as exc:
            raise _nlu_fail("train", str(exc)) from None
    try:
        import torch  # noqa: F401
    except ImportError:
        raise _nlu_fail("train", "torch is not installed: pip install -e '.[train]'") from None
    from pipelines.ml.train import TrainConfig, train

    cfg = TrainConfig(
        epochs=epochs,
        max_length=max_length,
        batch_size=batch_size,
        learning_rate=learning_rate,
        head_learning_rate=learning_rate * 25,
        seed=seed,
        test_size=test_size,
        val_size=val_size,
        oos_flag_rate=oos_flag_rate,
        threads=threads,
    )
    try:
        target = train(
            data,
            text_column,
            label_column,
            out=out or DEFAULT_REPO,
            version=version,
            config=cfg,
            oos_data=oos_data,
            extra_train=extra_train,
            log=console.print,
        )
    except DataError as exc:
        raise _nlu_fail("train", str(exc)) from None
    card = json.loads((target / "training_card.json").read_text())
    m = card["metrics"]
    oos = m["out_of_scope"]
    console.print(f"[green]wrote {target}[/green] in {card['timings_s']['total_s']:.0f} s")
    console.print(
        f"  test accuracy {m['test_accuracy']:.4f}  macro-F1 {m['test_macro_f1']:.4f}  ECE {m['test_ece']:.4f} "
        f"(int8; fp32 accuracy {m['fp32_test_accuracy']:.4f})"
    )
    line = f"  out-of-scope threshold {oos['threshold']:.3f}: in-scope flagged {oos['in_scope_flagged']}"
    if "oos_n" in oos:
        line += f", out-of-scope caught {oos['oos_caught']}/{oos['oos_n']}"
    console.print(line)


@nlu_app.command("eval")
def nlu_eval(
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV to evaluate on.")],
    text_column: Annotated[str, typer.Option("--text-column", help="Column holding the utterance.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the intent.")] = "label",
    model: Annotated[
        Optional[Path], typer.Option("--model", help="Version folder (default: latest under triton_models).")
    ] = None,
    oos_data: Annotated[
        Optional[Path], typer.Option("--oos-data", help="CSV of out-of-scope texts to measure the catch rate.")
    ] = None,
    oos_text_column: Annotated[str, typer.Option(help="Text column of --oos-data.")] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the JSON report here.")] = None,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the latency measurement.")] = False,
) -> None:
    """Accuracy, macro-F1, per-intent table, confusion pairs, calibration (ECE), out-of-scope and latency."""
    from pipelines.ml.evaluate import DataError, IntentClassifier, evaluate, latest_version, read_labelled_csv

    try:
        version_dir = model or latest_version()
        if not (version_dir / "model.onnx").is_file():
            raise DataError(f"no model.onnx in {version_dir}")
        texts, labels = read_labelled_csv(data, text_column, label_column)
        oos = read_labelled_csv(oos_data, oos_text_column, None)[0] if oos_data else []
    except DataError as exc:
        raise _nlu_fail("eval", str(exc)) from None
    report = evaluate(IntentClassifier(version_dir), texts, labels, oos_texts=oos, latency=not no_latency)
    report["data"] = {"file": str(data), "oos_file": str(oos_data) if oos_data else None}
    text = json.dumps(report, indent=2)
    if output:
        output.write_text(text + "\n")
    if as_json:
        print(text)
        return
    from rich.table import Table

    console.print(f"model {version_dir}  ({report['n']} texts from {data})")
    console.print(
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
        f"ECE {report['ece']:.4f} (uncalibrated {report['ece_uncalibrated']:.4f}, T={report['temperature']:.3f})"
    )
    table = Table("intent", "precision", "recall", "F1", "support")
    for name, row in sorted(report["per_intent"].items()):
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    if report["confusions"]:
        console.print("confusion pairs (gold → predicted: count)")
        for c in report["confusions"][:10]:
            console.print(f"  {c['gold']} → {c['predicted']}: {c['count']}")
    if report["labels_not_in_model"]:
        console.print(f"[yellow]labels the model does not know:[/yellow] {', '.join(report['labels_not_in_model'])}")
    o = report["out_of_scope"]
    line = f"out-of-scope threshold {o['threshold']:.3f}: in-scope flagged {o['in_scope_flagged']}/{report['n']}"
    if "oos_n" in o:
        line += f", out-of-scope caught {o['oos_caught']}/{o['oos_n']} ({o['oos_catch_rate']:.1%})"
    console.print(line)
    if "latency" in report:
        lat = report["latency"]
        console.print(
            f"latency batch 1: p50 {lat['batch1_p50_ms']:.2f} ms, p95 {lat['batch1_p95_ms']:.2f} ms; "
            f"batch 64: {lat['batch64_texts_per_s']:.0f} texts/s"
        )
