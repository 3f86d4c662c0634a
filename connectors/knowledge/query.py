"""The retrieval query for a customer's turn: cleaned of identifiers, and completed from earlier turns.

No model: rules that are cheap and deterministic.
- `clean_query` removes what helps no retriever and should not reach an index's logs: e-mail
  addresses, URLs, phone numbers, and ids (runs of digits, hex strings, order numbers).
- `rewrite_query` expands a follow-up ("and for international orders?", "what about the gold
  one?", "how long does it take?") with the content words of the customer's earlier turns, newest
  first, that the current turn lacks. A turn is a follow-up when it is short, opens like a
  continuation ("and", "what about", "also"), or leans on a pronoun ("it", "that", "this one").
  A self-contained turn is searched as it is: the conversation's old topic would pull the results
  away from the new one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from connectors.knowledge.lexical import stopwords

__all__ = ["clean_query", "content_words", "is_follow_up", "query_facets", "rewrite_query"]

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_PHONE = re.compile(r"(?:\+?\d[\d\s().-]{6,}\d)")
_ID = re.compile(r"\b(?=[A-Za-z-]*\d)[A-Za-z0-9-]{6,}\b")  # a token of 6+ characters with a digit in it
_WORD = re.compile(r"(?u)\b[^\W_][\w'-]*\b")
_OPENERS = (
    "and ", "also ", "what about", "how about", "what if", "but what", "same for", "and for", "or ", "plus ",
    "then ", "ok and", "okay and", "what else",
)  # fmt: skip
_ANAPHORA = frozenset({"it", "its", "that", "this", "these", "those", "they", "them", "their", "one", "ones"})
_FILLER = frozenset({"please", "thanks", "thank", "hi", "hello", "hey", "ok", "okay", "yes", "no", "so", "well"})


def clean_query(text: str) -> str:
    """The text without e-mail addresses, URLs, phone numbers and ids; whitespace collapsed."""
    for pattern in (_EMAIL, _URL, _PHONE, _ID):
        text = pattern.sub(" ", text)
    return " ".join(text.split())


def content_words(text: str) -> list[str]:
    """The words that carry the topic: not stop words, not filler; lower-cased, first occurrence order."""
    stop = stopwords()
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word not in stop and word not in _FILLER and not word.isdigit() and len(word) > 1:
            seen.setdefault(word, None)
    return list(seen)


def is_follow_up(text: str, short_words: int = 4) -> bool:
    lowered = " ".join(text.lower().split())
    if not lowered:
        return False
    words = _WORD.findall(lowered)
    return (
        lowered.startswith(_OPENERS)
        or len(content_words(lowered)) <= short_words - 2
        or len(words) <= short_words
        or any(w in _ANAPHORA for w in words)
    )


def rewrite_query(history: Sequence[str], current: str, max_added_words: int = 12) -> str:
    """The query to retrieve with for `current`, given the customer's earlier turns (oldest first).

    A follow-up gets up to `max_added_words` content words of the earlier turns that it does not
    already have, newest turn first, appended after its own text; anything else is only cleaned.
    """
    query = clean_query(current)
    if not history or not is_follow_up(query):
        return query
    have = set(content_words(query))
    added: list[str] = []
    for turn in reversed(history):
        for word in content_words(clean_query(turn)):
            if word not in have and len(added) < max_added_words:
                have.add(word)
                added.append(word)
        if len(added) >= max_added_words:
            break
    return f"{query} {' '.join(added)}".strip() if added else query


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def query_facets(text: str, min_content_words: int = 3, max_facets: int = 8) -> list[str]:
    """The sentences of a long message that carry a topic of their own, each a query of its own.

    A customer who explains a situation touches several things at once ("I have a Gold card and an
    EcoCard; the cash back looks wrong; I want to dispute it"); one vector of the whole message
    blurs them, and BM25 lets the longest sentence dominate. Searching each sentence too and
    fusing the lists finds the document for each need. A message of one sentence has no facets.
    """
    sentences = [s.strip() for s in _SENTENCE.split(clean_query(text)) if s.strip()]
    facets = [s for s in sentences if len(content_words(s)) >= min_content_words]
    return facets[:max_facets] if len(facets) > 1 else []
