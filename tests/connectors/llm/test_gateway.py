"""The LLM gateway against a real OpenAI-compatible server (llama.cpp with SmolLM2-135M, `tests/support/llm.py`).

What is pinned is the gateway's contract, not the model's wording: the request it sends, the stream it reads,
deadlines, the fallback from tier to tier and then to None (the caller's non-LLM path), budgets, the cache and
the cost of each answer.
"""

from __future__ import annotations

import pytest

from connectors._process import free_port
from connectors.llm import LlmGateway, LocalModelServer
from tests.support.hostile_llm import Turn, say
from tests.support.llm import tier_for

QUESTION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "How long do refunds take? Source: refunds take 5 to 10 business days."},
]


class Recorder:
    """A token sink that keeps what the gateway streamed to it."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.restarts = 0

    async def token(self, text: str) -> None:
        self.pieces.append(text)

    async def restart(self) -> None:
        self.restarts += 1
        self.pieces.clear()


def dead_tier(name: str = "large", **overrides: object):
    """A tier whose endpoint refuses connections: nothing listens on the port."""
    spec = {"name": name, "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "none", "timeout_s": 5.0}
    spec.update(overrides)
    from connectors.llm import TierSpec

    return TierSpec.model_validate(spec)


async def test_a_streamed_answer_reaches_the_sink_piece_by_piece_and_is_priced_by_its_tokens(llm_server):
    tier = tier_for(llm_server)
    gateway = LlmGateway([tier])
    sink = Recorder()
    try:
        answer = await gateway.chat(["small"], QUESTION, sink=sink)
    finally:
        await gateway.close()

    assert answer is not None and answer.text.strip()
    assert len(sink.pieces) > 1 and "".join(sink.pieces) == answer.text
    assert (answer.tier, answer.model, answer.cached, answer.failures) == ("small", "smollm2", False, ())
    assert answer.tokens_in > 0 and 0 < answer.tokens_out <= tier.max_output_tokens + 1
    assert answer.cost_usd == pytest.approx(tier.cost_usd(answer.tokens_in, answer.tokens_out))
    assert answer.first_token_ms is not None and 0 < answer.first_token_ms <= answer.latency_ms


async def test_the_same_prompt_over_the_same_sources_is_answered_from_the_cache_even_with_the_server_gone(
    own_llm_server: LocalModelServer,
):
    gateway = LlmGateway([tier_for(own_llm_server)])
    try:
        first = await gateway.chat(["small"], QUESTION, sources=["refunds take 5 to 10 business days"])
        own_llm_server.stop()
        again = await gateway.chat(["small"], QUESTION, sources=["refunds take 5 to 10 business days"])
        other_sources = await gateway.chat(["small"], QUESTION, sources=["refunds take 3 days"])
    finally:
        await gateway.close()

    assert first is not None and again is not None
    assert again.cached and again.text == first.text and again.cost_usd == 0.0
    assert other_sources is None  # changed sources are a new question: asked, and the server is gone


async def test_a_tier_that_refuses_connections_falls_back_to_the_next_tier(llm_server):
    gateway = LlmGateway([dead_tier("large", retries=1), tier_for(llm_server, "small")])
    try:
        answer = await gateway.chat(["large", "small"], QUESTION)
    finally:
        await gateway.close()

    assert answer is not None and answer.tier == "small"
    assert [(f.tier, f.reason) for f in answer.failures] == [("large", "error")]


async def test_a_tier_slower_than_its_first_token_deadline_falls_back_and_the_sink_starts_over(llm_server):
    slow = tier_for(llm_server, "large", first_token_timeout_s=0.001)
    gateway = LlmGateway([slow, tier_for(llm_server, "small")])
    sink = Recorder()
    try:
        answer = await gateway.chat(["large", "small"], QUESTION, sink=sink)
    finally:
        await gateway.close()

    assert answer is not None and answer.tier == "small"
    assert [(f.tier, f.reason) for f in answer.failures] == [("large", "timeout")]
    assert sink.restarts == 1 and "".join(sink.pieces) == answer.text


async def test_no_tier_answering_returns_none_for_the_non_llm_path():
    gateway = LlmGateway([dead_tier("small", retries=0), dead_tier("large", retries=0)])
    try:
        answer = await gateway.chat(["small", "large", "unconfigured"], QUESTION)
    finally:
        await gateway.close()

    assert answer is None


async def test_a_tier_over_its_hourly_budget_is_skipped_until_the_hour_has_passed(llm_server):
    # priced so that one answer spends the whole budget
    tier = tier_for(llm_server, price_out_per_mtok=1_000_000.0, budget_usd_per_hour=0.5)
    gateway = LlmGateway([tier])
    try:
        first = await gateway.chat(["small"], QUESTION)
        second = await gateway.chat(["small"], [*QUESTION[:1], {"role": "user", "content": "And exchanges?"}])
    finally:
        await gateway.close()

    assert first is not None and first.cost_usd >= 0.5
    assert second is None


async def test_a_prompt_longer_than_the_tiers_limit_is_not_sent_to_it(llm_server):
    gateway = LlmGateway([tier_for(llm_server, "small", max_prompt_tokens=5), tier_for(llm_server, "large")])
    try:
        answer = await gateway.chat(["small", "large"], QUESTION)
    finally:
        await gateway.close()

    assert answer is not None and answer.tier == "large"
    assert [(f.tier, f.reason) for f in answer.failures] == [("small", "prompt_too_long")]


def test_tier_names_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        LlmGateway([dead_tier("small"), dead_tier("small")])


# The failures below are scripted by a stand-in server (tests/support/hostile_llm.py): a real model server
# cannot be made to answer 503 or 429 on demand.


async def test_an_overloaded_endpoint_is_retried_before_the_first_token_and_then_answers(hostile_model):
    hostile_model.script(compose=(Turn(status=503), Turn(status=429), say("Refunds take 5 to 10 business days.")))
    gateway = LlmGateway([hostile_model.tier("small", retries=2)])
    try:
        answer = await gateway.chat(["small"], QUESTION)
    finally:
        await gateway.close()

    assert answer is not None and answer.text.strip() == "Refunds take 5 to 10 business days."
    assert len(hostile_model.requests) == 3


async def test_retries_are_bounded_and_a_refused_request_is_not_retried(hostile_model):
    hostile_model.script(compose=(Turn(status=503), Turn(status=503), Turn(status=400), say("never asked")))
    gateway = LlmGateway([hostile_model.tier("small", retries=1)])
    try:
        overloaded = await gateway.chat(["small"], QUESTION)
        refused = await gateway.chat(["small"], [*QUESTION[:1], {"role": "user", "content": "another"}])
    finally:
        await gateway.close()

    assert overloaded is None and refused is None
    assert len(hostile_model.requests) == 3  # 503, its one retry, then the 400 alone


async def test_an_endless_stream_is_cut_at_the_token_budget_and_not_cached(hostile_model):
    hostile_model.script(compose=(Turn(endless=True), Turn(endless=True)))
    gateway = LlmGateway([hostile_model.tier("small", max_output_tokens=20, timeout_s=10)])
    try:
        first = await gateway.chat(["small"], QUESTION)
        again = await gateway.chat(["small"], QUESTION)
    finally:
        await gateway.close()

    assert first is not None and first.truncated and len(first.text) <= 20 * 8 + 64  # cut within one piece
    assert again is not None and not again.cached  # a cut answer is asked again, never replayed
