"""`LlmGateway.attempt`: why each tier failed, also when none answered (what `supportflow llm check` prints),
a tier whose key variable is unset, and no cache at all (cache_size 0) — against the real model server."""

from __future__ import annotations

from connectors._process import free_port
from connectors.llm import ChatRequest, LlmGateway, LocalModelServer, TierSpec
from tests.support.llm import tier_for

HELLO = ChatRequest(messages=({"role": "user", "content": "Say hello."},))


async def test_when_no_tier_answers_the_failures_say_why_and_nothing_raises() -> None:
    dead = TierSpec(name="dead", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", retries=0)
    keyless = TierSpec(name="keyless", base_url="http://127.0.0.1:9/v1", model="m", api_key_env="SF_TEST_UNSET_KEY")
    gateway = LlmGateway([dead, keyless])
    try:
        completion, failures = await gateway.attempt(["dead", "keyless", "absent"], HELLO)
        assert completion is None and await gateway.complete(["dead"], HELLO) is None
    finally:
        await gateway.close()
    assert [(f.tier, f.reason) for f in failures] == [
        ("dead", "error"),
        ("keyless", "not_configured"),
        ("absent", "not_configured"),
    ]
    assert "APIConnectionError" in failures[0].detail
    assert "SF_TEST_UNSET_KEY is not set" in failures[1].detail


async def test_a_gateway_without_a_cache_asks_the_model_every_time(llm_server: LocalModelServer) -> None:
    gateway = LlmGateway([tier_for(llm_server, max_output_tokens=8)], cache_size=0)
    try:
        first, failures = await gateway.attempt(["small"], HELLO)
        second = await gateway.complete(["small"], HELLO)
    finally:
        await gateway.close()
    assert first is not None and second is not None and failures == ()
    assert not first.cached and not second.cached and second.tokens_out > 0
