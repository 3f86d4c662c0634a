"""Out-of-scope pieces of the trainer and of `nlu eval` that need no model: the split, the signal's
arithmetic, the threshold rule, the report's rates and curve."""

from __future__ import annotations

import numpy as np

from pipelines.ml.evaluate import OUT_OF_SCOPE, auroc, operating_point, tradeoff_curve
from pipelines.ml.train import (
    canonical_oos,
    choose_threshold,
    choose_weight,
    fit_gaussian,
    mahalanobis,
    stratified_split,
)


def test_adding_out_of_scope_rows_leaves_the_in_scope_split_unchanged():
    labels = [f"intent_{i % 5}" for i in range(200)]
    before = stratified_split(labels, 0.15, 0.10, 13)
    with_oos = labels + [OUT_OF_SCOPE] * 40
    train, val, test = stratified_split(with_oos, 0.15, 0.10, 13)
    assert tuple(sorted(i for i in part if i < 200) for part in (train, val, test)) == before
    oos_parts = [sum(1 for i in part if i >= 200) for part in (train, val, test)]
    assert oos_parts == [30, 4, 6], "out-of-scope rows reach train, validation and test"


def test_out_of_scope_aliases_become_one_label():
    assert canonical_oos(["oos", "track_order", "out_of_scope"], ("oos", "out_of_scope")) == [
        OUT_OF_SCOPE,
        "track_order",
        OUT_OF_SCOPE,
    ]
    assert canonical_oos(["oos"], ("none",)) == ["oos"]


def test_mahalanobis_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) + np.repeat(np.eye(6)[:3] * 4, 100, axis=0)
    gold = np.repeat(np.arange(3), 100)
    means, factor = fit_gaussian(x, gold, 3, shrinkage=0.0)
    cov = sum(np.cov((x[gold == c] - means[c]).T, bias=True) * 100 for c in range(3)) / (300 - 3)
    inv = np.linalg.inv(cov)
    queries = rng.normal(size=(5, 6)) * 3
    expected = [min((q - m) @ inv @ (q - m) for m in means) for q in queries]
    np.testing.assert_allclose(mahalanobis(queries, means, factor), expected, rtol=1e-8)


def test_far_points_score_higher_than_points_of_the_classes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4)) + np.repeat(np.eye(4)[:2] * 5, 100, axis=0)
    gold = np.repeat(np.arange(2), 100)
    means, factor = fit_gaussian(x, gold, 2, shrinkage=0.05)
    near = mahalanobis(means + 0.1, means, factor)
    far = mahalanobis(np.array([[0.0, 0.0, 20.0, 0.0]]), means, factor)
    assert far.min() > 10 * near.max()


def test_auroc_counts_pairs_and_ties():
    assert auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 1.0
    assert auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([0.5]), np.array([0.5])) == 0.5
    assert auroc(np.array([0.1, 0.5]), np.array([0.3])) == 0.5
    assert auroc(np.array([]), np.array([1.0])) is None


def test_operating_point_counts_out_of_scope_as_a_class():
    in_scores = np.array([0.1, 0.2, 0.9, 0.3])
    in_correct = np.array([True, False, True, True])
    oos_scores = np.array([0.8, 0.95, 0.25])
    p = operating_point(in_scores, in_correct, oos_scores, 0.5)
    assert p["in_scope_flag_rate"] == 0.25 and p["oos_recall"] == 2 / 3
    assert p["in_scope_accuracy"] == 0.5  # the wrong one and the flagged one do not count
    assert p["overall_accuracy"] == (2 + 2) / 7


def test_tradeoff_curve_runs_from_everything_flagged_to_nothing_flagged():
    rng = np.random.default_rng(2)
    in_scores, oos_scores = rng.normal(0, 1, 500), rng.normal(3, 1, 50)
    curve = tradeoff_curve(in_scores, np.ones(500, dtype=bool), oos_scores)
    thresholds = [p["threshold"] for p in curve]
    assert thresholds == sorted(thresholds)
    recalls = [p["oos_recall"] for p in curve]
    flags = [p["in_scope_flag_rate"] for p in curve]
    assert recalls == sorted(recalls, reverse=True) and flags == sorted(flags, reverse=True)
    assert flags[-1] == 0.0 and recalls[0] == 1.0
    assert any(abs(f - 0.01) <= 0.002 for f in flags), "a point near the usual 1% operating point"


def test_threshold_without_out_of_scope_rows_flags_the_target_share():
    scores = np.linspace(0.0, 1.0, 1001)
    threshold, rule = choose_threshold(scores, np.ones(1001, dtype=bool), np.zeros(0), 0.02, 0.05)
    assert abs(np.mean(scores > threshold) - 0.02) < 0.002
    assert "no out-of-scope validation rows" in rule


def test_threshold_with_out_of_scope_rows_sits_in_the_middle_of_the_gap():
    in_scores = np.array([0.0, 0.1, 0.2, 0.3, 1.0])  # one in-scope outlier at 1.0
    oos_scores = np.array([2.0, 3.0])
    threshold, _ = choose_threshold(in_scores, np.ones(5, dtype=bool), oos_scores, 0.01, 0.5)
    assert threshold == 1.5  # catches both, flags none of the first four, margin both sides
    # with a cap that forbids flagging the outlier the gap between 1.0 and 2.0 is still best
    threshold, _ = choose_threshold(in_scores, np.ones(5, dtype=bool), oos_scores, 0.01, 0.0)
    assert threshold == 1.5


def test_threshold_respects_the_in_scope_flag_cap():
    in_scores = np.array([0.0, 0.1, 0.2, 2.5, 2.6])  # two in-scope texts among the out-of-scope scores
    oos_scores = np.array([2.0, 2.1, 2.2, 2.3, 2.4, 2.7])
    uncapped, _ = choose_threshold(in_scores, np.ones(5, dtype=bool), oos_scores, 0.01, 1.0)
    capped, _ = choose_threshold(in_scores, np.ones(5, dtype=bool), oos_scores, 0.01, 0.0)
    assert uncapped < 2.0, "accuracy alone: flag the two in-scope texts, catch five of six"
    assert 2.6 <= capped < 2.7, "flag no in-scope text: only the highest out-of-scope score is caught"


def test_weight_follows_the_signal_that_separates():
    rng = np.random.default_rng(3)
    in_m, oos_m = rng.normal(0, 1, 300), rng.normal(4, 1, 30)  # distance separates
    in_c, oos_c = rng.normal(0, 1, 300), rng.normal(0, 1, 30)  # classifier evidence does not
    stats = (0.0, 1.0, 0.0, 1.0)
    w, by_w = choose_weight(in_m, in_c, oos_m, oos_c, stats)
    assert w >= 0.8 and by_w["1.0"] > by_w["0.0"]
    assert choose_weight(in_m, in_c, np.zeros(0), np.zeros(0), stats) == (0.5, {})
