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


@dataclass(frozen=True)
class GroundingFinding:
    kind: str  # ungrounded_number | ungrounded_link | unperformed_action
    value: str

    @property
    def reason(self) -> str:
        what = {"ungrounded_number": "a number", "ungrounded_link": "a link", "unperformed_action": "an action"}
        return f"generated reply states {what[self.kind]} its sources do not: {self.value!r}"


def _digits(text: str) -> set[str]:
    """Each number's digit runs, so "$1,234.50", "1234.50" and "1234,50" all yield 1234 and 50."""
    runs: set[str] = set()
    for number in _NUMBER.findall(text):
        runs.update(part.lstrip("0") or "0" for part in re.split(r"[.,:/-]", number) if part)
        runs.add(re.sub(r"\D", "", number).lstrip("0") or "0")
    return runs


def _stem(word: str) -> str:
    lowered = word.lower()
    for stem in _ACTIONS:
        if re.match(stem, lowered):
            return stem
    return lowered


def check_grounding(reply: str, sources: Sequence[str], performed: Sequence[str] = ()) -> GroundingFinding | None:
    """The first fact in `reply` that `sources` do not back, or None.

    `performed`: the names of the tools that succeeded this turn (`payments.refund`, `orders.cancel`...).
    """
    text = unicodedata.normalize("NFKC", reply)
    known = unicodedata.normalize("NFKC", "\n".join(sources))
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
    done = {_stem(name.rsplit(".", 1)[-1]) for name in performed}
    stated = {_stem(m.group(1)) for m in _CLAIM.finditer(known)}
    for match in _CLAIM.finditer(text):
        stem = _stem(match.group(1))
        if stem not in done and stem not in stated:
            return GroundingFinding("unperformed_action", match.group(0).strip())
    return None
