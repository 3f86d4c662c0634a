"""Evaluate an intent-classifier version from its ONNX file with onnxruntime (no torch needed).

A version folder (`triton_models/intent_classifier/<version>/`) holds `model.onnx` (int8,
outputs `logits` and temperature-calibrated `probabilities`), `labels.json` (label list,
temperature, out-of-scope threshold), the tokenizer files and the training card.
`IntentClassifier` is the runtime entry point; `evaluate` produces the report that
`supportflow nlu eval` prints and `nlu train` stores as `eval_report.json`.
"""

from __future__ import annotations

import csv
import itertools
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from connectors.triton import softmax

OUT_OF_SCOPE = "out_of_scope"
DEFAULT_REPO = Path(__file__).resolve().parents[2] / "triton_models" / "intent_classifier"


class DataError(ValueError):
    """A CSV that cannot be used: missing file, missing column, no rows."""


def read_labelled_csv(path: Path, text_column: str, label_column: str | None) -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV; `label_column=None` reads texts only (labels empty)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        wanted = [text_column] + ([label_column] if label_column else [])
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the file has: {', '.join(columns)}")
        texts: list[str] = []
        labels: list[str] = []
        for row in reader:
            text = (row[text_column] or "").strip()
            label = (row[label_column] or "").strip() if label_column else ""
            if not text or (label_column and not label):
                continue
            texts.append(text)
            labels.append(label)
    if not texts:
        raise DataError(f"{path}: no rows with a non-empty {text_column!r}")
    return texts, labels


def latest_version(repo: Path = DEFAULT_REPO) -> Path:
    versions = sorted((int(p.name), p) for p in Path(repo).iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise DataError(f"no model version under {repo}; run `supportflow nlu train` first")
    return versions[-1][1]


class IntentClassifier:
    """One version of the intent classifier for evaluation: the serving path's tokenizer and
    in-process model (`connectors.triton`), whole data sets at a time."""

    def __init__(self, version_dir: Path, threads: int | None = None, model_file: str = "model.onnx") -> None:
        from connectors.triton import IntentTokenizer, OnnxIntentModel, load_model_meta

        self.dir = Path(version_dir)
        meta = load_model_meta(self.dir)
        self.labels: list[str] = meta.labels
        self.temperature: float = meta.temperature
        self.threshold: float = meta.oos_threshold
        self.max_length: int = meta.max_length
        self.tokenizer = IntentTokenizer.from_version_dir(self.dir, self.max_length)
        self.model = OnnxIntentModel(self.dir, threads or 0, model_file)

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer.encode(texts[i : i + batch_size])
            out.append(self.model.run(batch.input_ids, batch.attention_mask))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def probabilities(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return softmax(self.logits(texts, batch_size) / self.temperature)

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """(intent, calibrated confidence) per text; `out_of_scope` below the threshold."""
        probs = self.probabilities(texts)
        best = probs.argmax(1)
        return [
            (self.labels[b] if p[b] >= self.threshold else OUT_OF_SCOPE, float(p[b]))
            for b, p in zip(best, probs, strict=True)
        ]


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is under it (no machine paths in reports)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


@dataclass
class Metrics:
    accuracy: float
    macro_f1: float
    per_intent: dict[str, dict[str, float]]
    confusions: list[dict[str, Any]]


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> Metrics:
    gold_c = Counter(gold)
    pred_c = Counter(pred)
    tp = Counter(g for g, p in zip(gold, pred, strict=True) if g == p)
    per: dict[str, dict[str, float]] = {}
    for label in labels:
        if gold_c[label] == 0 and pred_c[label] == 0:
            continue
        precision = tp[label] / pred_c[label] if pred_c[label] else 0.0
        recall = tp[label] / gold_c[label] if gold_c[label] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[label] = {"precision": precision, "recall": recall, "f1": f1, "support": gold_c[label]}
    scored = [v["f1"] for k, v in per.items() if gold_c[k] > 0]
    pairs = Counter((g, p) for g, p in zip(gold, pred, strict=True) if g != p)
    return Metrics(
        accuracy=sum(tp.values()) / len(gold) if gold else 0.0,
        macro_f1=float(np.mean(scored)) if scored else 0.0,
        per_intent=per,
        confusions=[{"gold": g, "predicted": p, "count": n} for (g, p), n in pairs.most_common(20)],
    )


def measure_latency(model: IntentClassifier, texts: Sequence[str], n: int = 100) -> dict[str, float]:
    """Per-request latency at batch size 1 (tokenize + run), and throughput at batch 64."""
    sample = [texts[i % len(texts)] for i in range(n)]
    model.logits(sample[:5], batch_size=1)  # warm-up
    times = []
    for t in sample:
        start = time.perf_counter()
        model.logits([t], batch_size=1)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    start = time.perf_counter()
    batch = [texts[i % len(texts)] for i in range(256)]
    model.logits(batch, batch_size=64)
    per_sec = len(batch) / (time.perf_counter() - start)
    return {
        "batch1_p50_ms": round(statistics.median(times), 3),
        "batch1_p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
        "batch64_texts_per_s": round(per_sec, 1),
    }


def evaluate(
    model: IntentClassifier,
    texts: Sequence[str],
    gold: Sequence[str],
    oos_texts: Sequence[str] = (),
    latency: bool = True,
) -> dict[str, Any]:
    """The evaluation report: accuracy, macro-F1, per intent, confusions, ECE, out-of-scope, latency."""
    unknown = sorted(set(gold) - set(model.labels))
    logits = model.logits(texts)
    probs = softmax(logits / model.temperature)
    best = probs.argmax(1)
    conf = probs[np.arange(len(best)), best]
    pred = [model.labels[b] for b in best]
    m = classification_metrics(gold, pred, model.labels)
    correct = np.array([g == p for g, p in zip(gold, pred, strict=True)], dtype=float)
    flagged = conf < model.threshold
    report: dict[str, Any] = {
        "model": _shown(model.dir),
        "n": len(texts),
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "ece": expected_calibration_error(conf, correct),
        "ece_uncalibrated": expected_calibration_error(softmax(logits).max(1), correct),
        "temperature": model.temperature,
        "mean_confidence": float(conf.mean()),
        "per_intent": m.per_intent,
        "confusions": m.confusions,
        "labels_not_in_model": unknown,
        "out_of_scope": {
            "threshold": model.threshold,
            "in_scope_flagged": int(flagged.sum()),
            "in_scope_flag_rate": float(flagged.mean()),
        },
    }
    if oos_texts:
        oos_conf = model.probabilities(oos_texts).max(1)
        caught = oos_conf < model.threshold
        report["out_of_scope"].update(
            {"oos_n": len(oos_texts), "oos_caught": int(caught.sum()), "oos_catch_rate": float(caught.mean())}
        )
    if latency:
        report["latency"] = measure_latency(model, texts)
    return report
