"""The LLM gateway: tiers by name, tried in the order a caller gives, with budgets, a cache and accounting.

A caller (an operator) names the tiers it may use, best first (`["small", "large"]`). The gateway skips a
tier whose prompt limit or hourly budget the request would break, answers from its exact-match cache when
the same model saw the same prompt over the same sources, and otherwise calls the tier; a tier that times
out, errors or answers nothing is recorded and the next is tried. When none answers it returns None and the
caller takes its non-LLM path: the gateway never leaves a turn in silence, and never raises for a model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import openai
from cachetools import TTLCache
from prometheus_client import Counter, Histogram

from connectors.llm.client import LlmCallError, TierClient, estimate_tokens
from connectors.llm.messages import ChatRequest, Completion, TierFailure, TokenSink
from connectors.llm.tiers import TierSpec

__all__ = ["LlmGateway"]

log = logging.getLogger(__name__)

CALLS = Counter(
    "supportflow_llm_calls_total",
    "Model calls by tier and outcome (ok, cached, timeout, error, budget, prompt_too_long, empty, not_configured).",
    ["tier", "outcome"],
)
TOKENS = Counter(
    "supportflow_llm_tokens_total", "Tokens spent, by tier and kind (prompt, completion).", ["tier", "kind"]
)
COST = Counter("supportflow_llm_cost_usd_total", "Model spend in USD, by tier.", ["tier"])
LATENCY = Histogram(
    "supportflow_llm_latency_seconds",
    "A model call's time, first token and whole reply.",
    ["tier", "phase"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
HOUR_S = 3600.0


class _SpendMeter:
    """This process's spend on one tier over the last hour (a per-worker ceiling, not a global ledger)."""

    def __init__(self) -> None:
        self._spent: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def add(self, now: float, usd: float) -> None:
        self._spent.append((now, usd))
        self._total += usd

    def last_hour(self, now: float) -> float:
        while self._spent and self._spent[0][0] <= now - HOUR_S:
            self._total -= self._spent.popleft()[1]
        return max(0.0, self._total)


