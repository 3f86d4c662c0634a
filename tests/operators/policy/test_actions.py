"""The action policy (operators/policy/actions.py): allow-lists, verification, refund limits, the file."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from operators.policy.actions import (
    DEFAULT_ACTION_POLICY,
    ActionPolicy,
    ActionPolicyError,
    RefundSummary,
    check_actions,
    load_action_policy,
)
from schemas import ActionCall

BITEXT = Path(__file__).parents[3] / "datasets" / "bitext-customer-support" / "bitext_customer_support_4514.csv"


@pytest.fixture(scope="module")
def policy() -> ActionPolicy:
    return load_action_policy()


def step(name: str, writes: bool = False, **arguments: Any) -> ActionCall:
    return ActionCall(name=name, arguments=arguments, idempotency_key=f"k-{name}", writes=writes)


def refund(amount: Any, currency: Any = "EUR") -> ActionCall:
    return step("payments.refund", writes=True, order_id="1234567", amount=amount, currency=currency)


def quoted(amount: Any, currency: str = "EUR", order: str = "0", customer: str = "0") -> dict[str, RefundSummary]:
    """The backend's summary of the refund step: what its items come to, and the automatic refunds before it."""
    return {
        "k-payments.refund": RefundSummary(
            amount=Decimal(str(amount)), currency=currency.upper(), order_refunded=Decimal(order),
            customer_refunded=Decimal(customer),
        )
    }  # fmt: skip


def test_shipped_policy_covers_the_27_bitext_intents(policy: ActionPolicy):
    with BITEXT.open(encoding="utf-8") as f:
        intents = {row["intent"] for row in csv.DictReader(f)}
    assert len(intents) == 27
    assert intents <= set(policy.intents)
    assert policy.intents["check_refund_policy"] == []
    assert policy.refund_limit == {c: Decimal("100.00") for c in ("EUR", "USD", "GBP")}


def test_tools_on_the_intents_list_pass(policy: ActionPolicy):
    steps = [step("crm.verify_identity"), step("orders.get_order"), step("orders.cancel_order", writes=True)]
    assert check_actions("cancel_order", steps, policy, verified=True) is None


def test_tool_off_the_intents_list_is_not_allowed(policy: ActionPolicy):
    finding = check_actions("track_order", [step("orders.get_order"), refund("10.00")], policy, verified=True)
    assert finding is not None and finding.kind == "not_allowed"
    assert finding.step is not None and finding.step.name == "payments.refund"


def test_intent_with_no_tools_allows_none(policy: ActionPolicy):
    finding = check_actions("check_refund_policy", [step("orders.get_order")], policy, verified=True)
    assert finding is not None and finding.kind == "not_allowed"


def test_unknown_intent_allows_nothing(policy: ActionPolicy):
    for name in ("orders.get_order", "crm.verify_identity", "payments.refund"):
        finding = check_actions("make_me_rich", [step(name)], policy, verified=True)
        assert finding is not None and finding.kind == "not_allowed"
    assert check_actions("make_me_rich", [], policy, verified=True) is None  # no action, nothing to refuse


def test_a_listed_planner_is_held_to_its_own_tools_whatever_the_intent(policy: ActionPolicy):
    assert check_actions("check_refund_policy", [step("orders.get_order")], policy, True, planner="llm-plan-v1") is None
    for name in ("crm.delete_account", "orders.modify_items"):
        finding = check_actions("delete_account", [step(name, writes=True)], policy, True, planner="llm-plan-v1")
        assert finding is not None and finding.kind == "not_allowed", name
    finding = check_actions("out_of_scope", [refund("10.00")], policy, verified=False, planner="llm-plan-v1")
    assert finding is not None and finding.kind == "unverified_write", "its writes still need a verified customer"
    unlisted = check_actions("check_refund_policy", [step("orders.get_order")], policy, True, planner="playbooks-v1")
    assert unlisted is not None and unlisted.kind == "not_allowed", "an unlisted planner keeps the intent's list"


def test_a_planner_allowed_an_undeclared_tool_fails_at_load():
    with pytest.raises(ValueError, match="planner 'llm-plan-v1' allows"):
        ActionPolicy(intents={}, read_tools=["payments.refund_quote"], planners={"llm-plan-v1": ["admin.anything"]})


