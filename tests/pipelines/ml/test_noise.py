"""Misspelled training copies: one keyboard slip per copy, identifiers untouched, training split only."""

from __future__ import annotations

import random

from pipelines.ml.noise import misspell
from pipelines.ml.train import add_misspelled_copies


def _distance(a: str, b: str) -> int:
    """Levenshtein distance, with a swap of neighbours counted as one (Damerau)."""
    d = [[max(i, j) if min(i, j) == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def test_a_misspelled_copy_is_one_slip_away_and_keeps_numbers_emails_and_codes():
    rng = random.Random(3)
    text = "please cancel order 4471203, email jane.doe@example.com, ref ORD-5520, all booked"
    for _ in range(200):
        slipped = misspell(text, rng)
        assert _distance(text, slipped) == 1, slipped
        for kept in ("4471203", "jane.doe@example.com", "ORD-5520"):
            assert kept in slipped


def test_a_text_without_a_word_of_four_letters_is_left_as_it_is():
    assert misspell("hi 123 ok", random.Random(0)) == "hi 123 ok"


def test_copies_join_the_training_split_only_and_the_same_seed_makes_the_same_copies():
    def copies(seed: int) -> tuple[list[str], list[str], list[int]]:
        texts = ["where is my parcel", "cancel my order please", "reset my password", "how do refunds work"]
        labels = ["track_order", "cancel_order", "recover_password", "check_refund_policy"]
        train_idx = [0, 1]  # 2 and 3 are validation / test
        assert add_misspelled_copies(texts, labels, train_idx, copies=2, seed=seed) == 4
        return texts, labels, train_idx

    texts, labels, train_idx = copies(7)
    assert len(texts) == 8 and train_idx == [0, 1, 4, 5, 6, 7]
    assert labels[4:] == ["track_order", "track_order", "cancel_order", "cancel_order"]
    assert all(_distance(texts[i], texts[0 if i < 6 else 1]) == 1 for i in range(4, 8))
    assert copies(7) == (texts, labels, train_idx)
