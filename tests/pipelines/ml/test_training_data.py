"""The hand-written training data keeps apart from what it is judged on.

- `datasets/out-of-scope/oos_train.csv` (trained on) shares no text, exactly or nearly, with
  `oos_heldout.csv` (reported on), so the held-out catch rate measures unseen topics;
- `datasets/supportflow-phrasings/train.csv` shares none with its `eval.csv` nor with the agent
  evaluation's customer phrasings and tasks, so neither figure measures memory.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.text_overlap import csv_texts, near_duplicates, normalise, yaml_texts

ROOT = Path(__file__).resolve().parents[3]
OOS_TRAIN = ROOT / "datasets" / "out-of-scope" / "oos_train.csv"
OOS_HELDOUT = ROOT / "datasets" / "out-of-scope" / "oos_heldout.csv"
PHRASINGS_TRAIN = ROOT / "datasets" / "supportflow-phrasings" / "train.csv"
PHRASINGS_EVAL = ROOT / "datasets" / "supportflow-phrasings" / "eval.csv"
AGENT_DATA = ROOT / "pipelines" / "evaluation" / "data"


def agent_evaluation_texts() -> list[str]:
    files = [AGENT_DATA / "customer_phrasings.yaml", *sorted((AGENT_DATA / "agent_tasks").glob("*.yaml"))]
    assert len(files) > 2 and all(f.is_file() for f in files)
    return yaml_texts(files)


def test_overlap_check_sees_through_numbers_placeholders_case_and_punctuation():
    assert normalise("Where is order #1234567?") == normalise("where is order {order}")
    assert near_duplicates(["Cancel order 5544332 please!"], ["cancel order {order} please"])
    assert near_duplicates(["when will my parcel come"], ["when will my parcels come"])
    assert not near_duplicates(["my parcel never came"], ["do you ship internationally?"])


def test_oos_training_file_is_large_enough_and_shares_no_text_with_the_held_out_file():
    train = csv_texts(OOS_TRAIN)
    assert len(train) >= 150 and len({t.lower() for t in train}) == len(train)
    assert near_duplicates(train, csv_texts(OOS_HELDOUT)) == []


def test_oos_training_file_holds_arithmetic_and_near_domain_questions():
    import csv

    with OOS_TRAIN.open(newline="") as f:
        topics = [row["topic"] for row in csv.DictReader(f)]
    assert topics.count("arithmetic") >= 20
    assert {"courier", "other_companies", "selling", "shopping_advice"} <= set(topics)


def test_everyday_training_phrasings_share_no_text_with_any_evaluation():
    train = csv_texts(PHRASINGS_TRAIN)
    assert len(train) >= 200
    assert near_duplicates(train, csv_texts(PHRASINGS_EVAL)) == []
    assert near_duplicates(train, agent_evaluation_texts()) == []


def test_oos_training_texts_are_not_evaluation_texts_either():
    train = csv_texts(OOS_TRAIN)
    assert near_duplicates(train, csv_texts(PHRASINGS_EVAL) + agent_evaluation_texts()) == []
