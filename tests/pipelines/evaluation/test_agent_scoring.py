"""Outcome scoring of `eval agent`: the backend's state decides, not the reply text."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from pipelines.evaluation.agent_customer import Request, Task
from pipelines.evaluation.agent_scoring import judge, pass_hat_k, replay_expected, resolve_fact, snapshot
from tests.support.agent_eval import CANCEL_ALICE, HUMAN_ALICE, transcript
from tests.support.commerce import add_order

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


EXCHANGE_ALICE = Task(
    id="exchange-alice",
    customer="C000001",
    requests=(
        Request(intent="exchange_items", order="1000009", items={"say": "shoes", "qty": 1}, replacement="size 43"),
    ),
    calls=(
        {
            "tool": "orders.create_exchange",
            "arguments": {"order_number": "1000009", "items": "shoes", "replacement": "size 43", "reason": "test"},
        },
    ),
    source="exchange_items",
)


async def _exchanged_state(dsn: str, sequence_at: int) -> dict:
    """Alice's exchange replayed after `sequence_at` replacement orders were numbered (by other customers)."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings={"timezone": "UTC"})
    try:
        async with pool.acquire() as conn:
            await add_order(
                conn, "1000009", "C000001", "delivered", [("SHO-TRAI-42", "Trail running shoes", 1, "119.00")]
            )
            await conn.execute("SELECT setval('commerce.replacement_order_numbers', $1)", sequence_at)
        results = await replay_expected(pool, [EXCHANGE_ALICE])
        async with pool.acquire() as conn:
            state = await snapshot(conn)
    finally:
        await pool.close()
    assert results[EXCHANGE_ALICE.id]["orders.create_exchange"]["replacement_order"] == f"{sequence_at + 1:07d}"
    return state


def test_an_exchange_whose_replacement_got_another_number_in_a_concurrent_round_still_equals_the_replay(
    commerce_dsn: str,
) -> None:
    # a round runs every task at once: which exchange takes the next replacement number is a race
    state = asyncio.run(_exchanged_state(commerce_dsn, 500_000))
    rows = state["C000001"]
    assert not any("0500001" in row for row in rows), "the generated number is left out"
    assert "orders|replaces 1000009|processing|EUR|0.00" in {row.rsplit("|", 1)[0] for row in rows}
    assert any(row.startswith("order_items|replaces 1000009|SHO-TRAI-43|1|0.00") for row in rows)


RETURN_ALICE = Task(
    id="return-alice",
    customer="C000001",
    requests=(Request(intent="return_items", order="1000004", items="all"),),
    calls=(
        {"tool": "orders.create_return", "arguments": {"order_number": "1000004", "items": "all", "reason": "test"}},
    ),
    source="return_items",
)


def test_a_returns_refund_is_compared_without_the_return_number_a_concurrent_round_draws(commerce_dsn: str) -> None:
    async def returned() -> dict:
        pool = await asyncpg.create_pool(commerce_dsn, min_size=1, max_size=2, server_settings={"timezone": "UTC"})
        try:
            results = await replay_expected(pool, [RETURN_ALICE])
            async with pool.acquire() as conn:
                return {"state": await snapshot(conn), "return_id": results[RETURN_ALICE.id]["orders.create_return"]}
        finally:
            await pool.close()

    out = asyncio.run(returned())
    refunds = [row for row in out["state"]["C000001"] if row.startswith("refunds|1000004|")]
    assert out["return_id"]["return_id"].startswith("RT-")
    assert refunds == ['refunds|1000004|59.90|pending|return: test|[{"qty": 2, "sku": "APP-SOCK-3"}]'], refunds