def test_refund_above_the_limit_needs_approval_and_carries_the_step(policy: ActionPolicy):
    big = refund("100.01")
    finding = check_actions("get_refund", [step("orders.get_order"), big], policy, True, quoted("100.01"))
    assert finding is not None and finding.kind == "needs_approval"
    assert finding.step == big


@pytest.mark.parametrize("amount", ["100.00", "100", 100, 100.0, Decimal("100.00"), "0.01", 99.99])
def test_refund_at_or_below_the_limit_passes(policy: ActionPolicy, amount: Any):
    assert check_actions("get_refund", [refund(amount)], policy, True, quoted(amount)) is None


@pytest.mark.parametrize("currency", ["USD", "gbp"])
def test_limit_applies_per_currency(policy: ActionPolicy, currency: str):
    assert check_actions("get_refund", [refund("100.00", currency)], policy, True, quoted("100", currency)) is None
    finding = check_actions("get_refund", [refund("250", currency)], policy, True, quoted("250", currency))
    assert finding is not None and finding.kind == "needs_approval"


def test_refund_in_a_currency_without_a_limit_needs_approval(policy: ActionPolicy):
    finding = check_actions("get_refund", [refund("5", "JPY")], policy, True, quoted("5", "JPY"))
    assert finding is not None and finding.kind == "needs_approval"


@pytest.mark.parametrize(
    "amount", [-5, "-5", 0, float("nan"), "NaN", float("inf"), "Infinity", "ten", "", None, True, "1e3", "10.001",
               [10], {"value": 10}, "10,00"],
)  # fmt: skip
def test_malformed_amount_is_invalid(policy: ActionPolicy, amount: Any):
    finding = check_actions("get_refund", [refund(amount)], policy, True, quoted("10"))
    assert finding is not None and finding.kind == "invalid_amount"


def test_refund_of_named_items_is_judged_on_the_backends_amount(policy: ActionPolicy):
    items = step("payments.refund", writes=True, order_number="1234567", items="the socks")
    assert check_actions("get_refund", [items], policy, True, quoted("29.95")) is None
    finding = check_actions("get_refund", [items], policy, True, quoted("129.95"))
    assert finding is not None and finding.kind == "needs_approval" and finding.step == items


def test_small_refunds_add_up_to_the_limit_with_what_was_refunded_before(policy: ActionPolicy):
    small = step("payments.refund", writes=True, order_number="1234567", items="1 socks")
    assert check_actions("get_refund", [small], policy, True, quoted("29.95", order="70.05")) is None
    for before in ({"order": "89.85"}, {"customer": "89.85"}):  # on this order, or on any of the customer's
        finding = check_actions("get_refund", [small], policy, True, quoted("29.95", **before))
        assert finding is not None and finding.kind == "needs_approval" and "89.85" in finding.reason


def test_refund_the_backend_cannot_quote_needs_a_human(policy: ActionPolicy):
    small = step("payments.refund", writes=True, order_number="1234567", items="1 socks")
    for refunds in (None, {}, {"another-key": quoted("1")["k-payments.refund"]}):
        finding = check_actions("get_refund", [small], policy, True, refunds)
        assert finding is not None and finding.kind == "needs_approval"


def test_refund_the_backend_refuses_is_left_to_the_backend(policy: ActionPolicy):
    small = step("payments.refund", writes=True, order_number="1234567", items="all")
    refusal = {"k-payments.refund": RefundSummary(refusal="Order 1234567 cannot be refunded: it is cancelled.")}
    assert check_actions("get_refund", [small], policy, True, refusal) is None


def test_typed_amount_or_currency_must_match_the_backends(policy: ActionPolicy):
    for typed, currency in (("5.00", "EUR"), ("29.95", "USD")):
        finding = check_actions("get_refund", [refund(typed, currency)], policy, True, quoted("29.95"))
        assert finding is not None and finding.kind == "invalid_amount"


