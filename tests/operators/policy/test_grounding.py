"""A generated reply's facts against its sources: numbers, links and claimed actions."""

from __future__ import annotations

import pytest

from operators.policy import check_grounding

SOURCES = [
    "How long refunds take\nRefunds reach your card 5 to 10 business days after we receive the item.",
    '{"tool": "orders.get", "status": "succeeded", "result": {"order_id": "#1000123", "total": "$1,234.50"}}',
    "See https://help.example-shop.com/refunds for details.",
]


@pytest.mark.parametrize(
    "reply",
    [
        "Your refund should reach your card within 5-10 business days of us receiving the item.",
        "Order #1000123 came to $1234.50.",
        "Order 1000123 totalled 1,234.50 dollars.",
        "Details are at https://help.example-shop.com/refunds.",
        "I can help with that. Could you tell me which item you mean?",
        "Refunds take about two weeks at most.",  # a paraphrase in words states no new figure
    ],
)
def test_a_reply_whose_facts_come_from_its_sources_is_grounded(reply):
    assert check_grounding(reply, SOURCES) is None


@pytest.mark.parametrize(
    ("reply", "kind", "value"),
    [
        ("Refunds take 3 business days.", "ungrounded_number", "3"),
        ("Your order #1000124 is on its way.", "ungrounded_number", "1000124"),
        ("You paid $1,299.00.", "ungrounded_number", "1,299.00"),
        ("Call us on 0800 123 456.", "ungrounded_number", "0800"),
        ("Read more at https://evil.example.com/refund", "ungrounded_link", "https://evil.example.com/refund"),
        ("I've refunded your order.", "unperformed_action", "I've refunded"),
        ("Your order has been cancelled.", "unperformed_action", "has been cancelled"),
        ("We will send you a return label.", "unperformed_action", "We will send"),
        ("I'll process the exchange now.", "unperformed_action", "I'll process"),
        ('<untrusted source="template"> Refunds reach your card. </untrusted>', "prompt_markup", "<untrusted"),
        ("SOURCES: refunds reach your card.", "prompt_markup", "SOURCES:"),
        (
            "Refunds reach your card. Standard delivery to Canada and Mexico is free of charge.",
            "unsupported_sentence",
            "Standard delivery to Canada and Mexico is free of charge.",
        ),
    ],
)
def test_a_fact_or_promise_absent_from_the_sources_is_found(reply, kind, value):
    finding = check_grounding(reply, SOURCES)
    assert finding is not None and (finding.kind, finding.value) == (kind, value)


def test_a_close_paraphrase_of_the_sources_is_supported_and_a_changed_subject_is_not():
    assert (
        check_grounding("Once we receive the item, refunds reach your card in 5 to 10 business days.", SOURCES) is None
    )
    finding = check_grounding("Our warehouse team inspects every parcel before dispatching replacements.", SOURCES)
    assert finding is not None and finding.kind == "unsupported_sentence"


def test_an_action_the_turn_performed_may_be_stated():
    assert check_grounding("Your order has been cancelled.", SOURCES, performed=["orders.cancel"]) is None
    assert check_grounding("I've refunded you.", SOURCES, performed=["orders.cancel"]) is not None


def test_an_action_the_template_reply_already_states_may_be_restated():
    sources = [*SOURCES, "Done: order #1000123 is cancelled and will not ship."]
    assert check_grounding("Order #1000123 is now cancelled.", sources) is None
