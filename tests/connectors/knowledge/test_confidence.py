"""The answerability confidence: a calibrated logistic fit and a balanced threshold."""

from __future__ import annotations

import numpy as np

from connectors.knowledge.confidence import answer_features, fit_answerability


def test_features_are_top_cosine_its_margin_over_the_fifth_and_log_bm25():
    features = answer_features([0.5, 0.8, 0.7, 0.6, 0.55, 0.1], [3.0, 0.0])
    assert features[0] == 0.8
    assert abs(features[1] - (0.8 - 0.5)) < 1e-9  # the fifth best is 0.5
    assert abs(features[2] - np.log1p(3.0)) < 1e-9
    assert answer_features([], []) == [0.0, 0.0, 0.0]


def test_a_separable_set_is_split_at_the_gap_and_probabilities_follow_the_evidence():
    rng = np.random.default_rng(0)
    good = np.column_stack([rng.uniform(0.6, 0.9, 40), rng.uniform(0.05, 0.2, 40), rng.uniform(2, 4, 40)])
    bad = np.column_stack([rng.uniform(0.1, 0.4, 40), rng.uniform(0.0, 0.05, 40), rng.uniform(0, 1.5, 40)])
    model = fit_answerability(np.vstack([good, bad]), np.array([1] * 40 + [0] * 40))
    p_good, p_bad = model.predict(good), model.predict(bad)
    assert (p_good >= model.threshold).all() and (p_bad < model.threshold).all()
    assert model.confidence([0.85, 0.7, 0.6, 0.6, 0.6], [4.0]) > model.confidence([0.3, 0.3, 0.3, 0.3, 0.3], [0.5])
    assert all(c > 0 for c in model.coefficients)  # more similarity, more margin, more words matched: more confidence


def test_overlapping_classes_give_calibrated_rates():
    """On noisy data the fitted probability tracks the observed rate of answerable examples."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (4000, 3))
    true_p = 1 / (1 + np.exp(-(6 * x[:, 0] - 3)))
    y = (rng.uniform(size=4000) < true_p).astype(int)
    model = fit_answerability(x, y)
    p = model.predict(x)
    for lo in (0.1, 0.4, 0.7):
        band = (p >= lo) & (p < lo + 0.2)
        assert abs(y[band].mean() - p[band].mean()) < 0.05
