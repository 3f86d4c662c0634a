"""Reply PII: the contact and payment data a reply may disclose.

Emails, phones and IBANs in the reply must come from the customer (this session or their profile); card
numbers never appear in a reply except as the last four digits.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict

from operators.nlu.entities import _EMAIL_RE, _NUMERIC_DATE_RE, _PHONE_RE
from operators.policy.screening import visible_text

__all__ = ["ReplyFinding", "check_reply_pii"]


class ReplyFinding(BaseModel):
    """A reply that would disclose contact or payment data; names the type only, so the log leaks nothing."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["email", "phone_number", "card_number", "iban"]
    reason: str


_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3(?:0[0-5]|[689])|6(?:011|5|4[4-9]|2)|35|50|5[6-8]|6[0-9])")
"""Issuer prefixes (Visa, Mastercard, Amex, Diners, Discover, JCB, UnionPay, Maestro): a Luhn-valid order id
starting with 1, 7, 8 or 9 is not a card."""


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _cards(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits) and _CARD_PREFIX.match(digits):
            spans.append(m.span())
    return spans


def _ibans(text: str) -> list[tuple[tuple[int, int], str]]:
    out = []
    for m in _IBAN.finditer(text.upper()):
        compact = m.group().replace(" ", "")
        # the regex is greedy over trailing words; try the longest valid prefix
        for end in range(len(compact), 14, -1):
            if _iban_valid(compact[:end]):
                out.append((m.span(), compact[:end]))
                break
    return out


def _phone_key(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return digits[2:] if digits.startswith("00") else digits.lstrip("0")


def _phones(text: str, skip: list[tuple[int, int]]) -> list[str]:
    out = []
    for m in _PHONE_RE.finditer(text):
        if any(m.start() < e and s < m.end() for s, e in skip):
            continue
        digits = sum(c.isdigit() for c in m.group())
        if 7 <= digits <= 15 and not _NUMERIC_DATE_RE.match(m.group()):
            out.append(_phone_key(m.group()))
    return out


def _same_phone(a: str, b: str) -> bool:
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 7 and long_.endswith(short)


def check_reply_pii(reply: str, customer_texts: list[str], known_values: list[str]) -> ReplyFinding | None:
    """The first kind of personal data in the reply that the customer did not give us, or None.

    An email, phone number or IBAN may be repeated only when the customer wrote it this session or it is one of
    their own profile values (`known_values`). Card numbers are never repeated; "•••• 4242" is fine because four
    digits are not a card number.
    """
    text = visible_text(reply)
    if _cards(text):
        return ReplyFinding(kind="card_number", reason="reply contains a card number")
    sources = [unicodedata.normalize("NFKC", t) for t in [*customer_texts, *known_values] if isinstance(t, str)]
    ibans = _ibans(text)
    if ibans:
        allowed = {compact for source in sources for _, compact in _ibans(source)}
        allowed |= {re.sub(r"\s", "", s).upper() for s in known_values if isinstance(s, str)}
        if any(compact not in allowed for _, compact in ibans):
            return ReplyFinding(kind="iban", reason="reply contains an IBAN the customer did not give")
    emails = {m.group().lower() for m in _EMAIL_RE.finditer(text)}
    if emails:
        allowed_emails = {m.group().lower() for source in sources for m in _EMAIL_RE.finditer(source)}
        if emails - allowed_emails:
            return ReplyFinding(kind="email", reason="reply contains an email address the customer did not give")
    skip = [span for span, _ in ibans] + [m.span() for m in _EMAIL_RE.finditer(text)]
    phones = _phones(text, skip)
    if phones:
        allowed_phones = [p for source in sources for p in _phones(source, [])]
        allowed_phones += [_phone_key(v) for v in known_values if isinstance(v, str) and re.search(r"\d{3}", v)]
        if any(not any(_same_phone(p, a) for a in allowed_phones) for p in phones):
            return ReplyFinding(kind="phone_number", reason="reply contains a phone number the customer did not give")
    return None
