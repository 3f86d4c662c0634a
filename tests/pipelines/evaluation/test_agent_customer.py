"""The simulated customer of `eval agent`: its own words, seeded variants, answers by meaning."""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

from operators.playbooks import load_playbooks
from pipelines.evaluation.agent_customer import (
    Request,
    SimulatedCustomer,
    asked_for,
    bank_sentences,
    load_tasks,
    misremembered,
    phrasing_bank,
)
from tests.support.agent_eval import CANCEL_ALICE

ROOT = Path(__file__).resolve().parents[3]
BITEXT = ROOT / "datasets" / "bitext-customer-support" / "bitext_customer_support_4514.csv"
EXTRA_TRAIN = ROOT / "datasets" / "supportflow-phrasings" / "train.csv"
ALICE = {"zip": "94107", "email": "alice@example.com"}

# A cancellation the way another agent might word it: none of the playbooks' sentences.
AGENT = [
    "Could you share the postcode on your account so I know it's really you?",
    "Thanks! Which order do you mean - what's the order number?",
    "Got it. Do you want me to cancel 1000001 now?",
    "It's cancelled.",
]


def _normal(text: str) -> str:
    text = re.sub(r"\{\{[^}]*\}\}|\{[a-z_]+\}|#?\d+", " X ", text.lower())
    return " ".join(re.findall(r"[a-z]+|X", text))


def _conversation(trial: int, seed: int = 0) -> list[str]:
    customer = SimulatedCustomer(CANCEL_ALICE, ALICE, trial, seed)
    said = [customer.opening()]
    for reply in AGENT:
        answer = customer.respond(reply)
        if answer is None:
            break
        said.append(answer)
    return said


def test_the_same_seed_gives_the_same_words_and_other_trials_other_words() -> None:
    assert _conversation(trial=1) == _conversation(trial=1)
    variants = {tuple(_conversation(trial)) for trial in range(8)}
    assert len(variants) >= 6
    assert any(_conversation(trial, seed=1) != _conversation(trial, seed=2) for trial in range(4))


def test_the_phrasing_bank_shares_no_sentence_with_the_training_data() -> None:
    trained = set()
    with BITEXT.open(newline="", encoding="utf-8") as f:
        trained |= {_normal(row["instruction"]) for row in csv.DictReader(f)}
    with EXTRA_TRAIN.open(newline="", encoding="utf-8") as f:
        trained |= {_normal(row["text"]) for row in csv.DictReader(f)}
    sentences = [s for s in bank_sentences(phrasing_bank()) if len(_normal(s).split()) >= 3]
    assert len(sentences) > 80
    shared = [s for s in sentences if _normal(s) in trained]
    assert shared == []


def test_the_customer_answers_what_is_asked_in_any_wording_and_answers_again_when_asked_again() -> None:
    assert asked_for("Could you share the postcode on your account so I know it's really you?") == "identity"
    assert asked_for("What's the order number, please?") == "order_number"
    assert asked_for("I'll send it to 1 Main St, Springfield, 94107, US. Should I go ahead?") == "confirm"
    assert asked_for("What items would you like refunded?") == "items"
    assert asked_for("Your order 1000001 is pending.") is None

    customer = SimulatedCustomer(CANCEL_ALICE, ALICE, trial=3)
    customer.style = replace(customer.style, side_question=False, identity="zip")
    first = customer.respond("Which ZIP code is on the account?")
    again = customer.respond("Sorry, what is the ZIP code on the account?")
    assert first is not None and "94107" in first
    assert again is not None and "94107" in again
    assert customer.respond("Do you want me to cancel it?") in phrasing_bank()["answers"]["yes"]
    assert customer.respond("Order 1000001 is cancelled.") is None


# Playbooks with no tasks yet: a new playbook goes here until its tasks, openings and the simulated
# customer's answers to its questions are written.
NOT_YET_EVALUATED: set[str] = set()