def test_a_planned_refund_may_not_claim_a_humans_approval(policy: ActionPolicy):
    claimed = step("payments.refund", writes=True, order_number="1234567", items="all", approved_by="workspace:me")
    finding = check_actions("get_refund", [claimed], policy, True, quoted("500"))
    assert finding is not None and finding.kind == "not_allowed"


def test_write_for_an_unverified_customer_is_refused(policy: ActionPolicy):
    cancel = step("orders.cancel_order", writes=True, order_id="1234567")
    finding = check_actions("cancel_order", [step("orders.get_order"), cancel], policy, verified=False)
    assert finding is not None and finding.kind == "unverified_write" and finding.step == cancel


def test_reads_need_no_verification(policy: ActionPolicy):
    assert check_actions("track_order", [step("orders.get_order")], policy, verified=False) is None


def test_policy_decides_what_writes_even_if_the_step_says_it_does_not(policy: ActionPolicy):
    sneaky = step("orders.cancel_order", writes=False, order_id="1234567")
    finding = check_actions("cancel_order", [sneaky], policy, verified=False)
    assert finding is not None and finding.kind == "unverified_write"


def test_unverified_big_refund_asks_for_verification_before_approval(policy: ActionPolicy):
    finding = check_actions("get_refund", [refund("900")], policy, verified=False)
    assert finding is not None and finding.kind == "unverified_write"


def test_not_allowed_wins_over_every_other_finding(policy: ActionPolicy):
    steps = [refund("900"), step("crm.delete_account", writes=True)]
    finding = check_actions("get_refund", steps, policy, verified=False)
    assert finding is not None and finding.kind == "not_allowed"


def test_turning_verification_off_lets_unverified_writes_through():
    relaxed = load_action_policy().model_copy(update={"require_verification_for_writes": False})
    assert check_actions("cancel_order", [step("orders.cancel_order", writes=True)], relaxed, verified=False) is None


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_policy_file_error_names_the_file(tmp_path: Path):
    with pytest.raises(ActionPolicyError, match=r"nope\.yaml: cannot read"):
        load_action_policy(tmp_path / "nope.yaml")


def test_broken_yaml_error_says_so(tmp_path: Path):
    with pytest.raises(ActionPolicyError, match="not valid YAML"):
        load_action_policy(write_policy(tmp_path, "intents: [unclosed\n"))


def test_policy_that_is_not_a_mapping_is_refused(tmp_path: Path):
    with pytest.raises(ActionPolicyError, match="expected a mapping"):
        load_action_policy(write_policy(tmp_path, "- just a list\n"))


def test_tool_neither_read_nor_write_is_refused_at_load(tmp_path: Path):
    text = "read_tools: [orders.get_order]\nwrite_tools: [payments.refund]\nintents:\n  cancel_order: [orders.cancle]\n"
    with pytest.raises(ActionPolicyError, match=r"cancel_order.*orders\.cancle.*neither read_tools nor write_tools"):
        load_action_policy(write_policy(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("intents: {}\nwrite_tools: [payments.refund]\nrefund_limit: {EUR: lots}\n", r"refund_limit\.EUR"),
        ("intents: {}\nwrite_tools: [payments.refund]\nrefund_limit: {EUR: '-1'}\n", "non-negative"),
        ("intents: {}\nwrite_tools: [payments.refund]\nrefund_limit: {euro: '1'}\n", "ISO currency"),
        ("intents: {}\nwrite_tools: [payments.refund]\nrefund_limt: {}\n", r"refund_limt: Extra inputs"),
        ("write_tools: [payments.refund]\n", r"intents: Field required"),
        ("intents: {}\nread_tools: [a.b]\nwrite_tools: [a.b, payments.refund]\n", "both read and write"),
        ("intents: {}\n", r"refund_tools \['payments.refund'\] must also be listed in write_tools"),
    ],
)
def test_invalid_policy_errors_say_what_is_wrong(tmp_path: Path, text: str, message: str):
    with pytest.raises(ActionPolicyError, match=message):
        load_action_policy(write_policy(tmp_path, text))


def test_shipped_policy_file_is_the_default():
    assert DEFAULT_ACTION_POLICY.name == "action_policy.yaml" and load_action_policy(DEFAULT_ACTION_POLICY)
