"""plan: a playbook task carried across turns — slots, identity, confirmation, idempotency keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.plan import LLM_PLANNER, PlaybookPlanner, idempotency_key
from operators.playbooks import PlaybookError, load_playbooks
from schemas import (
    ActionCall,
    Entity,
    Message,
    NluResult,
    PlannedTurn,
    RouteDecision,
    RoutedTurn,
    Sentiment,
    SessionContext,
    TaskState,
)
from tests.support.operators import T0, context, session


def turn(
    text: str,
    intent: str,
    state: SessionContext,
    message_id: str,
    entities: list[Entity] | None = None,
    confidence: float = 0.95,
) -> RoutedTurn:
    return RoutedTurn(
        message=Message(
            message_id=message_id,
            conversation_id="conv-c1",
            customer_id="c1",
            channel="webchat",
            sender="web-1",
            text=text,
            received_at=T0,
        ),
        session=state,
        nlu=NluResult(
            intent=intent,
            confidence=confidence,
            entities=entities or [],
            sentiment=Sentiment(label="neutral", score=0.0),
            model_used="test",
        ),
        route=RouteDecision(branch="auto", reason="confident"),
    )


def order_entity(number: str, text: str) -> Entity:
    start = text.index(number)
    return Entity(type="order_number", value=number, start=start, end=start + len(number), confidence=0.8)


@pytest.fixture
def planner() -> PlaybookPlanner:
    op = PlaybookPlanner()
    op.warm_up(context())
    return op


async def step(
    planner: PlaybookPlanner, text: str, intent: str, state: SessionContext, message_id: str, **kw: object
) -> PlannedTurn:
    return await planner.run(turn(text, intent, state, message_id, **kw), context())  # type: ignore[arg-type]


async def test_cancel_asks_for_the_order_then_identity_then_a_yes_and_only_then_cancels(planner):
    s = session()
    first = await step(planner, "I want to cancel my order", "cancel_order", s, "m-1")
    assert first.plan.awaiting == "slot" and "order number" in first.plan.reply_template
    assert first.plan.steps == [] and first.session.task is not None and first.session.task.task_id == "m-1"

    second = await step(planner, "1000001", "out_of_scope", first.session, "m-2", confidence=0.2)
    assert second.plan.awaiting == "verification" and second.plan.steps == []
    assert second.session.task.slots == {"order_number": "1000001"}

    third = await step(planner, "it's alice@example.com", "out_of_scope", second.session, "m-3", confidence=0.3)
    assert third.plan.awaiting == "confirmation"
    assert [s.name for s in third.plan.steps] == ["crm.verify_identity", "orders.get_order"]
    assert third.plan.steps[0].arguments == {"order_number": "1000001", "email": "alice@example.com"}
    assert [s.name for s in third.plan.pending_steps] == ["orders.cancel_order"], "the write waits for a yes"

    verified = third.session.model_copy(update={"verified": True})  # what execute records when it succeeds
    fourth = await step(planner, "yes please", "out_of_scope", verified, "m-4", confidence=0.4)
    assert [s.name for s in fourth.plan.steps] == ["orders.get_order", "orders.cancel_order"]
    assert fourth.plan.steps[1].writes and fourth.plan.pending_steps == []
    assert fourth.session.task is None, "the task ends with this turn"

    replayed = await step(planner, "yes please", "out_of_scope", verified, "m-4", confidence=0.4)
    assert [s.idempotency_key for s in replayed.plan.steps] == [s.idempotency_key for s in fourth.plan.steps]
    assert fourth.plan.steps[1].idempotency_key == third.plan.pending_steps[0].idempotency_key, (
        "the key comes from the task's first message, not from the turn that said yes"
    )


async def test_no_to_the_confirmation_plans_nothing(planner):
    text = "please cancel order 1000002"
    state = session(verified=True)
    asked = await step(planner, text, "cancel_order", state, "m-1", entities=[order_entity("1000002", text)])
    assert asked.plan.awaiting == "confirmation"
    declined = await step(planner, "no, keep it", "out_of_scope", asked.session, "m-2", confidence=0.3)
    assert declined.plan.steps == [] and declined.plan.pending_steps == []
    assert "stays" in declined.plan.reply_template and declined.session.task is None


async def test_a_clearly_different_request_abandons_the_task(planner):
    asked = await step(planner, "I want to cancel my order", "cancel_order", session(), "m-1")
    # said, not asked: a question in the middle is answered and the task kept (the tests further down)
    moved = await step(planner, "forget that, I need to reset my password", "recover_password", asked.session, "m-2")
    assert moved.plan.planner == "templates-v1" and moved.session.task is None


async def test_an_order_number_given_earlier_in_the_session_is_reused(planner):
    text = "where is my order 1000003?"
    entities = [order_entity("1000003", text)]
    tracked = await step(planner, text, "track_order", session(verified=True), "m-1", entities=entities)
    assert [s.name for s in tracked.plan.steps] == ["orders.get_order"]
    cancel = await step(planner, "actually cancel it", "cancel_order", tracked.session, "m-2")
    assert cancel.plan.awaiting == "confirmation" and cancel.session.task.slots["order_number"] == "1000003"


def test_playbook_errors_name_the_file_and_the_field(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text(
        "intent: cancel_order\nsteps:\n  - tool: orders.cancel_order\n    writes: true\n"
        "replies: {succeeded: 'done {nothing}'}\n"
    )
    (tmp_path / "typo.yaml").write_text("intent: x\nreplies: {succeeded: ok}\nstepz: []\n")
    with pytest.raises(PlaybookError) as error:
        load_playbooks(tmp_path)
    text = str(error.value)
    assert "bad.yaml" in text and "confirm" in text
    assert "typo.yaml: stepz" in text


def test_the_shipped_playbooks_load():
    assert {
        "track_order", "cancel_order", "get_refund", "track_refund", "change_shipping_address", "change_order",
        "return_items", "exchange_items",
    } <= set(load_playbooks())  # fmt: skip


def test_every_shipped_playbook_step_is_allowed_by_the_shipped_action_policy():
    """A playbook the policy forbids would escalate every time it ran: catch the mismatch here."""
    from operators.authorize import DEFAULT_POLICY
    from operators.plan import VERIFY_TOOL
    from operators.policy import load_action_policy

    policy = load_action_policy(DEFAULT_POLICY)
    for intent, playbook in load_playbooks().items():
        allowed = set(policy.intents.get(intent, []))
        wanted = {step.tool for step in playbook.steps} | ({VERIFY_TOOL} if playbook.verify else set())
        assert wanted <= allowed, f"{intent}: the policy does not allow {sorted(wanted - allowed)}"


def test_every_playbook_reply_field_comes_from_a_slot_or_a_tool_result():
    """Result fields are checked against what the commerce tools return, so no reply keeps a placeholder."""
    import re

    returned = {
        "orders.get_order": {"status", "total", "currency", "shipment.carrier", "shipment.tracking_number",
                             "shipment.eta", "order_number"},
        "payments.refund_status": {"refunded_total", "currency", "order_number"},
        "payments.refund": {"refund_id", "amount", "currency", "status", "payment_method"},
        "payments.refund_quote": {"items_text", "amount", "currency", "needs_approval"},
        "orders.cancel_order": {"status", "order_number", "refund.amount", "refund.currency", "refund.payment_method"},
        "orders.change_address": {"order_number", "status", "shipping_address.city", "shipping_address.zip"},
        "orders.quote_item_changes": {"changes_text", "total_before", "total_after", "currency", "difference"},
        "orders.modify_items": {"changes_text", "total", "currency", "order_number"},
        "orders.return_quote": {"items_text", "amount", "currency", "needs_approval", "return_by"},
        "orders.create_return": {"return_id", "items_text", "refund.amount", "refund.currency",
                                 "refund.payment_method"},
        "orders.exchange_quote": {"items_text", "replacement_text", "return_by"},
        "orders.create_exchange": {"return_id", "items_text", "replacement_text", "replacement_order"},
    }  # fmt: skip
    for intent, playbook in load_playbooks().items():
        saved = {step.save_as: step.tool for step in playbook.steps if step.save_as}
        for template in [*playbook.replies.values(), playbook.confirm or ""]:
            for field in re.findall(r"\{([^{}]+)\}", template):
                root, _, rest = field.partition(".")
                if root in saved:
                    assert rest in returned[saved[root]], f"{intent}: {{{field}}} is not in {saved[root]}'s result"


async def awaiting_cancel_confirmation(planner: PlaybookPlanner) -> PlannedTurn:
    text = "please cancel order 1000002"
    state = session(verified=True)
    asked = await step(planner, text, "cancel_order", state, "m-1", entities=[order_entity("1000002", text)])
    assert asked.plan.awaiting == "confirmation" and not any(s.writes for s in asked.plan.steps)
    return asked


def writes_in(turn: PlannedTurn) -> list[str]:
    return [s.name for s in turn.plan.steps if s.writes]


@pytest.mark.parametrize(
    "answer",
    [
        "ok wait, no, don't cancel it",
        "y'know, I'm not sure",
        "Sure? what does cancelling cost?",
        "correct me if I'm wrong…",
    ],
)
async def test_a_hesitant_answer_from_issue_15_cancels_nothing(planner: PlaybookPlanner, answer: str) -> None:
    asked = await awaiting_cancel_confirmation(planner)
    reply = await step(planner, answer, "out_of_scope", asked.session, "m-2", confidence=0.3)
    assert writes_in(reply) == [], f"{answer!r} ran the cancellation"
    assert "cancelled" not in reply.plan.reply_template


async def test_an_unclear_answer_is_asked_again_once_and_runs_no_write(planner: PlaybookPlanner) -> None:
    asked = await awaiting_cancel_confirmation(planner)
    again = await step(planner, "y'know, I'm not sure", "out_of_scope", asked.session, "m-2", confidence=0.3)
    assert writes_in(again) == [] and [s.name for s in again.plan.pending_steps] == ["orders.cancel_order"]
    assert again.plan.awaiting == "confirmation" and again.session.task is not None
    assert again.plan.reply_template.startswith("I need a clear yes or no")
    assert again.plan.reply_template.endswith(asked.plan.reply_template), "the same question, asked plainly again"
    assert again.session.task.confirm_reasks == 1


async def test_a_second_unclear_answer_ends_the_task_with_nothing_written(planner: PlaybookPlanner) -> None:
    asked = await awaiting_cancel_confirmation(planner)
    again = await step(planner, "hmm maybe", "out_of_scope", asked.session, "m-2", confidence=0.3)
    left = await step(planner, "Sure? what does cancelling cost?", "out_of_scope", again.session, "m-3", confidence=0.3)
    assert left.plan.steps == [] and left.plan.pending_steps == [] and left.plan.awaiting is None
    assert left.session.task is None and "left everything as it is" in left.plan.reply_template
    late_yes = await step(planner, "yes", "out_of_scope", left.session, "m-4", confidence=0.3)
    assert writes_in(late_yes) == [], "a yes after the task ended confirms nothing"


async def test_yes_after_one_reask_runs_the_write_with_the_tasks_key(planner: PlaybookPlanner) -> None:
    asked = await awaiting_cancel_confirmation(planner)
    again = await step(planner, "wait, is there a fee?", "out_of_scope", asked.session, "m-2", confidence=0.3)
    done = await step(planner, "yes, go ahead", "out_of_scope", again.session, "m-3", confidence=0.3)
    assert writes_in(done) == ["orders.cancel_order"] and done.session.task is None
    assert done.plan.steps[-1].idempotency_key == asked.plan.pending_steps[0].idempotency_key


async def test_no_after_a_reask_declines_as_a_first_no_does(planner: PlaybookPlanner) -> None:
    asked = await awaiting_cancel_confirmation(planner)
    again = await step(planner, "not sure", "out_of_scope", asked.session, "m-2", confidence=0.3)
    declined = await step(planner, "no, keep it", "out_of_scope", again.session, "m-3", confidence=0.3)
    assert declined.plan.steps == [] and declined.session.task is None
    assert "stays" in declined.plan.reply_template


def test_a_task_stored_before_the_reask_count_existed_still_loads() -> None:
    stored = {"task_id": "m-1", "intent": "cancel_order", "awaiting": "confirmation", "started_at": T0.isoformat()}
    task = session(task=stored).task
    assert task is not None and task.confirm_reasks == 0


# --- what the agent evaluation found (issue 15) ---------------------------------------------------------------


async def awaiting_address(planner: PlaybookPlanner) -> PlannedTurn:
    text = "need to update the delivery address on 1000002"
    state = session(verified=True)
    asked = await step(planner, text, "change_shipping_address", state, "m-1", entities=[order_entity("1000002", text)])
    assert asked.plan.awaiting == "slot" and asked.session.task.awaiting_slot == "address"
    return asked


@pytest.mark.parametrize(
    "answer",
    [
        "sure, it's 900 N Michigan Ave, Chicago, 60611, US",
        "it's 900 N Michigan Ave, Chicago, 60611, US",
        "new address is 900 N Michigan Ave, Chicago, 60611, US",
        "ok sure, my new place is 900 N Michigan Ave, Chicago, 60611, US",
    ],
)
async def test_an_address_answered_in_a_sentence_is_stored_without_the_sentence(
    planner: PlaybookPlanner, answer: str
) -> None:
    asked = await awaiting_address(planner)
    confirm = await step(planner, answer, "out_of_scope", asked.session, "m-2", confidence=0.3)
    assert confirm.session.task.slots["address"] == "900 N Michigan Ave, Chicago, 60611, US"
    assert confirm.plan.pending_steps[0].arguments["address"] == "900 N Michigan Ave, Chicago, 60611, US"


@pytest.mark.parametrize(
    "answer", ["everything in that order", "sorry - all of it", "the whole lot", "all of them please"]
)
async def test_everything_in_that_order_is_read_as_all_items(planner: PlaybookPlanner, answer: str) -> None:
    text = "I want a refund for order 1000004"
    asked = await step(
        planner, text, "get_refund", session(verified=True), "m-1", entities=[order_entity("1000004", text)]
    )
    assert asked.session.task.awaiting_slot == "items"
    confirm = await step(planner, answer, "out_of_scope", asked.session, "m-2", confidence=0.3)
    assert confirm.session.task.slots["items"] == "all"
    assert confirm.plan.steps[0].arguments == {"order_number": "1000004", "items": "all"}


async def test_a_question_while_a_confirmation_waits_keeps_the_task_and_asks_for_the_yes_again(planner):
    asked = await awaiting_cancel_confirmation(planner)
    aside = await step(planner, "what's your return policy?", "check_refund_policy", asked.session, "m-2")
    assert aside.session.task is not None and aside.session.task.awaiting == "confirmation"
    assert aside.plan.reply_template.startswith("You can ask for a refund within 30 days")
    assert aside.plan.reply_template.endswith(asked.plan.reply_template)
    assert writes_in(aside) == [] and [s.name for s in aside.plan.pending_steps] == ["orders.cancel_order"]
    assert aside.session.task.confirm_reasks == 0, "a question is not an unclear answer"
    done = await step(planner, "yes", "out_of_scope", aside.session, "m-3", confidence=0.3)
    assert writes_in(done) == ["orders.cancel_order"]
    assert done.plan.steps[-1].idempotency_key == asked.plan.pending_steps[0].idempotency_key


async def test_a_confident_question_for_another_playbook_while_the_identity_is_asked_keeps_the_task(planner):
    asked = await step(planner, "cancel order 1000002 please", "cancel_order", session(), "m-1",
                       entities=[order_entity("1000002", "cancel order 1000002 please")])  # fmt: skip
    assert asked.plan.awaiting == "verification"
    aside = await step(
        planner, "before that - how long do refunds normally take?", "track_refund", asked.session, "m-2"
    )
    assert aside.session.task is not None and aside.session.task.intent == "cancel_order"
    assert "5 to 10 business days" in aside.plan.reply_template
    assert aside.plan.reply_template.endswith(asked.plan.reply_template) and aside.plan.awaiting == "verification"
    verified = await step(planner, "94107", "out_of_scope", aside.session, "m-3", confidence=0.3)
    assert verified.plan.awaiting == "confirmation"


async def test_a_question_naming_another_order_for_another_playbook_is_a_new_request(planner):
    asked = await awaiting_cancel_confirmation(planner)
    text = "can you track 1000003 instead?"
    moved = await step(planner, text, "track_order", asked.session, "m-2", entities=[order_entity("1000003", text)])
    assert moved.session.task is None or moved.session.task.intent == "track_order"
    assert [s.name for s in moved.plan.steps] == ["orders.get_order"]


def llm_task(awaiting: str) -> SessionContext:
    """A session whose task the LLM planner proposed: a cancellation waiting for the identity check or the yes."""
    key = idempotency_key("m-1", "orders.cancel_order", {"order_number": "1234567"})
    cancel = ActionCall(name="orders.cancel_order", arguments={"order_number": "1234567"}, writes=True,
                        idempotency_key=key)  # fmt: skip
    task = TaskState(task_id="m-1", intent="out_of_scope", slots={"actions": "cancel order 1234567",
                     "order_number": "1234567"}, awaiting=awaiting, planner=LLM_PLANNER, pending_steps=[cancel],
                     started_at=T0)  # fmt: skip
    return session(task=task, verified=awaiting == "confirmation")


async def test_an_llm_planned_write_runs_on_a_clear_yes_with_the_key_of_the_turn_that_proposed_it(planner):
    done = await step(planner, "yes please", "out_of_scope", llm_task("confirmation"), "m-2", confidence=0.3)
    assert done.plan.planner == LLM_PLANNER and [s.name for s in done.plan.steps] == ["orders.cancel_order"]
    assert done.plan.steps[0].idempotency_key == idempotency_key("m-1", "orders.cancel_order",
                                                                  {"order_number": "1234567"})  # fmt: skip
    assert done.session.task is None and done.plan.pending_steps == []


async def test_an_llm_planned_write_is_dropped_when_the_customer_moves_on(planner):
    moved = await step(planner, "where is my order 7654321?", "track_order", llm_task("confirmation"), "m-2",
                       entities=[order_entity("7654321", "where is my order 7654321?")])  # fmt: skip
    assert moved.plan.planner == "playbooks-v1" and moved.plan.intent == "track_order"
    assert all(s.name != "orders.cancel_order" for s in [*moved.plan.steps, *moved.plan.pending_steps])
    assert moved.session.task is None or moved.session.task.planner != LLM_PLANNER


async def test_an_llm_planned_write_waits_for_the_identity_check_as_a_playbooks_does(planner):
    asked = await step(planner, "hm?", "out_of_scope", llm_task("verification"), "m-2", confidence=0.3)
    assert asked.plan.awaiting == "verification" and asked.plan.steps == [] and asked.plan.pending_steps == []
    verifying = await step(planner, "it's 94107", "out_of_scope", asked.session, "m-3", confidence=0.3)
    assert [s.name for s in verifying.plan.steps] == ["crm.verify_identity"]
    assert verifying.plan.steps[0].arguments == {"order_number": "1234567", "zip": "94107"}
    assert [s.name for s in verifying.plan.pending_steps] == ["orders.cancel_order"]
    assert verifying.plan.awaiting == "confirmation" and "yes or no" in verifying.plan.reply_template
