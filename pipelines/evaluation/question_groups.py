"""Reworded questions as one: the content-gap report's grouping of the wordings its SQL returns.

ClickHouse groups a question's spellings (case, punctuation, spacing); customers also reword ("do you sell
lawn mowers" / "can I buy a lawnmower from you"), and a knowledge owner wants that as one missing article
with a count, not as many rows of one. Grouping is by meaning when the embedder is at hand (the knowledge
base's own all-MiniLM-L6-v2, in process) and by shared words otherwise, and says which it used.

Deterministic: the wordings are taken most frequent first (ties by text), and each joins the most similar
group whose leader (its first, most frequent wording) is at least `threshold` alike, else leads a new one.
Comparing with the leader alone keeps a chain of small rewordings from drifting into another question.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[str]], np.ndarray]
"""Texts → one L2-normalised vector per text (the knowledge base embedder's `embed_queries`)."""

# all-MiniLM-L6-v2 cosine measured on help-center questions here: rewordings of one question 0.73–0.83
# ("do you sell lawn mowers" / "can I buy a lawnmower from you" 0.79), neighbours that need another
# article 0.62–0.67 ("... lawn mowers" / "... garden tools", "do you ship to canada" / "can you deliver
# to toronto"), unrelated ones below 0.35
EMBEDDING_THRESHOLD = 0.70
JACCARD_THRESHOLD = 0.5
# words that say nothing about what is asked: two questions sharing only these are not alike
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    _WORD.findall(
        "a an the i me my we our you your it its is are was be been do does did can could would will shall should "
        "to of for in on at by with from about and or if there this that what how when where which who please "
        "hi hello thanks thank any some have has"
    )
)


@dataclass(frozen=True)
class Grouping:
    """How the wordings were grouped: by `embedding` or `jaccard`, and from what similarity on."""

    method: str
    threshold: float
    model: str = ""

    def describe(self) -> str:
        if self.method == "embedding":
            return f"by meaning: {self.model} cosine >= {self.threshold:.2f}"
        return f"by shared words: normalised-token Jaccard >= {self.threshold:.2f} (no embedder)"


def tokens(question: str) -> frozenset[str]:
    """The words that carry a question's meaning: lower case, stop words out, a plural's s dropped."""
    words = (w for w in _WORD.findall(question.lower()) if w not in _STOP)
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def group_questions(questions: Sequence[str], embed: Embed | None = None) -> tuple[list[list[int]], Grouping]:
    """Indexes of `questions` in groups, in the order given (callers give most frequent first).

    Each group lists its members in that order; its first is the leader. With `embed`, similarity is the
    cosine of the embeddings; without one, or when embedding fails, the Jaccard index of `tokens`.
    """
    if not questions:
        grouping = Grouping("embedding", EMBEDDING_THRESHOLD, _model_name(embed)) if embed else None
        return [], grouping or Grouping("jaccard", JACCARD_THRESHOLD)
    if embed is not None:
        try:
            vectors = np.asarray(embed(list(questions)), dtype=np.float64)
        except Exception as exc:  # the report still groups, by words, and says so
            log.warning("question grouping: embedding failed, grouping by shared words: %r", exc)
        else:
            return _leaders(len(questions), lambda i, j: float(vectors[i] @ vectors[j]), EMBEDDING_THRESHOLD), Grouping(
                "embedding", EMBEDDING_THRESHOLD, _model_name(embed)
            )
    sets = [tokens(q) for q in questions]
    return _leaders(len(questions), lambda i, j: jaccard(sets[i], sets[j]), JACCARD_THRESHOLD), Grouping(
        "jaccard", JACCARD_THRESHOLD
    )


def _leaders(n: int, similarity: Callable[[int, int], float], threshold: float) -> list[list[int]]:
    groups: list[list[int]] = []
    for i in range(n):
        best, best_score = None, threshold
        for group in groups:
            score = similarity(group[0], i)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = group, score
        if best is None:
            groups.append([i])
        else:
            best.append(i)
    return groups


def _model_name(embed: Embed | None) -> str:
    # the embedder's own model id when it has one (OnnxEmbedder.embed_queries' owner), for the report to name
    owner = getattr(embed, "__self__", None)
    return str(getattr(owner, "model_id", "") or "all-MiniLM-L6-v2")


def default_embedder(model_repository: Path) -> Embed | None:
    """The knowledge base's embedder in process (one thread: a report, not a server), or None when the
    exported model is not there or its runtime is missing: the report then groups by shared words."""
    try:
        from connectors.knowledge.embedding import EMBEDDER_MODEL_NAME, OnnxEmbedder
        from connectors.triton.client import find_version_dir

        version_dir = find_version_dir(model_repository, EMBEDDER_MODEL_NAME)
        if version_dir is None:
            log.info("question grouping: no %s in %s; grouping by shared words", EMBEDDER_MODEL_NAME, model_repository)
            return None
        return OnnxEmbedder(version_dir, intra_op_threads=1).embed_queries
    except (ImportError, OSError, ValueError) as exc:
        log.warning("question grouping: no embedder (%r); grouping by shared words", exc)
        return None
