"""Is what retrieval found good enough to answer from? A probability-like confidence, and its threshold.

Fused scores rank well but say little on their own (reciprocal ranks are the same whatever the
query), so the confidence reads the retrievers' own scores of their best passages:
- the best dense cosine: how close the nearest passage is in meaning;
- its margin over the fifth best: a clear winner against a flat field of half-matches;
- log(1 + the best BM25 score): whether the query's rarer words occur at all.
A logistic regression over these (standardised) gives P(the top passages hold the answer). It is
fitted by `supportflow eval retrieval` (pipelines/evaluation/retrieval_eval.py) on a development
split and reported on held-out queries; the threshold is the one that maximises balanced accuracy
(answerable answered, unanswerable declined) on the development split.

The features depend on the embedding model (cosines of another model sit elsewhere): a model is
only used with the coefficients fitted for it (`model_id`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FEATURES", "AnswerabilityModel", "answer_features", "fit_answerability", "fit_logistic"]

FEATURES = ("dense_top1", "dense_margin_top5", "lexical_top1_log")


def answer_features(dense_scores: Sequence[float], lexical_scores: Sequence[float]) -> list[float]:
    """The features of one query's results; each list is that retriever's scores, best first."""
    dense = sorted(dense_scores, reverse=True)
    top1 = dense[0] if dense else 0.0
    fifth = dense[min(4, len(dense) - 1)] if dense else 0.0
    lexical = max(lexical_scores, default=0.0)
    return [float(top1), float(top1 - fifth), math.log1p(max(float(lexical), 0.0))]


@dataclass(frozen=True)
class AnswerabilityModel:
    coefficients: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    model_id: str = ""

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(answerable) per row of `features` [n, len(FEATURES)]."""
        x = (np.atleast_2d(np.asarray(features, dtype=np.float64)) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(x @ np.asarray(self.coefficients) + self.intercept)))

    def confidence(self, dense_scores: Sequence[float], lexical_scores: Sequence[float]) -> float:
        return float(self.predict(np.asarray([answer_features(dense_scores, lexical_scores)]))[0])

    def answerable(self, dense_scores: Sequence[float], lexical_scores: Sequence[float]) -> bool:
        return self.confidence(dense_scores, lexical_scores) >= self.threshold

    def describe(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "coefficients": [round(c, 6) for c in self.coefficients],
            "intercept": round(self.intercept, 6),
            "mean": [round(m, 6) for m in self.mean],
            "scale": [round(s, 6) for s in self.scale],
            "threshold": round(self.threshold, 4),
            "model_id": self.model_id,
        }


def fit_logistic(
    features: np.ndarray, labels: np.ndarray, l2: float = 1.0, iterations: int = 50
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression by Newton's method on standardised features (the intercept is not
    shrunk): (coefficients, intercept, mean, scale); a row's score is ((x - mean) / scale) @ coefficients +
    intercept."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError("features must be [n, d] with one label per row")
    mean = x.mean(axis=0)
    scale = np.where(x.std(axis=0) > 1e-9, x.std(axis=0), 1.0)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0  # the intercept is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1]), mean, scale


def fit_answerability(
    features: np.ndarray, labels: np.ndarray, l2: float = 1.0, iterations: int = 50, model_id: str = ""
) -> AnswerabilityModel:
    """`fit_logistic`, then the balanced-accuracy threshold."""
    coefficients, intercept, mean, scale = fit_logistic(features, labels, l2, iterations)
    z = np.hstack([(np.asarray(features, dtype=np.float64) - mean) / scale, np.ones((len(features), 1))])
    p = 1.0 / (1.0 + np.exp(-(z @ np.append(coefficients, intercept))))  # as the fit computed it
    return AnswerabilityModel(
        coefficients=tuple(float(c) for c in coefficients),
        intercept=intercept,
        mean=tuple(float(m) for m in mean),
        scale=tuple(float(s) for s in scale),
        threshold=_balanced_threshold(p, np.asarray(labels, dtype=np.float64)),
        model_id=model_id,
    )


def _balanced_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The probability cut that maximises (true-positive rate + true-negative rate) / 2; 0.5 with one class."""
    positives, negatives = (y == 1).sum(), (y == 0).sum()
    if positives == 0 or negatives == 0:
        return 0.5
    best, cut = -1.0, 0.5
    candidates = np.unique(p)
    for lo, hi in itertools.pairwise(candidates):
        t = (lo + hi) / 2  # between two observed values, so the cut does not sit on an example
        tpr = ((p >= t) & (y == 1)).sum() / positives
        tnr = ((p < t) & (y == 0)).sum() / negatives
        if (tpr + tnr) / 2 > best:
            best, cut = (tpr + tnr) / 2, float(t)
    return cut
