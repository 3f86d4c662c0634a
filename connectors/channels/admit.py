"""The one admit path: how a customer's message enters the stream, whatever channel it came by.

Every inbound route (the REST API, the providers' webhooks, the web chat socket, the SMTP
listener) verifies its caller first, then builds a `RawInbound` and hands it here: the sender's
rate limit is checked before any other work, and what is allowed is published to `sf.ingress`.
The REST API, whose sender is only known once its body is parsed, first asks the client
address's bucket (`allow_source`), and keeps a refused body on the dead-letter topic only while
that address's dead-letter allowance lasts (`may_dead_letter`).
The routes differ only in how they answer a refusal (429 with Retry-After, an error frame, an
SMTP 451), which is theirs to say.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from starlette.responses import JSONResponse

from connectors.protocols import Decision, RateLimiter
from connectors.redis.rate_limit import retry_after_header
from schemas import RawInbound

__all__ = ["Admission", "Publish", "too_many", "too_many_from"]

Publish = Callable[[str, str | None, bytes], Awaitable[None]]

SOURCE = "source"
DEAD_LETTERS = "dead_letters"


class Admission:
    """Rate limit, then publish: one bucket per channel and sender, whichever way a message came in."""

    def __init__(self, publish: Publish, limiter: RateLimiter, ingress_topic: str = "sf.ingress") -> None:
        self.publish = publish
        self.limiter = limiter
        self.ingress_topic = ingress_topic

    async def allow_source(self, source: str) -> Decision:
        """Whether this client address may make another request now: asked before its body is read.

        The sender is in the body, so a body that cannot be parsed has no sender to count against;
        this bucket (`source` in the limits) bounds what one address can make the ingress do at all.
        """
        return await self.limiter.allow(SOURCE, source)

    async def may_dead_letter(self, source: str) -> bool:
        """Whether a refused request of this address may still be kept on the dead-letter topic.

        The bucket (`dead_letters` in the limits) caps what a flood of bad requests can write;
        past it the request is still answered with its 4xx, and only counted.
        """
        return (await self.limiter.allow(DEAD_LETTERS, source)).allowed

    async def allow(self, channel: str, sender: str) -> Decision:
        """Whether this sender may send another message now: asked before anything else is done."""
        return await self.limiter.allow(channel, sender)

    async def publish_raw(self, raw: RawInbound) -> None:
        """Onto `sf.ingress`, keyed by channel address, for a message already allowed."""
        await self.publish(self.ingress_topic, raw.partition_key(), raw.to_bytes())

    async def admit(self, raw: RawInbound) -> Decision:
        """Allow and publish one message; the decision says whether it went."""
        decision = await self.allow(raw.channel, raw.sender)
        if decision.allowed:
            await self.publish_raw(raw)
        return decision

    async def admit_all(self, records: Sequence[RawInbound]) -> tuple[RawInbound, Decision] | None:
        """Publish what the limits allow; the first refusal, if any, for the caller to answer.

        A provider that resends after a refusal republishes the ones already sent under the same
        message ids, which the stream drops as duplicates.
        """
        refused = None
        for raw in records:
            decision = await self.admit(raw)
            if not decision.allowed:
                refused = refused or (raw, decision)
        return refused


def too_many(channel: str, decision: Decision) -> JSONResponse:
    """The HTTP refusal of a rate-limited message: 429 with Retry-After, for the client to send again."""
    response = JSONResponse(
        {
            "error": f"too many {channel} messages from this sender; retry in {decision.retry_after_s:.0f}s",
            "details": [],
        },
        status_code=429,
    )
    response.headers["Retry-After"] = retry_after_header(decision)
    return response


def too_many_from(decision: Decision) -> JSONResponse:
    """The HTTP refusal of a client address over its `source` limit: 429 with Retry-After."""
    response = JSONResponse(
        {"error": f"too many requests from this address; retry in {decision.retry_after_s:.0f}s", "details": []},
        status_code=429,
    )
    response.headers["Retry-After"] = retry_after_header(decision)
    return response
