"""One tier's client: the `openai` package's async client, streamed, with deadlines and bounded retries.

Every call streams, so a reply can be shown as it grows and an endless or stalled stream is cut: by the
first-token deadline, the call's deadline and the token budget, whichever comes first. A connection
error, a 429 or a 5xx before the first token is retried (tenacity, exponential backoff); after the first
token it is not, as the customer may already be reading the reply: the gateway falls back instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.llm.messages import ChatRequest, Completion, TokenSink, ToolCall
from connectors.llm.tiers import TierSpec

__all__ = ["LlmCallError", "TierClient", "estimate_tokens"]

CHARS_PER_TOKEN = 4  # the usual estimate for English text; used only where the server reports no usage
TRANSIENT = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class LlmCallError(RuntimeError):
    """The endpoint failed or broke the protocol; `streamed` tells whether text already reached the sink."""

    def __init__(self, message: str, *, streamed: bool = False) -> None:
        super().__init__(message)
        self.streamed = streamed


def estimate_tokens(chars: int) -> int:
    return max(1, (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) and not getattr(exc, "streamed", False)


class TierClient:
    def __init__(self, spec: TierSpec) -> None:
        self.spec = spec
        # retries are ours (tenacity, before the first token only); the SDK's own would retry mid-stream
        self._client = openai.AsyncOpenAI(
            base_url=spec.base_url,
            api_key=spec.key(),
            timeout=spec.timeout_s,
            max_retries=0,
        )

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, request: ChatRequest, sink: TokenSink | None = None) -> Completion:
        """The model's answer; raises TimeoutError or LlmCallError (the caller falls back)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.spec.retries + 1),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(request, sink)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _once(self, request: ChatRequest, sink: TokenSink | None) -> Completion:
        spec = self.spec
        started = time.monotonic()
        pieces: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [name, arguments so far]
        usage: Any = None
        first_token_ms: float | None = None
        truncated = False
        # a model that ignores max_tokens (or a hostile endpoint) is cut here: generous, as pieces vary
        max_chars = spec.max_output_tokens * CHARS_PER_TOKEN * 2
        extra: dict[str, Any] = {}
        if request.tools:
            extra["tools"] = list(request.tools)
        try:
            async with asyncio.timeout(spec.timeout_s):
                stream = await self._client.chat.completions.create(
                    model=spec.model,
                    messages=list(request.messages),  # type: ignore[arg-type]
                    max_tokens=spec.max_output_tokens,
                    temperature=spec.temperature,
                    stream=True,
                    stream_options={"include_usage": True},
                    **extra,
                )
                chunks = stream.__aiter__()
                while True:
                    wait = spec.first_token_timeout_s if first_token_ms is None else None
                    try:
                        chunk = await asyncio.wait_for(chunks.__anext__(), timeout=wait)
                    except StopAsyncIteration:
                        break
                    if getattr(chunk, "usage", None) is not None:
                        usage = chunk.usage
                    for choice in chunk.choices or ():
                        delta = choice.delta
                        if delta is None:
                            continue
                        for call in delta.tool_calls or ():
                            slot = calls.setdefault(call.index or 0, ["", ""])
                            if call.function is not None:
                                slot[0] += call.function.name or ""
                                slot[1] += call.function.arguments or ""
                        if delta.content:
                            if first_token_ms is None:
                                first_token_ms = (time.monotonic() - started) * 1000
                            pieces.append(delta.content)
                            if sink is not None:
                                await sink.token(delta.content)
                        elif delta.tool_calls and first_token_ms is None:
                            first_token_ms = (time.monotonic() - started) * 1000
                    if sum(map(len, pieces)) + sum(len(a) for _, a in calls.values()) > max_chars:
                        truncated = True
                        break
                await stream.close()
        except TimeoutError:
            raise
        except openai.APIError as exc:
            if pieces:
                raise LlmCallError(f"{type(exc).__name__} after the first token: {exc}", streamed=True) from exc
            raise
        except (ValueError, KeyError, AttributeError, TypeError) as exc:  # a stream that is not the protocol
            raise LlmCallError(f"malformed stream: {exc}", streamed=bool(pieces)) from exc
        text = "".join(pieces)
        prompt_chars = request.prompt_chars()
        tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0) or estimate_tokens(prompt_chars)
        tokens_out = int(getattr(usage, "completion_tokens", 0) or 0) or estimate_tokens(
            len(text) + sum(len(a) for _, a in calls.values())
        )
        return Completion(
            text=text,
            tier=spec.name,
            model=spec.model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost_usd=spec.cost_usd(tokens_in, tokens_out),
            latency_ms=(time.monotonic() - started) * 1000,
            first_token_ms=first_token_ms,
            tool_calls=tuple(ToolCall(name=n, arguments=a) for _, (n, a) in sorted(calls.items()) if n),
            truncated=truncated,
        )