class LlmGateway:
    def __init__(self, tiers: Sequence[TierSpec], *, cache_size: int = 2048, cache_ttl_s: float = 3600.0) -> None:
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"LLM tier names must be unique: {names}")
        self.specs = {t.name: t for t in tiers}
        self._clients: dict[str, TierClient] = {}
        self._meters = {t.name: _SpendMeter() for t in tiers}
        # cache_size 0 (allowed by the settings) means no cache: TTLCache(0) refuses every item it is given
        self._cache: TTLCache[str, Completion] | None = (
            TTLCache(maxsize=cache_size, ttl=cache_ttl_s) if cache_size > 0 else None
        )
        self._recent: deque[Completion] = deque(maxlen=10_000)  # the last calls' figures, for `call_stats`

    @property
    def tier_names(self) -> list[str]:
        return list(self.specs)

    def _client(self, name: str) -> TierClient:
        if name not in self._clients:  # built on first use: the SDK client needs the running loop's transport
            self._clients[name] = TierClient(self.specs[name])
        return self._clients[name]

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    async def chat(
        self,
        tiers: Sequence[str],
        messages: Sequence[Mapping[str, str]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        sources: Sequence[str] = (),
        sink: TokenSink | None = None,
    ) -> Completion | None:
        """`complete` for callers that hold plain messages (`operators.protocols.LanguageModel`)."""
        request = ChatRequest(
            messages=tuple(dict(m) for m in messages), tools=tuple(dict(t) for t in tools), sources=tuple(sources)
        )
        return await self.complete(tiers, request, sink)

    async def complete(
        self, tiers: Sequence[str], request: ChatRequest, sink: TokenSink | None = None
    ) -> Completion | None:
        """The first tier's answer that came, or None when every tier failed (the caller's non-LLM path)."""
        completion, _ = await self.attempt(tiers, request, sink)
        return completion

    async def attempt(
        self, tiers: Sequence[str], request: ChatRequest, sink: TokenSink | None = None
    ) -> tuple[Completion | None, tuple[TierFailure, ...]]:
        """`complete`, and the failures of the tiers tried, also when none answered (`supportflow llm check`)."""
        failures: list[TierFailure] = []
        streamed = False
        for name in tiers:
            spec = self.specs.get(name)
            if spec is None:
                failures.append(self._failed(name, "not_configured"))
                continue
            if estimate_tokens(request.prompt_chars()) > spec.max_prompt_tokens:
                failures.append(self._failed(name, "prompt_too_long", f"over {spec.max_prompt_tokens} tokens"))
                continue
            now = time.monotonic()
            if spec.budget_usd_per_hour is not None and self._meters[name].last_hour(now) >= spec.budget_usd_per_hour:
                failures.append(self._failed(name, "budget", f"${spec.budget_usd_per_hour}/h spent"))
                continue
            key = request.cache_key(f"{spec.base_url}|{spec.model}")
            hit = self._cache.get(key) if self._cache is not None else None
            if hit is not None:
                CALLS.labels(name, "cached").inc()
                if sink is not None:
                    if streamed:
                        await sink.restart()
                    await sink.token(hit.text)
                answer = dataclasses.replace(hit, cached=True, cost_usd=0.0, latency_ms=0.0, failures=tuple(failures))
                return answer, tuple(failures)
            if streamed and sink is not None:
                await sink.restart()
            try:
                client = self._client(name)
            except ValueError as exc:  # its key's environment variable is not set
                failures.append(self._failed(name, "not_configured", str(exc)))
                continue
            try:
                completion = await client.complete(request, sink)
            except TimeoutError:
                detail = f"no first token within {spec.first_token_timeout_s}s or no reply within {spec.timeout_s}s"
                failures.append(self._failed(name, "timeout", detail))
                streamed = sink is not None  # pieces may have reached the sink before the deadline
                continue
            except (openai.APIError, LlmCallError) as exc:
                log.warning("llm tier %s failed: %s", name, exc)
                failures.append(self._failed(name, "error", _describe(exc)))
                streamed = sink is not None
                continue
            if not completion.text.strip() and not completion.tool_calls:
                failures.append(self._failed(name, "empty", "the model answered nothing"))
                continue
            self._account(completion)
            if not completion.truncated and self._cache is not None:
                self._cache[key] = completion
            return dataclasses.replace(completion, failures=tuple(failures)), tuple(failures)
        if failures:
            log.info("llm: no tier answered (%s)", ", ".join(f"{f.tier}: {f.reason}" for f in failures))
        return None, tuple(failures)

    def call_stats(self) -> dict[str, list[float]]:
        """The recent model calls' time to first token (ms) and decoding speed (completion tokens a second
        after the first token), for `supportflow llm check` and the bench; cached answers are not calls."""
        first = [c.first_token_ms for c in self._recent if c.first_token_ms is not None]
        rates = [
            c.tokens_out / ((c.latency_ms - c.first_token_ms) / 1000)
            for c in self._recent
            if c.first_token_ms is not None and c.latency_ms - c.first_token_ms > 1 and c.tokens_out > 1
        ]
        return {"first_token_ms": first, "tokens_per_s": rates, "latency_ms": [c.latency_ms for c in self._recent]}

    def _failed(self, tier: str, reason: str, detail: str = "") -> TierFailure:
        CALLS.labels(tier, reason).inc()
        return TierFailure(tier, reason, detail)

    def _account(self, completion: Completion) -> None:
        tier = completion.tier
        CALLS.labels(tier, "ok").inc()
        TOKENS.labels(tier, "prompt").inc(completion.tokens_in)
        TOKENS.labels(tier, "completion").inc(completion.tokens_out)
        COST.labels(tier).inc(completion.cost_usd)
        LATENCY.labels(tier, "reply").observe(completion.latency_ms / 1000)
        if completion.first_token_ms is not None:
            LATENCY.labels(tier, "first_token").observe(completion.first_token_ms / 1000)
        self._meters[tier].add(time.monotonic(), completion.cost_usd)
        self._recent.append(completion)


def _describe(exc: BaseException) -> str:
    """An endpoint's error in one line, with its cause (the SDK's "Connection error." says nothing of why)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return " ".join(text.split())
