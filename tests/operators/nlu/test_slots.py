"""Free-text slot values out of the sentence the customer answers with (issue 15's evaluation)."""

from __future__ import annotations

import pytest

from operators.nlu.slots import clean_value, is_question


@pytest.mark.parametrize(
    ("answer", "address"),
    [
        ("sure, it's 12 Main St, Springfield, 94107, US", "12 Main St, Springfield, 94107, US"),
        ("new address is 221 Pine St, Seattle, 98101, US", "221 Pine St, Seattle, 98101, US"),
        ("my new place is 48 Lamar Blvd, Austin, 78704, US", "48 Lamar Blvd, Austin, 78704, US"),
        ("please send it to 15 W 72nd St, Apt 3, New York, 10023, US", "15 W 72nd St, Apt 3, New York, 10023, US"),
        # streets that begin like a filler word, and a city ending like "ta", stay whole
        ("Well Street 4, London, E9 7HU, GB", "Well Street 4, London, E9 7HU, GB"),
        ("12 Peachtree St, Atlanta, 30303, US", "12 Peachtree St, Atlanta, 30303, US"),
    ],
)
def test_an_address_said_in_a_sentence_is_the_address_alone(answer: str, address: str) -> None:
    assert clean_value("address", answer) == address


@pytest.mark.parametrize(
    "answer",
    ["everything in that order", "sorry - all of it", "All of them please", "the whole lot", "everything"],
)
def test_the_ways_of_saying_every_item_are_all(answer: str) -> None:
    assert clean_value("items", answer) == "all"


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("like I said, just the socks", "the socks"),
        ("all the socks", "all the socks"),  # one item, all of it: the backend's to read
        ("I want to return the mouse", "the mouse"),
        ("1 running shoes", "1 running shoes"),
    ],
)
def test_items_lose_the_lead_in_and_keep_the_names(answer: str, value: str) -> None:
    assert clean_value("items", answer) == value


def test_a_replacement_and_changes_lose_their_politeness() -> None:
    assert clean_value("replacement", "the same, thanks") == "the same"
    assert clean_value("replacement", "I'd like size 42 please") == "size 42"
    assert clean_value("changes", "I'd like to remove the soap") == "remove the soap"
    assert clean_value("changes", "ok, change the candle to 2") == "change the candle to 2"
    assert clean_value("changes", "everything") == "everything", "'all' is only for items"
    assert clean_value("items", "sure.") is None


def test_a_question_is_told_from_an_answer() -> None:
    assert is_question("hang on, how much will I get back?")
    assert is_question("what's your return policy")
    assert not is_question("sure, it's 94107")
    assert not is_question("the socks")
