"""Outcome scoring of `eval agent`: the backend's state decides, not the reply text."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pipelines.evaluation.agent_scoring import judge, pass_hat_k, replay_expected, resolve_fact, snapshot
from tests.support.agent_eval import CANCEL_ALICE, HUMAN_ALICE, transcript

WRITES = frozenset({"orders.cancel_order", "payments.refund", "orders.change_address"})


async def _states(dsn: str) -> tuple[dict, dict, dict]:
    """The untouched seed, then the same database after the expected calls were replayed on it."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings={"timezone": "UTC"})
    try:
        async with pool.acquire() as conn:
            before = await snapshot(conn)
        results = await replay_expected(pool, [CANCEL_ALICE])
        async with pool.acquire() as conn:
            after = await snapshot(conn)
    finally:
        await pool.close()
    return before, after, results[CANCEL_ALICE.id]


def test_a_reply_that_says_cancelled_fails_when_the_backend_still_holds_the_order(commerce_dsn: str) -> None:
    untouched, expected, _ = asyncio.run(_states(commerce_dsn))
    claims = transcript(CANCEL_ALICE, "Done: order 1000001 is cancelled.")

    verdict = judge(claims, untouched, expected, ["cancelled"], [], WRITES)

    assert not verdict.passed
    assert any("backend state differs" in p and "1000001|pending" in p for p in verdict.problems)


def test_the_same_reply_passes_when_the_backend_holds_exactly_the_expected_state(commerce_dsn: str) -> None:
    _, expected, results = asyncio.run(_states(commerce_dsn))
    assert results["orders.get_order"]["status"] == "pending"  # the replay's reads feed the facts
    done = transcript(CANCEL_ALICE, "Done: order 1000001 is cancelled.")

    verdict = judge(done, expected, expected, ["cancelled"], [("orders.cancel_order", "1000001")], WRITES)

    assert verdict.passed, verdict.problems


def test_a_write_the_expected_calls_do_not_contain_is_a_wrong_action() -> None:
    state = {"C000001": ["orders|1000001|cancelled"]}
    done = transcript(CANCEL_ALICE, "Done: order 1000001 is cancelled.")

    verdict = judge(done, state, state, [], [("orders.cancel_order", "1000002")], WRITES)

    assert not verdict.passed and verdict.wrong_actions == ["orders.cancel_order 1000002"]


def test_an_escalation_counts_only_with_the_expected_reason() -> None:
    state: dict[str, list[str]] = {}
    wrong = judge(transcript(HUMAN_ALICE, escalation="low_confidence"), state, state, [], [], WRITES)
    right = judge(transcript(HUMAN_ALICE, escalation="customer_requested_human"), state, state, [], [], WRITES)
    unexpected = judge(transcript(CANCEL_ALICE, escalation="customer_requested_human"), state, state, [], [], WRITES)

    assert not wrong.passed and "expected customer_requested_human" in wrong.problems[0]
    assert right.passed
    assert not unexpected.passed


def test_a_reply_missing_an_asked_for_fact_fails() -> None:
    state: dict[str, list[str]] = {}
    verdict = judge(transcript(CANCEL_ALICE, "All done!"), state, state, ["cancelled", "128.00"], [], WRITES)
    assert verdict.problems == ["replies lack 'cancelled'", "replies lack '128.00'"]


def test_pass_hat_k_is_the_mean_over_tasks_of_c_choose_k_over_n_choose_k() -> None:
    table = {
        "always": [True, True, True, True],
        "half": [True, False, True, False],
        "once": [False, False, True, False],
        "never": [False, False, False, False],
    }
    assert pass_hat_k(table, 1) == pytest.approx((4 / 4 + 2 / 4 + 1 / 4 + 0) / 4)
    assert pass_hat_k(table, 2) == pytest.approx((1 + 1 / 6 + 0 + 0) / 4)
    assert pass_hat_k(table, 4) == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        pass_hat_k(table, 5)


def test_facts_are_filled_from_the_replayed_calls_and_a_wrong_path_is_an_error() -> None:
    results = {"payments.refund": {"amount": "29.95", "currency": "EUR"}}
    assert resolve_fact("{payments.refund.amount} {payments.refund.currency}", results) == "29.95 EUR"
    with pytest.raises(ValueError):
        resolve_fact("{payments.refund.total}", results)
