"""`supportflow nlu`: train and evaluate the intent classifier."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from pipelines.cli._common import (
    console,
    err,
)
from pipelines.evaluation.provenance import source_state

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
    oos_max_flag_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="With out-of-scope validation rows: most in-scope validation texts the threshold may flag.",
        ),
    ] = 0.03,
    oos_data: Annotated[
        Optional[Path],
        typer.Option("--oos-data", help="CSV of out-of-scope texts (column `text`) to report on, never trained on."),
    ] = None,
    oos_train: Annotated[
        Optional[Path],
        typer.Option(
            "--oos-train",
            help="CSV of out-of-scope texts (column `text`) trained on, split with the data as out_of_scope.",
        ),
    ] = None,
    oos_label: Annotated[
        Optional[list[str]],
        typer.Option("--oos-label", help="Label(s) of out-of-scope rows in the data (default: oos, out_of_scope)."),
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
    if oos_train is not None:
        try:
            read_labelled_csv(oos_train, "text", None)
        except DataError as exc:
            raise _nlu_fail("train", str(exc)) from None
    if extra_train is not None:
        try:
            read_labelled_csv(extra_train, "text", "label")
        except DataError as exc:
            raise _nlu_fail("train", str(exc)) from None
    try:
        import torch  # noqa: F401
    except ImportError:
        raise _nlu_fail("train", "torch is not installed: pip install -e '.[train]'") from None
    from pipelines.ml.evaluate import OOS_LABELS
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
        oos_max_flag_rate=oos_max_flag_rate,
        oos_labels=tuple(oos_label) if oos_label else OOS_LABELS,
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
            oos_train=oos_train,
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
    chosen = card["out_of_scope"]
    console.print(f"  out-of-scope signal: {chosen['signal']}")
    console.print(f"  threshold {chosen['threshold']:.3f}: {chosen['threshold_chosen_by']}")
    print_oos(oos, indent="  ")


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
    oos_label: Annotated[
        Optional[list[str]],
        typer.Option("--oos-label", help="Label(s) of out-of-scope rows in --data (default: oos, out_of_scope)."),
    ] = None,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Write the out-of-scope trade-off curve as a PNG here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the JSON report here.")] = None,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Skip the latency measurement.")] = False,
) -> None:
    """Accuracy, macro-F1, per-intent table, confusion pairs, calibration (ECE), out-of-scope and latency."""
    from pipelines.ml.evaluate import (
        OOS_LABELS,
        DataError,
        IntentClassifier,
        evaluate,
        latest_version,
        read_labelled_csv,
    )

    try:
        version_dir = model or latest_version()
        if not (version_dir / "model.onnx").is_file():
            raise DataError(f"no model.onnx in {version_dir}")
        texts, labels = read_labelled_csv(data, text_column, label_column)
        oos = read_labelled_csv(oos_data, oos_text_column, None)[0] if oos_data else []
    except DataError as exc:
        raise _nlu_fail("eval", str(exc)) from None
    labels_oos = tuple(oos_label) if oos_label else OOS_LABELS
    report = evaluate(
        IntentClassifier(version_dir), texts, labels, oos_texts=oos, latency=not no_latency, oos_labels=labels_oos
    )
    report["data"] = {"file": str(data), "oos_file": str(oos_data) if oos_data else None, "oos_labels": labels_oos}
    # what produced the figures, for reports saved under bench/: the code's commit and the command line
    report["provenance"] = {
        **source_state(),
        "command": "supportflow " + " ".join(sys.argv[1:]),
        "model_labels_sha256": _sha256(version_dir / "labels.json"),
        "model_onnx_sha256": _sha256(version_dir / "model.onnx"),
    }
    if plot is not None and report["out_of_scope"].get("curve"):
        report["out_of_scope"]["plot"] = str(plot) if plot_curve(report, plot) else None
    text = json.dumps(report, indent=2)
    if output:
        output.write_text(text + "\n")
    if as_json:
        print(text)
        return
    from rich.table import Table

    console.print(f"model {version_dir}  ({report['n']} in-scope texts from {data})")
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
    print_oos(report["out_of_scope"], curve=True)
    if "latency" in report:
        lat = report["latency"]
        console.print(
            f"latency batch 1: p50 {lat['batch1_p50_ms']:.2f} ms, p95 {lat['batch1_p95_ms']:.2f} ms; "
            f"batch 64: {lat['batch64_texts_per_s']:.0f} texts/s"
        )


def print_oos(o: dict[str, Any], indent: str = "", curve: bool = False) -> None:
    """The out-of-scope part of a report: the operating point, each source, and the trade-off curve."""
    console.print(
        f"{indent}out of scope ({o['signal']}, flagged when above {o['threshold']:.3f}): "
        f"in-scope flagged {o['in_scope_flagged']}/{o['in_scope_n']} ({o['in_scope_flag_rate']:.1%}), "
        f"in-scope accuracy {o['in_scope_accuracy']:.4f} (flagged counts as wrong)"
    )
    if "oos_n" not in o:
        return
    auc = f", AUROC {o['auroc']:.3f}" if o.get("auroc") is not None else ""
    console.print(
        f"{indent}out-of-scope caught {o['oos_caught']}/{o['oos_n']} ({o['oos_recall']:.1%}); "
        f"overall accuracy {o['overall_accuracy']:.4f} (out of scope as a class){auc}"
    )
    for name, src in o.get("by_source", {}).items():
        where = "out-of-scope rows of --data" if name == "data" else "--oos-data file"
        console.print(f"{indent}  {where}: {src['caught']}/{src['n']} ({src['recall']:.1%})")
    if curve and o.get("curve"):
        from rich.table import Table

        table = Table("threshold", "OOS recall", "in-scope flagged", "in-scope acc.", "overall acc.")
        # one row per in-scope flag rate on the grid, plus the model's own threshold
        rows = {}
        for target in (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2):
            near = min(o["curve"], key=lambda p, t=target: (abs(p["in_scope_flag_rate"] - t), -p["oos_recall"]))
            rows[near["threshold"]] = near
        rows[o["threshold"]] = {
            "threshold": o["threshold"],
            "oos_recall": o["oos_recall"],
            "in_scope_flag_rate": o["in_scope_flag_rate"],
            "in_scope_accuracy": o["in_scope_accuracy"],
            "overall_accuracy": o["overall_accuracy"],
        }
        for _, p in sorted(rows.items()):
            table.add_row(
                f"{p['threshold']:.3f}",
                f"{p['oos_recall']:.1%}",
                f"{p['in_scope_flag_rate']:.1%}",
                f"{p['in_scope_accuracy']:.4f}",
                f"{p['overall_accuracy']:.4f}",
            )
        console.print(table)


def plot_curve(report: dict[str, Any], path: Path) -> bool:
    """The trade-off curve (in-scope flag rate against OOS recall) as a PNG; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        err.print("[yellow]nlu eval:[/yellow] matplotlib is not installed; no plot written")
        return False
    o = report["out_of_scope"]
    points = sorted(o["curve"], key=lambda p: p["in_scope_flag_rate"])
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    ax.plot([p["in_scope_flag_rate"] for p in points], [p["oos_recall"] for p in points], marker=".")
    ax.scatter([o["in_scope_flag_rate"]], [o["oos_recall"]], color="red", zorder=3, label="model's threshold")
    ax.set_xlabel("in-scope texts flagged (false-flag rate)")
    ax.set_ylabel("out-of-scope texts caught (recall)")
    ax.set_title(f"{o['signal']}: {Path(report['model']).name}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
