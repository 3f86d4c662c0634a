"""BM25 over chunks in memory (`bm25s`): the lexical retriever of the evaluation, and of small deployments.

Text is analysed once, the same way for chunks and queries: lower-cased, words of two or more
letters or digits, English stop words removed, Snowball (Porter 2) stemmed — the analysis
PostgreSQL's `english` text-search configuration does too, so figures carry over to the store's
full-text search. Scoring is Lucene's BM25 (k1 1.2, b 0.75 by default; measured, see README,
"Knowledge: retrieval quality").
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["Bm25Index", "analyse", "stopwords"]

_WORD = re.compile(r"(?u)\b\w\w+\b")


# Snowball's English stop words: the list PostgreSQL's `english` configuration uses (english.stop).
_SNOWBALL_ENGLISH = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom this that
    these those am is are was were be been being have has had having do does did doing a an the and
    but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here
    there when where why how all any both each few more most other some such no nor not only own
    same so than too very s t can will just don should now
    """.split()  # noqa: SIM905 (a word list reads better as text)
)


def stopwords() -> frozenset[str]:
    """English stop words: Snowball's list, as PostgreSQL's `english` text search uses."""
    return _SNOWBALL_ENGLISH


@lru_cache(maxsize=1)
def _stemmer():  # type: ignore[no-untyped-def]
    import Stemmer

    return Stemmer.Stemmer("english")


def analyse(text: str, bigrams: bool = False) -> list[str]:
    """The terms BM25 matches on: lower-cased, stop words out, stemmed; with `bigrams`, each adjacent pair too.

    Pairs let a query's "silver rewards card" match that phrase above a text that only has the three
    words apart (product names are most of what tells support articles apart).
    """
    stop = stopwords()
    words = [w for w in _WORD.findall(text.lower()) if w not in stop]
    terms = list(_stemmer().stemWords(words))
    if bigrams:
        terms += [f"{a}_{b}" for a, b in itertools.pairwise(terms)]
    return terms


class Bm25Index:
    """An immutable BM25 index of `texts`; `scores` gives every text's score for a query."""

    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75, bigrams: bool = False) -> None:
        import bm25s

        # bm25s sets its own logger to DEBUG on import, so every build printed a line under any CLI
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.size = len(texts)
        self.bigrams = bigrams
        self._model = bm25s.BM25(k1=k1, b=b, method="lucene")
        corpus = [analyse(t, bigrams) or ["\x00empty"] for t in texts]  # bm25s rejects an empty document
        self._model.index(corpus, show_progress=False)
        self._vocab: dict[str, int] = dict(self._model.vocab_dict)

    def scores(self, query: str) -> np.ndarray:
        """float32 [len(texts)]: 0 where no query term occurs."""
        terms = [t for t in analyse(query, self.bigrams) if t in self._vocab]
        if not terms or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._model.get_scores(terms), dtype=np.float32)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """The best `k` (index, score) pairs with a positive score, best first."""
        scores = self.scores(query)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]
