"""Reply PII (operators/policy/reply_pii.py): contact and payment data a reply may disclose."""

from __future__ import annotations

import pytest

from operators.policy.reply_pii import check_reply_pii


def test_reply_without_personal_data_passes():
    assert check_reply_pii("Your order 1234567 ships tomorrow.", [], []) is None


def test_email_the_customer_wrote_may_be_repeated():
    said = ["please send it to Jane.Doe@example.com"]
    assert check_reply_pii("I sent the invoice to jane.doe@example.com.", said, []) is None


def test_email_from_the_profile_may_be_repeated():
    assert check_reply_pii("We emailed jane@example.com.", [], ["jane@example.com"]) is None


def test_email_nobody_gave_is_a_finding_naming_the_type_only():
    finding = check_reply_pii("The owner is bob@example.com.", ["where is my order?"], ["jane@example.com"])
    assert finding is not None and finding.kind == "email" and "bob@" not in finding.reason


def test_phone_in_another_format_than_the_customer_wrote_passes():
    said = ["call me on 020 7946 0958"]
    assert check_reply_pii("We will call +44 20 7946 0958 when it ships.", said, []) is None


def test_unknown_phone_number_is_a_finding():
    finding = check_reply_pii("Call the customer on +44 20 7946 0000.", ["call me on 020 7946 0958"], [])
    assert finding is not None and finding.kind == "phone_number"


def test_card_number_is_never_repeated_even_if_the_customer_gave_it():
    card = "4242 4242 4242 4242"
    finding = check_reply_pii(f"Your card {card} was charged.", [f"my card is {card}"], [card])
    assert finding is not None and finding.kind == "card_number"


@pytest.mark.parametrize("masked", ["•••• 4242", "**** **** **** 4242", "card ending in 4242", "XXXX-XXXX-XXXX-4242"])
def test_last_four_digits_of_a_card_pass(masked: str):
    assert check_reply_pii(f"We refunded the card {masked}.", [], []) is None


def test_long_order_ids_are_not_card_numbers():
    # 15 digits, Luhn-valid but no card network starts with 1
    assert check_reply_pii("Order 113542617735902 is cancelled.", [], []) is None


def test_iban_only_when_the_customer_gave_it():
    iban = "DE89 3704 0044 0532 0130 00"
    assert check_reply_pii(f"We will refund to {iban}.", [f"my IBAN is {iban.replace(' ', '')}"], []) is None
    finding = check_reply_pii(f"We will refund to {iban}.", ["refund me please"], [])
    assert finding is not None and finding.kind == "iban"


def test_iban_from_the_profile_may_be_repeated():
    assert check_reply_pii("Refund to GB82 WEST 1234 5698 7654 32.", [], ["GB82WEST12345698765432"]) is None
