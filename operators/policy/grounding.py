"""Is a generated reply grounded? Every figure, link and claimed action in it must come from its sources.

A language model's reply is a proposal. Before it leaves, each number in it (an amount, a date's digits, an
order number, a count of days) and each link must appear in the texts it was given (passages, tool results,
the template reply it rewrote, what the customer wrote), and each action it says is done or will be done
("I've refunded you", "your order has been cancelled", "I'll send a label") must be one the turn's tools
performed or its template reply already states. Anything else blocks the generated reply; `guard` then sends
the non-LLM reply instead. Deliberately strict: a paraphrase that turns "30" into "thirty" passes, one that
turns "30 days" into "a month" passes, one that turns it into "31 days" does not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import Stemmer

__all__ = ["GroundingFinding", "check_grounding"]

_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\"']+", re.IGNORECASE)
# an action stated as done or promised; the stem names the kind of action
_ACTIONS = (
    "refund", "cancel", "chang", "updat", "modif", "return", "exchang", "replac", "issu", "process", "sen[dt]",
    "ship", "submit", "credit", "reset", "escalat", "email", "book", "schedul", "reimburs", "waiv", "approv",
)  # fmt: skip
_STEMS = "|".join(_ACTIONS)
_CLAIM = re.compile(
    rf"\b(?:(?:i|we)(?:'ve|’ve| have|'ll|’ll| will| am going to| are going to)?\s+(?:just\s+|now\s+|already\s+)?"
    rf"|(?:has|have|is|are|was|were|will be|'s|’s)\s+(?:now\s+|just\s+|already\s+)?(?:been\s+)?)"
    rf"((?:{_STEMS})\w*)",
    re.IGNORECASE,
)


_MARKUP = re.compile(r"</?\s*untrusted|^\s*(?:sources|draft|customer message|reply)\s*(?:\(|:)", re.I | re.M)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
MIN_SUPPORT = 0.6
MIN_CONTENT_WORDS = 4  # shorter sentences ("Happy to help!") carry no claim worth a ratio
# function words and the words any support reply uses: a sentence is judged by the rest
_STOP = frozenset(
    word
    for line in (Path(__file__).parent / "data" / "grounding_stopwords.txt").read_text(encoding="utf-8").splitlines()
    if not line.startswith("#")
    for word in line.split()
)
_STEMMER = Stemmer.Stemmer("english")


@dataclass(frozen=True)
class GroundingFinding:
    kind: str  # ungrounded_number | ungrounded_link | unperformed_action | unsupported_sentence | prompt_markup
    value: str

    @property
    def reason(self) -> str:
        what = {
            "ungrounded_number": "states a number its sources do not",
            "ungrounded_link": "states a link its sources do not",
            "unperformed_action": "states an action no tool performed",
            "unsupported_sentence": "has a sentence its sources do not support",
            "prompt_markup": "echoes the prompt's markup",
        }
        return f"generated reply {what[self.kind]}: {self.value[:120]!r}"


@cache
def _stem(word: str) -> str:
    return str(_STEMMER.stemWord(word))


def _content(text: str) -> list[str]:
    return [_stem(w) for w in (m.lower() for m in _WORD.findall(text)) if w not in _STOP and len(w) > 1]


def _digits(text: str) -> set[str]:
    """Each number's digit runs, so "$1,234.50", "1234.50" and "1234,50" all yield 1234 and 50."""
    runs: set[str] = set()
    for number in _NUMBER.findall(text):
        runs.update(part.lstrip("0") or "0" for part in re.split(r"[.,:/-]", number) if part)
        runs.add(re.sub(r"\D", "", number).lstrip("0") or "0")
    return runs


def _action(word: str) -> str:
    lowered = word.lower()
    for stem in _ACTIONS:
        if re.match(stem, lowered):
            return stem
    return lowered


def check_grounding(
    reply: str, sources: Sequence[str], performed: Sequence[str] = (), min_support: float = MIN_SUPPORT
) -> GroundingFinding | None:
    """The first fact in `reply` that `sources` do not back, or None.

    `performed`: the names of the tools that succeeded this turn (`payments.refund`, `orders.cancel`...).
    """
    text = unicodedata.normalize("NFKC", reply)
    known = unicodedata.normalize("NFKC", "\n".join(sources))
    markup = _MARKUP.search(text)
    if markup is not None:
        return GroundingFinding("prompt_markup", markup.group(0))
    known_runs = _digits(known)
    for number in _NUMBER.findall(text):
        parts = [p.lstrip("0") or "0" for p in re.split(r"[.,:/-]", number) if p]
        whole = re.sub(r"\D", "", number).lstrip("0") or "0"
        if whole not in known_runs and not all(p in known_runs for p in parts):
            return GroundingFinding("ungrounded_number", number)
    known_lower = known.lower()
    for url in _URL.findall(text):
        if url.rstrip(".,;:!?").lower() not in known_lower:
            return GroundingFinding("ungrounded_link", url)
    done = {_action(name.rsplit(".", 1)[-1]) for name in performed}
    stated = {_action(m.group(1)) for m in _CLAIM.finditer(known)}
    for match in _CLAIM.finditer(text):
        stem = _action(match.group(1))
        if stem not in done and stem not in stated:
            return GroundingFinding("unperformed_action", match.group(0).strip())
    vocabulary = set(_content(known))
    for sentence in _SENTENCES.split(_URL.sub(" ", text)):
        words = _content(sentence)
        if len(words) >= MIN_CONTENT_WORDS and sum(w in vocabulary for w in words) / len(words) < min_support:
            return GroundingFinding("unsupported_sentence", sentence.strip())
    return None