def test_the_tasks_cover_every_playbook_with_customers_of_their_own() -> None:
    tasks = load_tasks()
    playbooks = {p.stem for p in (ROOT / "playbooks").glob("*.yaml")}
    covered = {r.intent for t in tasks for r in t.requests}
    assert len(tasks) >= 40
    assert playbooks - covered >= NOT_YET_EVALUATED, "a playbook on the list got tasks: take it off the list"
    assert playbooks - NOT_YET_EVALUATED <= covered
    assert covered <= set(phrasing_bank()["openings"])
    assert len({t.customer for t in tasks}) == len(tasks)
    assert any(t.escalation for t in tasks) and any(not t.calls for t in tasks)


def test_a_general_answer_is_met_with_the_request_again_and_a_second_request_follows_the_first() -> None:
    task = replace(
        CANCEL_ALICE,
        requests=(Request("track_order", order="1000003"), Request("track_refund", order="1000004")),
    )
    customer = SimulatedCustomer(task, ALICE, trial=0)
    customer.style = replace(customer.style, side_question=False)
    customer.opening()

    restated = customer.respond("Standard delivery takes 3 to 5 business days.")
    second = customer.respond("Order 1000003 is shipped. It went with UPS.")
    last = customer.respond("So far 0.00 EUR has been refunded for order 1000004.")

    assert restated is not None and "1000003" in restated
    assert second is not None and "1000004" in second
    assert last is None


def _asks(intent: str, slot: str) -> str:
    """The playbook's own question for a slot, filled as the agent would fill it."""
    return load_playbooks()[intent].slots[slot].ask.format(order_number="1000009")


def test_the_customer_answers_the_questions_of_the_change_return_and_exchange_playbooks() -> None:
    assert asked_for(_asks("change_order", "changes")) == "changes"
    assert asked_for(_asks("return_items", "items")) == "items"
    assert asked_for(_asks("exchange_items", "items")) == "items"
    assert asked_for(_asks("exchange_items", "replacement")) == "replacement"
    assert asked_for("Which size would you like instead?") == "replacement"
    assert asked_for("What would you like to change on that order?") == "changes"

    task = replace(
        CANCEL_ALICE,
        requests=(Request("exchange_items", order="1000009", items={"say": "shoes", "qty": 1}, replacement="size 43"),),
    )
    customer = SimulatedCustomer(task, ALICE, trial=0)
    customer.style = replace(customer.style, side_question=False)
    assert "shoes" in (customer.respond(_asks("exchange_items", "items")) or "")
    assert "size 43" in (customer.respond(_asks("exchange_items", "replacement")) or "")

    change = replace(CANCEL_ALICE, requests=(Request("change_order", order="1000001", changes="remove the dripper"),))
    customer = SimulatedCustomer(change, ALICE, trial=0)
    customer.style = replace(customer.style, side_question=False)
    assert "remove the dripper" in (customer.respond(_asks("change_order", "changes")) or "")


def test_a_customer_who_misremembers_gives_a_wrong_zip_and_the_same_wrong_zip_when_asked_again() -> None:
    task = replace(CANCEL_ALICE, requests=(Request("cancel_order", order="1000001", identity="wrong"),))
    customer = SimulatedCustomer(task, ALICE, trial=0)
    customer.style = replace(customer.style, side_question=False, identity="zip")
    first = customer.respond("Please tell me the ZIP code on the account.")
    again = customer.respond("Those details don't match. Please tell me the ZIP code on the account.")
    assert misremembered("94107") == "94108" and misremembered("a@b.c") != "a@b.c"
    assert first is not None and "94108" in first and "94107" not in first
    assert again is not None and "94108" in again


def test_a_side_question_can_come_while_the_yes_is_awaited() -> None:
    task = replace(CANCEL_ALICE, requests=(Request("get_refund", order="1000004", items="all"),))
    for trial in range(40):
        customer = SimulatedCustomer(task, ALICE, trial=trial)
        if customer.style.side_question and customer.side_at_confirm:
            break
    else:
        raise AssertionError("no trial draws a side question at the confirmation")
    assert customer.respond("Please tell me the ZIP code on the account.") is not None
    question = customer.respond("I'll refund 59.90 EUR. Shall I go ahead?")
    assert question in phrasing_bank()["side_questions_at_confirm"]
    assert (
        customer.respond("You can ask for a refund within 30 days. Shall I go ahead?")
        in phrasing_bank()["answers"]["yes"]
    )
