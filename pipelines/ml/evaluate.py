"""Evaluate an intent-classifier version from its ONNX file with onnxruntime (no torch needed).

A version folder (`triton_models/intent_classifier/<version>/`) holds `model.onnx` (int8,
outputs `logits` and temperature-calibrated `probabilities`), `labels.json` (label list,
temperature, out-of-scope threshold), the tokenizer files and the training card.
`IntentClassifier` is the runtime entry point; `evaluate` produces the report that
`supportflow nlu eval` prints and `nlu train` stores as `eval_report.json`.

Out of scope is part of every report. A model trained since issue 15 has an `oos_score` output
(higher: more out of scope) and its threshold in `labels.json`; for an older model the score is
1 - calibrated confidence and the threshold 1 - its confidence threshold, so both are judged on one
scale: a text is flagged when its score is above the threshold. Out-of-scope examples come from
rows of the data labelled `out_of_scope` (or an alias such as CLINC150's `oos`) and from a
separate text-only file; the report gives in-scope accuracy, out-of-scope recall, the in-scope
false-flag rate, overall accuracy with out-of-scope as one more class, and the trade-off curve.
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
OOS_LABELS = ("oos", "out_of_scope")
"""Labels read as out of scope by default (`--oos-label`): CLINC150 says `oos`, supportflow `out_of_scope`."""
DEFAULT_REPO = Path(__file__).resolve().parents[2] / "triton_models" / "intent_classifier"


FLOOR_SCORE = 1e9
"""The score of a text under the model's confidence floor: flagged at any threshold (finite, so JSON-safe)."""


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
        self.oos_score_threshold: float | None = meta.oos_score_threshold if self.model.has_oos_score else None

    @property
    def oos_signal(self) -> str:
        """What `oos_scores` are: the model's own output, or 1 - confidence for a model without one."""
        return "oos_score" if self.oos_score_threshold is not None else "1 - max calibrated probability"

    @property
    def oos_cut(self) -> float:
        """The out-of-scope threshold on the `oos_scores` scale: flagged when a score is above it."""
        return self.oos_score_threshold if self.oos_score_threshold is not None else 1.0 - self.threshold

    def outputs(self, texts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Logits and out-of-scope scores (see `oos_signal`), batch by batch as served."""
        logits, scores = [], []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer.encode(texts[i : i + batch_size])
            lg, sc = self.model.run_with_oos(batch.input_ids, batch.attention_mask)
            logits.append(lg)
            conf = softmax(lg / self.temperature).max(1)
            if self.oos_score_threshold is not None and sc is not None:
                # serving flags on either rule (operators/nlu_model.py): a confidence under the floor counts as
                # a score above any threshold, so one scale describes both
                scores.append(np.where(conf < self.threshold, FLOOR_SCORE, sc))
            else:
                scores.append(1.0 - conf)
        if not logits:
            return np.zeros((0, len(self.labels)), dtype=np.float32), np.zeros(0)
        return np.concatenate(logits), np.concatenate(scores).astype(np.float64)

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenizer.encode(texts[i : i + batch_size])
            out.append(self.model.run(batch.input_ids, batch.attention_mask))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def oos_scores(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.outputs(texts, batch_size)[1]

    def probabilities(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return softmax(self.logits(texts, batch_size) / self.temperature)

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """(intent, calibrated confidence) per text; `out_of_scope` when flagged, as the `nlu_model` operator does."""
        logits, scores = self.outputs(texts)
        probs = softmax(logits / self.temperature)
        best = probs.argmax(1)
        return [
            (self.labels[b] if p[b] >= self.threshold and score <= self.oos_cut else OUT_OF_SCOPE, float(p[b]))
            for b, p, score in zip(best, probs, scores, strict=True)
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


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """P(score of a positive > score of a negative), ties half (Mann-Whitney); None without both kinds."""
    if len(negatives) == 0 or len(positives) == 0:
        return None
    scores = np.concatenate([negatives, positives])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        same = scores == value
        ranks[same] = ranks[same].mean()
    u = ranks[len(negatives) :].sum() - len(positives) * (len(positives) + 1) / 2
    return float(u / (len(negatives) * len(positives)))


def operating_point(
    in_scores: np.ndarray, in_correct: np.ndarray, oos_scores: np.ndarray, threshold: float
) -> dict[str, float]:
    """Rates at one threshold (flagged: score > threshold). Overall accuracy counts out of scope as a class:
    an in-scope text is right when unflagged and correctly classified, an out-of-scope text when flagged."""
    in_flag = in_scores > threshold
    oos_flag = oos_scores > threshold
    n = len(in_scores) + len(oos_scores)
    return {
        "threshold": float(threshold),
        "oos_recall": float(oos_flag.mean()) if len(oos_scores) else float("nan"),
        "in_scope_flag_rate": float(in_flag.mean()) if len(in_scores) else float("nan"),
        "in_scope_accuracy": float((in_correct & ~in_flag).mean()) if len(in_scores) else float("nan"),
        "overall_accuracy": float(((in_correct & ~in_flag).sum() + oos_flag.sum()) / n) if n else float("nan"),
    }


FLAG_RATE_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)


def tradeoff_curve(in_scores: np.ndarray, in_correct: np.ndarray, oos_scores: np.ndarray) -> list[dict[str, float]]:
    """Threshold → OOS recall / in-scope flag rate / accuracies, in order of rising threshold.

    The thresholds are where the in-scope flag rate crosses FLAG_RATE_GRID (operating points one
    would pick) and where OOS recall crosses 0, 5%, ..., 100%: evenly spaced thresholds would waste
    most points where in-scope scores bunch up."""
    if len(in_scores) == 0 or len(oos_scores) == 0:
        return []
    finite_in = in_scores[in_scores < FLOOR_SCORE]
    finite_oos = oos_scores[oos_scores < FLOOR_SCORE]
    cuts = [float(np.quantile(finite_in, 1.0 - r, method="higher")) for r in FLAG_RATE_GRID if len(finite_in)]
    if len(finite_oos):
        cuts += [float(np.quantile(finite_oos, q, method="lower")) for q in np.linspace(0.0, 1.0, 21)]
    return [operating_point(in_scores, in_correct, oos_scores, c) for c in sorted(set(cuts))]


def evaluate(
    model: IntentClassifier,
    texts: Sequence[str],
    gold: Sequence[str],
    oos_texts: Sequence[str] = (),
    latency: bool = True,
    oos_labels: Sequence[str] = OOS_LABELS,
) -> dict[str, Any]:
    """The evaluation report: accuracy, macro-F1, per intent, confusions, ECE, out-of-scope, latency.

    Rows of `texts` whose gold label is in `oos_labels` are out-of-scope examples, like `oos_texts`;
    accuracy, macro-F1, ECE and the per-intent table are over the in-scope rows (the intent the
    model names, flag or not), so they compare with reports from before out of scope was measured.
    """
    is_oos = np.array([g in oos_labels for g in gold], dtype=bool)
    in_texts = [t for t, o in zip(texts, is_oos, strict=True) if not o]
    data_oos = [t for t, o in zip(texts, is_oos, strict=True) if o]
    report = _in_scope_report(model, in_texts, [g for g, o in zip(gold, is_oos, strict=True) if not o])
    in_scores, in_correct = report.pop("_scores"), report.pop("_correct")
    sources = {"data": data_oos, "oos_file": list(oos_texts)}
    source_scores = {k: model.oos_scores(v) if v else np.zeros(0) for k, v in sources.items()}
    oos_scores = np.concatenate(list(source_scores.values()))
    cut = model.oos_cut
    at = operating_point(in_scores, in_correct, oos_scores, cut)
    o: dict[str, Any] = {
        "signal": model.oos_signal,
        "threshold": cut,
        "confidence_threshold": model.threshold,
        "in_scope_n": len(in_texts),
        "in_scope_flagged": int((in_scores > cut).sum()),
        "in_scope_flag_rate": at["in_scope_flag_rate"],
        "in_scope_accuracy": at["in_scope_accuracy"],
    }
    if len(oos_scores):
        caught = oos_scores > cut
        o.update(
            {
                "oos_n": len(oos_scores),
                "oos_caught": int(caught.sum()),
                "oos_recall": float(caught.mean()),
                "oos_catch_rate": float(caught.mean()),  # the name reports before issue 15 used
                "overall_accuracy": at["overall_accuracy"],
                "auroc": auroc(in_scores, oos_scores),
                "by_source": {
                    k: {"n": len(v), "caught": int((v > cut).sum()), "recall": float((v > cut).mean())}
                    for k, v in source_scores.items()
                    if len(v)
                },
                "curve": tradeoff_curve(in_scores, in_correct, oos_scores),
            }
        )
    report["out_of_scope"] = o
    report["oos_n_in_data"] = len(data_oos)
    if latency and in_texts:
        report["latency"] = measure_latency(model, in_texts)
    return report


def _in_scope_report(model: IntentClassifier, texts: Sequence[str], gold: Sequence[str]) -> dict[str, Any]:
    unknown = sorted(set(gold) - set(model.labels))
    logits, scores = model.outputs(texts)
    probs = softmax(logits / model.temperature)
    best = probs.argmax(1)
    conf = probs[np.arange(len(best)), best]
    pred = [model.labels[b] for b in best]
    m = classification_metrics(gold, pred, model.labels)
    correct = np.array([g == p for g, p in zip(gold, pred, strict=True)], dtype=float)
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
        "_scores": scores,
        "_correct": correct.astype(bool),
    }
    return report
