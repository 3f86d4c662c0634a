"""change_order, return_items and exchange_items as whole conversations, on the real commerce backend.

Each customer turn runs the agent stage's operators (plan, authorize, execute, guard, ...; the NLU
result is given) against the commerce tools on PostgreSQL, so the confirmation text, the refusal
and what was written are the backend's. Alice (C000001, ZIP 94107): 1000001 pending (1 dripper,
34.00 EUR), 1000002 processing, 1000003 shipped, 1000004 delivered 5 days ago (2 x Merino wool
socks, 59.90 EUR), 1000005 delivered 45 days ago; added here, 1000009 delivered 2 days ago with
trail running shoes (119.00) and a tent (249.00).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from schemas import Escalation, OutboundMessage
from tests.support.agent_chain import Agent
from tests.support.commerce import add_order
from tests.support.operators import FixedClock

SHOES = "1000009"


@pytest.fixture
async def shop(commerce_pool: asyncpg.Pool) -> asyncpg.Pool:
    async with commerce_pool.acquire() as conn:
        lines = [("SHO-TRAI-42", "Trail running shoes", 1, "119.00"), ("OUT-TENT-2", "Two-person tent", 1, "249.00")]
        await add_order(conn, SHOES, "C000001", "delivered", lines)
    return commerce_pool


@pytest.fixture
def agent(shop: asyncpg.Pool) -> Agent:
    return Agent(shop, FixedClock(), per_customer=5)


async def snapshot(pool: asyncpg.Pool) -> list[list[tuple[Any, ...]]]:
    return [
        [tuple(r) for r in await pool.fetch(f"SELECT * FROM commerce.{name} ORDER BY 1")]
        for name in ("orders", "order_items", "payments", "refunds", "returns", "action_log")
    ]


async def said(agent: Agent, text: str, intent: str = "out_of_scope") -> str:
    reply = await agent.say(text, intent)
    assert isinstance(reply, OutboundMessage), reply
    return reply.text


async def up_to_the_question(agent: Agent, turns: list[tuple[str, str]]) -> str:
    """The first turns of a task (intent on the first); the reply to the last."""
    text = ""
    for i, (message, intent) in enumerate(turns):
        text = await said(agent, message, intent if i == 0 else "out_of_scope")
    return text


# --- change_order ---------------------------------------------------------------------------------------------


async def test_changing_items_asks_what_verifies_confirms_the_exact_change_and_only_then_changes(agent, shop):
    asked = await said(agent, "I want to change order 1000001", "change_order")
    assert "What should change on order 1000001" in asked
    assert "ZIP code" in await said(agent, "add 2 mugs and remove the dripper")
    before = await snapshot(shop)
    confirm = await said(agent, "94107")
    assert confirm == (
        "I'll change order 1000001: add 2 x Stoneware mugs (set of 4) (38.00 EUR each); remove 1 x Ceramic "
        "pour-over coffee dripper. The new total will be 76.00 EUR (it was 34.00 EUR). Shall I go ahead? Please "
        "answer yes or no."
    )
    assert await snapshot(shop) == before, "nothing changes before the yes"
    done = await said(agent, "yes")
    assert done.startswith("Done: order 1000001 is updated") and "76.00 EUR" in done
    rows = await shop.fetch("SELECT sku, qty FROM commerce.order_items WHERE order_number = '1000001'")
    assert [tuple(r) for r in rows] == [("KIT-MUGS-04", 2)]


async def test_a_declined_item_change_writes_nothing(agent, shop):
    await up_to_the_question(agent, [("change order 1000001 please", "change_order"), ("add 1 kettle", ""),
                                     ("94107", "")])  # fmt: skip
    before = await snapshot(shop)
    assert await said(agent, "no") == "No problem, order 1000001 stays as it was."
    assert await snapshot(shop) == before


async def test_an_order_being_prepared_cannot_have_its_items_changed_and_the_customer_is_told_why(agent, shop):
    before = await snapshot(shop)
    reply = await up_to_the_question(agent, [("change my order 1000002", "change_order"),
                                             ("remove the pillowcases", ""), ("94107", "")])  # fmt: skip
    assert reply == (
        "Sorry, I can't change that: Order 1000002 cannot be changed: it is already being prepared for shipping."
    )
    assert await snapshot(shop) == before


# --- return_items ---------------------------------------------------------------------------------------------


async def test_a_return_asks_for_the_items_confirms_the_refund_and_registers_and_refunds_on_yes(agent, shop):
    confirm = await up_to_the_question(agent, [("I want to return something from order 1000004", "return_items"),
                                               ("the socks", ""), ("94107", "")])  # fmt: skip
    assert confirm == (
        "I'll register the return of 2 x Merino wool socks (3-pack) from order 1000004 and refund 59.90 EUR to "
        "the original payment method. Shall I go ahead? Please answer yes or no."
    )
    done = await said(agent, "yes please")
    assert "return RT-" in done and "59.90 EUR is on its way to your Visa •••• 4242" in done
    returned = await shop.fetch("SELECT kind, items FROM commerce.returns WHERE order_number = '1000004'")
    assert [r["kind"] for r in returned] == ["return"]
    refunds = await shop.fetch("SELECT amount FROM commerce.refunds WHERE order_number = '1000004'")
    assert [str(r["amount"]) for r in refunds] == ["59.90"]


async def test_a_declined_return_writes_nothing(agent, shop):
    await up_to_the_question(agent, [("return order 1000004", "return_items"), ("all", ""), ("94107", "")])
    before = await snapshot(shop)
    assert await said(agent, "no, leave it") == "All right, I haven't started a return."
    assert await snapshot(shop) == before


async def test_a_return_outside_the_30_day_window_is_refused_with_the_dates(agent, shop):
    before = await snapshot(shop)
    reply = await up_to_the_question(agent, [("I'd like to return order 1000005", "return_items"), ("all", ""),
                                             ("94107", "")])  # fmt: skip
    assert reply.startswith("I can't start that return: Order 1000005 was delivered on ")
    assert "the 30-day return window closed on" in reply
    assert await snapshot(shop) == before


async def test_a_return_whose_refund_passes_the_limit_goes_to_a_human_with_the_prepared_return(agent, shop):
    await up_to_the_question(agent, [("return the tent from 1000009", "return_items"), ("the tent", "")])
    before = await snapshot(shop)
    handed = await agent.say("94107")
    assert isinstance(handed, Escalation) and handed.reason == "needs_approval"
    prepared = [step.name for step in handed.prepared_actions]
    assert prepared == ["crm.verify_identity", "orders.create_return"], "the return waits for a human's approval"
    assert handed.prepared_actions[-1].arguments["items"] == "the tent"
    assert await snapshot(shop) == before


# --- exchange_items -------------------------------------------------------------------------------------------


async def test_an_exchange_for_another_size_confirms_both_sides_and_places_the_replacement_on_yes(agent, shop):
    turns = [("can I exchange the shoes from order 1000009 for a bigger size?", "exchange_items"),
             ("the shoes", ""), ("size 43", ""), ("94107", "")]  # fmt: skip
    confirm = await up_to_the_question(agent, turns)
    assert confirm == (
        "I'll exchange 1 x Trail running shoes from order 1000009 for 1 x Trail running shoes, size 43, at no "
        "cost: you send the item back and the replacement ships as a new order. Shall I go ahead? Please answer "
        "yes or no."
    )
    payments = await shop.fetch("SELECT * FROM commerce.payments ORDER BY 1")
    done = await said(agent, "yes")
    assert "1 x Trail running shoes, size 43 ships to you as order 0100001, at no cost" in done
    items = await shop.fetch("SELECT sku, qty, unit_price FROM commerce.order_items WHERE order_number = '0100001'")
    assert [(r["sku"], r["qty"], str(r["unit_price"])) for r in items] == [("SHO-TRAI-43", 1, "0.00")]
    assert await shop.fetch("SELECT * FROM commerce.payments ORDER BY 1") == payments, "an exchange moves no money"


async def test_a_declined_exchange_writes_nothing(agent, shop):
    await up_to_the_question(agent, [("exchange order 1000004", "exchange_items"), ("socks", ""), ("the same", ""),
                                     ("94107", "")])  # fmt: skip
    before = await snapshot(shop)
    assert await said(agent, "no") == "All right, I haven't started an exchange."
    assert await snapshot(shop) == before


async def test_an_order_not_delivered_yet_cannot_be_exchanged_and_the_customer_is_told_why(agent, shop):
    before = await snapshot(shop)
    reply = await up_to_the_question(agent, [("exchange the shoes of 1000003", "exchange_items"), ("shoes", ""),
                                             ("size 43", ""), ("94107", "")])  # fmt: skip
    assert reply == (
        "I can't make that exchange: Order 1000003 cannot be exchanged: it is shipped, not delivered. It can be "
        "exchanged once it is delivered."
    )
    assert await snapshot(shop) == before


# --- what the agent evaluation found (issue 15) ---------------------------------------------------------------


async def test_everything_in_that_order_after_sorry_returns_every_line_instead_of_an_item_named_so(agent, shop):
    await said(agent, "I want to return order 1000004", "return_items")
    confirm = await said(agent, "sorry - everything in that order")
    assert "ZIP code" in confirm, confirm
    confirm = await said(agent, "94107")
    assert "return of 2 x Merino wool socks (3-pack) from order 1000004 and refund 59.90 EUR" in confirm, confirm


async def test_sorry_all_of_it_refunds_every_line_of_the_order(agent, shop):
    await up_to_the_question(agent, [("I want a refund for order 1000004", "get_refund"), ("sorry - all of it", "")])
    confirm = await said(agent, "94107")
    assert "I'll refund 2 x Merino wool socks (3-pack) from order 1000004: 59.90 EUR" in confirm, confirm


async def test_how_much_will_i_get_back_while_the_return_waits_for_yes_is_answered_and_the_return_still_waits(
    agent, shop
):
    confirm = await up_to_the_question(agent, [("return order 1000004", "return_items"), ("the socks", ""),
                                               ("94107", "")])  # fmt: skip
    before = await snapshot(shop)
    answer = await said(agent, "hang on, how much will I get back?", "return_items")
    assert "59.90 EUR" in answer and answer.endswith(confirm), "the quote again, with the same question"
    assert not answer.startswith("I need a clear yes or no"), "a question is not an unclear answer"
    assert await snapshot(shop) == before, "a question is not a yes"
    again = await said(agent, "hmm, not sure")
    assert again.startswith("I need a clear yes or no") and again.endswith(confirm), "the one re-ask is still there"
    done = await said(agent, "ok yes")
    assert "59.90 EUR is on its way" in done
    assert [
        r["kind"] for r in await shop.fetch("SELECT kind FROM commerce.returns WHERE order_number = '1000004'")
    ] == ["return"]


async def test_the_return_policy_asked_while_the_items_are_asked_for_is_answered_and_the_items_asked_again(agent, shop):
    asked = await said(agent, "I want to return something from order 1000004", "return_items")
    answer = await said(agent, "what's your return policy?", "check_refund_policy")
    assert "within 30 days of delivery" in answer, "the policy is answered"
    assert answer.endswith(asked), "and the items are asked for again"
    assert "ZIP code" in await said(agent, "the socks")
    confirm = await said(agent, "94107")
    assert "return of 2 x Merino wool socks (3-pack) from order 1000004" in confirm


async def test_a_question_while_the_identity_is_asked_keeps_the_exchange_and_asks_for_the_identity_again(agent, shop):
    turns = [("exchange the shoes from order 1000009", "exchange_items"), ("the shoes", ""), ("size 43", "")]
    asked = await up_to_the_question(agent, turns)
    assert "ZIP code" in asked
    answer = await said(agent, "before that - how long do refunds normally take to show up?", "track_refund")
    assert "5 to 10 business days" in answer and answer.endswith(asked)
    confirm = await said(agent, "94107")
    assert confirm.startswith("I'll exchange 1 x Trail running shoes from order 1000009 for 1 x Trail running shoes")


async def test_an_exchange_that_asks_for_the_order_the_item_and_the_size_reaches_the_yes_without_a_hand_over(
    agent, shop
):
    # three different questions are progress, not the same question asked again and again
    assert "Which order" in await said(agent, "I got the wrong size and want to exchange it", "exchange_items")
    assert "Which item" in await said(agent, "it's 1000009")
    assert "send instead" in await said(agent, "the shoes")
    assert "ZIP code" in await said(agent, "size 43")
    confirm = await agent.say("94107")
    assert isinstance(confirm, OutboundMessage), confirm
    assert confirm.text.startswith("I'll exchange 1 x Trail running shoes from order 1000009")
    done = await said(agent, "yes")
    assert "ships to you as order" in done
