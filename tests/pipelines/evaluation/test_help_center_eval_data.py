"""The help-center retrieval evaluation sets stay well-formed and honest.

`pipelines/evaluation/data/help_center_eval/` and `help_center_fresh/` (BEIR layout) label customer
questions with the articles of `playbooks/help_center/` that answer them. These checks keep the labels
pointing at real articles, keep every question labelled, and keep the questions apart from what they
grade: no question quotes an article's title, none is a training text of the intent model, and the
fresh set (scored once, by `bench/retrieval_help_center_fresh.py`) repeats no question of the older one.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.support.text_overlap import csv_texts, near_duplicates, normalise

ROOT = Path(__file__).resolve().parents[3]
SETS = ROOT / "pipelines" / "evaluation" / "data"
OLDER, FRESH = "help_center_eval", "help_center_fresh"
HELP_CENTER = ROOT / "playbooks" / "help_center"
DATASETS = ROOT / "datasets"

MIN_QUERIES = 110
MIN_UNANSWERABLE = {OLDER: 25, FRESH: 0}  # the fresh set measures ranking only: no answerability to fit


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_qrels(name: str) -> tuple[list[str], list[tuple[str, str, int]]]:
    header, *lines = (SETS / name / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    rows = []
    for line in lines:
        query_id, corpus_id, score = line.split("\t")
        rows.append((query_id, corpus_id, int(score)))
    return header.split("\t"), rows


@pytest.fixture(scope="module", params=[OLDER, FRESH])
def eval_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def queries(eval_set: str) -> list[dict[str, str]]:
    return read_jsonl(SETS / eval_set / "queries.jsonl")


@pytest.fixture(scope="module")
def unanswerable(eval_set: str) -> list[dict[str, str]]:
    path = SETS / eval_set / "unanswerable.jsonl"
    return read_jsonl(path) if path.exists() else []


@pytest.fixture(scope="module")
def qrels(eval_set: str) -> list[tuple[str, str, int]]:
    return read_qrels(eval_set)[1]


def article_ids() -> set[str]:
    # the corpus-id is the article's path under the help center, without ".md"
    return {path.relative_to(HELP_CENTER).with_suffix("").as_posix() for path in HELP_CENTER.glob("*/*.md")}


def article_titles() -> list[str]:
    titles = []
    for path in HELP_CENTER.glob("*/*.md"):
        match = re.search(r"^title: (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
        assert match, path
        titles.append(match.group(1).strip().strip("\"'"))
    return titles


def test_the_set_is_large_enough(eval_set, queries, unanswerable):
    assert len(queries) >= MIN_QUERIES
    assert len(unanswerable) >= MIN_UNANSWERABLE[eval_set]


def test_records_have_an_id_and_a_text_only(queries, unanswerable):
    for record in queries + unanswerable:
        assert set(record) == {"_id", "text"}, record
        assert record["text"].strip(), record


def test_ids_are_unique_and_queries_and_unanswerable_never_share_one(queries, unanswerable):
    query_ids = [q["_id"] for q in queries]
    unanswerable_ids = [u["_id"] for u in unanswerable]
    assert len(set(query_ids)) == len(query_ids)
    assert len(set(unanswerable_ids)) == len(unanswerable_ids)
    assert not set(query_ids) & set(unanswerable_ids)


def test_no_question_is_asked_twice(queries, unanswerable):
    texts = Counter(normalise(record["text"]) for record in queries + unanswerable)
    assert [text for text, n in texts.items() if n > 1] == []


def test_qrels_file_has_the_beir_header(eval_set):
    assert read_qrels(eval_set)[0] == ["query-id", "corpus-id", "score"]


def test_every_qrel_names_an_existing_article(qrels):
    known = article_ids()
    assert len(known) >= 40
    assert [(q, doc) for q, doc, _ in qrels if doc not in known] == []


def test_every_qrel_names_a_known_query_and_every_query_has_one(queries, qrels):
    query_ids = {q["_id"] for q in queries}
    labelled = {q for q, _, _ in qrels}
    assert labelled - query_ids == set()
    assert query_ids - labelled == set()


def test_unanswerable_questions_have_no_qrels(unanswerable, qrels):
    assert {u["_id"] for u in unanswerable} & {q for q, _, _ in qrels} == set()


def test_a_query_names_an_article_once_and_marks_at_most_one_best(qrels):
    pairs = Counter((q, doc) for q, doc, _ in qrels)
    assert [pair for pair, n in pairs.items() if n > 1] == []
    assert {score for _, _, score in qrels} <= {1, 2}
    by_query: dict[str, list[int]] = {}
    for q, _, score in qrels:
        by_query.setdefault(q, []).append(score)
    for q, scores in by_query.items():
        # 2 singles out the best of several relevant articles; a lone relevant article is just relevant
        expected = [1] if len(scores) == 1 else sorted([2] + [1] * (len(scores) - 1))
        assert sorted(scores) == expected, q


def test_every_article_is_relevant_to_some_query(qrels):
    assert article_ids() - {doc for _, doc, _ in qrels} == set()


def test_no_question_quotes_an_article_title(queries, unanswerable):
    # a question that repeats a title would be found by the title alone: the set would grade itself
    titles = [normalise(title) for title in article_titles()]
    quoting = [
        (record["_id"], title)
        for record in queries + unanswerable
        for title in titles
        if f" {title} " in f" {normalise(record['text'])} "
    ]
    assert quoting == []


def test_no_question_is_a_text_the_intent_model_trains_on(queries, unanswerable):
    texts = [record["text"] for record in queries + unanswerable]
    # the small hand-written training sets: equal or nearly equal
    training = csv_texts(DATASETS / "supportflow-phrasings" / "train.csv") + csv_texts(
        DATASETS / "out-of-scope" / "oos_train.csv"
    )
    assert near_duplicates(texts, training) == []
    # Bitext (4,514 rows, CDLA-Sharing): equal after normalising; the near check would take ~20 s
    bitext = {
        normalise(text)
        for text in csv_texts(DATASETS / "bitext-customer-support" / "bitext_customer_support_4514.csv", "instruction")
    }
    assert [text for text in texts if normalise(text) in bitext] == []


def test_the_fresh_set_shares_no_id_and_no_question_with_the_older_one():
    # the fresh set tests a fusion tuned on the older one: a repeated question would be graded on its own tuning
    older = read_jsonl(SETS / OLDER / "queries.jsonl") + read_jsonl(SETS / OLDER / "unanswerable.jsonl")
    fresh = read_jsonl(SETS / FRESH / "queries.jsonl")
    assert {r["_id"] for r in older} & {r["_id"] for r in fresh} == set()
    assert near_duplicates([r["text"] for r in fresh], [r["text"] for r in older]) == []
