"""PresidioRedactor on real presidio + spaCy: the PII of a support chat goes, the rest stays."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from connectors.pii import PresidioRedactor
from pipelines.runtime.settings import PROJECT_DIR

# (text, PII that must disappear, words that must survive)
FIXTURE: list[tuple[str, list[str], list[str]]] = [
    (
        "Hi, I'm John Smith and my order ORD-12345 hasn't arrived, email me at john.smith@example.com",
        ["John Smith", "john.smith@example.com"],
        ["ORD-12345", "order", "arrived"],
    ),
    ("Please call me on +1 415 555 0134 about my refund", ["+1 415 555 0134"], ["refund", "call"]),
    ("my number is (415) 555-0134, can you cancel order 1234567?", ["(415) 555-0134"], ["cancel", "1234567"]),
    ("UK customer here: +44 20 7946 0958. Where is my package?", ["+44 20 7946 0958"], ["package"]),
    ("charge it to my card 4111 1111 1111 1111 please", ["4111 1111 1111 1111"], ["charge", "card"]),
    (
        "card number 5500-0000-0000-0004 was declined, track order #7654321",
        ["5500-0000-0000-0004"],
        ["declined", "#7654321"],
    ),
    ("This is Maria Garcia, I want to change my shipping address", ["Maria Garcia"], ["shipping address"]),
    (
        "contact sarah.oneil+orders@mail.co.uk or 415.555.0134 about invoice INV-20331",
        ["sarah.oneil+orders@mail.co.uk", "415.555.0134"],
        ["INV-20331", "invoice"],
    ),
    (
        "My SSN is 536-22-8714 and my IBAN is DE89 3704 0044 0532 0130 00, refund there",
        ["536-22-8714", "DE89 3704 0044 0532 0130 00"],
        ["refund"],
    ),
    ("how do I get a refund for my last purchase? Thanks, Priya Patel", ["Priya Patel"], ["refund", "purchase"]),
    ("the app at 192.168.10.24 crashes; text me at 4155550134", ["192.168.10.24", "4155550134"], ["crashes"]),
]


@pytest.fixture(scope="module")
def redactor() -> PresidioRedactor:
    redactor = PresidioRedactor()
    redactor.warm_up()
    return redactor


@pytest.fixture(scope="module")
def redacted(redactor: PresidioRedactor) -> list[str]:
    return redactor.redact_many([text for text, _, _ in FIXTURE])


@pytest.mark.parametrize("index", range(len(FIXTURE)))
def test_pii_is_replaced_by_typed_placeholders_and_the_rest_survives(redacted, index):
    _text, pii, kept = FIXTURE[index]
    out = redacted[index]
    for value in pii:
        assert value not in out, f"{value!r} survived in {out!r}"
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 7:  # no leftover fragment of a number (a partial match would leak the rest)
            assert digits[-4:] not in re.sub(r"\D", "", out), out
    for word in kept:
        assert word in out, f"{word!r} was lost in {out!r}"
    assert re.search(r"<[A-Z_]+>", out)


def test_placeholders_name_the_entity_type(redactor):
    out = redactor.redact("Jane Doe, jane@example.org, +1 415 555 0134, card 4111-1111-1111-1111")
    assert out == "<PERSON>, <EMAIL_ADDRESS>, <PHONE_NUMBER>, card <CREDIT_CARD>"


def test_text_without_pii_is_returned_unchanged(redactor):
    texts = ["where is my order 1234567?", "I want to speak to a human agent now", "", "   "]
    assert redactor.redact_many(texts) == texts


def test_a_card_number_that_fails_luhn_is_not_a_card(redactor):
    # 16 digits that fail the checksum: treated as some other reference, not redacted as a card
    assert "<CREDIT_CARD>" not in redactor.redact("reference 4111 1111 1111 1112 please")


def test_batching_gives_the_same_answer_as_one_text_at_a_time(redactor):
    texts = [text for text, _, _ in FIXTURE]
    assert redactor.redact_many(texts) == [redactor.redact(t) for t in texts]


def test_only_the_configured_entities_are_redacted():
    emails_only = PresidioRedactor(entities=["EMAIL_ADDRESS"])
    out = emails_only.redact("John Smith, john@example.com, +1 415 555 0134")
    assert out == "John Smith, <EMAIL_ADDRESS>, +1 415 555 0134"
    with pytest.raises(ValueError, match="unsupported"):
        PresidioRedactor(entities=["LOCATION"])


def test_warm_up_and_redaction_try_no_network():
    """In a fresh interpreter (nothing cached), count every connection attempt: there must be none."""
    script = textwrap.dedent(
        """
        import socket
        attempts = []
        real_connect = socket.socket.connect
        def connect(self, address):
            attempts.append(address)
            return real_connect(self, address)
        socket.socket.connect = connect
        socket.socket.connect_ex = lambda self, address: attempts.append(address) or 1
        real_getaddrinfo = socket.getaddrinfo
        def getaddrinfo(host, *args, **kwargs):
            attempts.append(host)
            return real_getaddrinfo(host, *args, **kwargs)
        socket.getaddrinfo = getaddrinfo
        from connectors.pii import PresidioRedactor
        print(PresidioRedactor().redact("write to ann@example.com"))
        print(len(attempts))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["write to <EMAIL_ADDRESS>", "0"], done.stdout
