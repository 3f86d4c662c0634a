"""Free-text slot values out of the sentence a customer answers with.

A playbook asks "What is the new delivery address?" or "Which items?", and people answer in
sentences: "sure, it's 12 Main St, Springfield, 94107, US", "sorry - everything in that order",
"like I said, just the socks". The backend parses the value it is given (an address, item names,
item changes) and would read the whole sentence as the value, so the acknowledgements and
lead-ins are taken off here, deterministically, and the ways of saying "all of it" become the
one word the backend's parsers know ("all"). Nothing here decides anything: a value that is
wrong still meets the backend's own checks and the customer's confirmation.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["SlotKind", "clean_value", "is_question", "strip_lead_in"]

SlotKind = Literal["address", "items", "changes", "replacement"]

# Acknowledgements and fillers that open an answer ("sure,", "sorry -", "like I said,", "one sec..."),
# possibly several in a row ("ok sure, ..."). Not "so", "well" or "right": streets begin with them.
_ACK = re.compile(
    r"^(?:(?:ok(?:ay)?|sure(?: thing)?|yes|yeah|yep|yup|alright|um+|uh+|hmm+|sorry|again|oh|ah|"
    r"like i (?:said|told you|wrote)|as i (?:said|told you|wrote)|i (?:said|told you)|no problem|of course|"
    r"thanks|thank you|cheers|one sec(?:ond)?|hang on|hold on|let me see|let me check|got it)"
    r"(?![\w'])[\s,.:;!\-\u2013\u2014]*)+",
    re.I,
)
# What introduces the value itself: "it's", "the new address is", "please send it to", "I'd like to return".
_VERB = r"(?: (?:return|refund|exchange|send back|get|have|change))?"
_INTRO = re.compile(
    r"^(?:(?:it'?s|it is|that'?s|that is|that would be|this is|here it is|here you go|just|only|please|pls|"
    r"(?:the |my )?(?:new |correct |right )?(?:delivery |shipping )?address(?: is)?|"
    r"(?:please )?(?:send|ship|deliver) (?:it|them|the order|my order) to|it should go to|"
    r"(?:i'?d|i would) like(?: to)?" + _VERB + r"|i (?:want|need)(?: to)?" + _VERB + r"|i wanna" + _VERB + r"|"
    r"(?:can|could) you(?: please)?|(?:the )?items? (?:are|is)|(?:the )?ones? (?:are|is))"
    r"(?![\w'])[\s,.:;\-]*)+",
    re.I,
)
# Politeness after the value: "the same, thanks", "size 42 please".
_TAIL = re.compile(r"[\s,]*(?:(?<![\w'])(?:please|pls|thanks|thank you|thx|cheers|ta))?[\s.!]*$", re.I)
# Words before the house number: "my new place is 900 N Michigan Ave", "move 1234567 to 12 Main St"
# start at the number.
_BEFORE_NUMBER = re.compile(r"^[^,]*?\b(?:is|to|at)\s*:?\s+(?=\d)", re.I)
_ALL_WORDS = {"all", "everything", "whole", "entire", "lot", "every"}
# Words that may surround an "all" word without naming an item: "everything in that order", "all of it".
_ALL_FILLER = {
    "in", "on", "from", "of", "that", "this", "the", "my", "it", "them", "those", "these", "order", "items",
    "item", "things", "thing", "stuff", "please", "pls", "return", "refund", "exchange", "back", "send", "i",
    "want", "to", "would", "like", "i'd", "id", "just", "that's", "thats", "is", "was", "there", "single",
    "one", "bought", "ordered", "got", "parcel", "package", "delivery", "purchase",
}  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_QUESTION_START = re.compile(
    r"^(?:how|what|what's|whats|when|where|why|who|which|do|does|did|can|could|is|are|will|would|should|may)\b", re.I
)


def strip_lead_in(text: str) -> str:
    """The answer without the acknowledgements and lead-ins in front of it ("sure, it's ...")."""
    text = text.strip()
    while True:
        stripped = _INTRO.sub("", _ACK.sub("", text)).strip()
        if stripped == text:
            return text
        text = stripped


def _means_all(text: str) -> bool:
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    return bool(words) and bool(_ALL_WORDS & set(words)) and set(words) <= _ALL_WORDS | _ALL_FILLER


def clean_value(kind: SlotKind, text: str) -> str | None:
    """The value of a free-text slot of this kind in the answer, or None when nothing is left of it."""
    value = _TAIL.sub("", strip_lead_in(text)).strip(" \t\n.!")
    if not value:
        return None
    if kind == "items" and _means_all(value):
        # the backend's word for every line of the order (its parsers know "all", not every phrasing)
        return "all"
    if kind == "address":
        first, sep, rest = value.partition(",")
        value = _BEFORE_NUMBER.sub("", first) + sep + rest
    return value.strip() or None


def is_question(text: str) -> bool:
    """A message asking something: it has a question mark, or opens like a question ("how long does...")."""
    stripped = _ACK.sub("", text.strip())
    return "?" in text or bool(_QUESTION_START.match(stripped))
