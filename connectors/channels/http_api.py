"""The HTTP ingress: accept a message for any channel, publish it raw, read replies back.

It does no AI work: it checks the caller's API key and its scopes (connectors/channels/api_keys.py),
validates, rate-limits per channel and sender, publishes to `sf.ingress`, and answers. Each client
address has a bucket asked before its body is even read (429 past it, nothing written). A body is
parsed by the one strict parser (`connectors/inbound_body.py`). A customer id comes only from a key
with `customers:act`; a conversation is read only with `conversations:read` or the conversation's
own web chat session token (`X-Session-Token`). A rejected request is answered with a clear 4xx and
kept on the dead-letter topic with its reason (its first 8 KiB) while its address's dead-letter
allowance lasts, so a flood of bad bodies cannot fill `sf.dlq`; a rate-limited one gets 429 with
Retry-After, for the client (or provider) to send again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from connectors.channels.admit import Admission, too_many, too_many_from
from connectors.channels.api_keys import ApiKey, KeyRing, Scope
from connectors.channels.conversation_view import ConversationView, ViewItem
from connectors.channels.session_tokens import SessionTokens, TokenError
from connectors.inbound_body import BodyRefused, JsonLimits, parse_json, read_body
from connectors.redis.rate_limit import InProcessRateLimiter, RateLimiter
from schemas import Channel, DeadLetter, Feedback, RawInbound

Publish = Callable[[str, str | None, bytes], Awaitable[None]]

__all__ = ["CsatRequest", "Endpoint", "GatewayApi", "InboundRequest", "IngressLimits", "create_app"]

REQUESTS = Counter(
    "supportflow_ingress_requests_total", "POST /v1/messages by channel and status.", ["channel", "status"]
)
UNKEPT = Counter(
    "supportflow_ingress_refusals_not_kept_total",
    "Refused bodies answered but not dead-lettered: their address had used its dead-letter allowance.",
)


class InboundRequest(BaseModel):
    """The body of `POST /v1/messages`."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    sender: str = Field(min_length=1, max_length=320, description="the customer's address on that channel")
    text: str
    customer_id: str | None = Field(default=None, max_length=200)
    message_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._:@-]{1,200}$", description="your idempotency key; generated if absent"
    )
    provider_message_id: str | None = Field(default=None, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)


class CsatRequest(BaseModel):
    """The body of `POST /v1/feedback/csat`: a customer's satisfaction answer for a conversation."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str = Field(pattern=r"^[A-Za-z0-9._:@-]{1,200}$")
    rating: int = Field(ge=1, le=5, strict=True, description="1 (very unhappy) .. 5 (very happy), a JSON integer")
    comment: str = Field(default="", max_length=2000)
    request_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._:@-]{1,200}$", description="your idempotency key; generated if absent"
    )
    channel: Channel | None = Field(default=None, description="where the customer answered; default: the last seen")
    escalation_id: str | None = Field(default=None, max_length=200, description="the hand-over this answer rates")


@dataclass(frozen=True)
class IngressLimits:
    ingress_topic: str = "sf.ingress"
    feedback_topic: str = "sf.feedback"
    dead_letter_topic: str = "sf.dlq"
    max_text_chars: int = 4000
    max_body_bytes: int = 64_000
    max_wait_s: float = 30.0
    max_dead_letter_bytes: int = 8_192  # of a refused body, kept on the dead-letter topic


SnapshotSource = Callable[[str], Awaitable[tuple[dict[str, Any] | None, bool]]]
"""conversation id -> (snapshot or None, whether it came from the cache)"""

OutboxSource = Callable[[int], Awaitable[list[dict[str, Any]]]]
"""limit -> the newest outbox entries, newest first"""

MAX_OUTBOX_LIMIT = 200


def _error(status: int, message: str, details: Sequence[Any] = ()) -> JSONResponse:
    return JSONResponse({"error": message, "details": list(details)}, status_code=status)


def _source(request: Request) -> str:
    """The client address the per-address buckets count (behind a proxy: uvicorn's --forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True)
class Endpoint:
    """One REST route and its OpenAPI entry, declared together so the description cannot drift from the code.

    `keyed` routes need an API key with one of `scopes` when keys are configured (checked once, in
    `_keyed`); a `session_readable` route also takes the conversation's own web chat session token.
    """

    path: str
    method: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    responses: dict[str, str]
    keyed: bool = True
    body: type[BaseModel] | None = None
    parameters: tuple[dict[str, Any], ...] = ()
    scopes: tuple[Scope, ...] = ("messages:write",)
    session_readable: bool = False


_MESSAGE_ID = {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}
_CONVERSATION_ID = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_SESSION_TOKEN = {
    "name": "X-Session-Token",
    "in": "header",
    "required": False,
    "description": "instead of an API key: the web chat session token of this conversation (its own items only)",
    "schema": {"type": "string"},
}


class GatewayApi:
    """The ingress API; `snapshots` (the conversation store behind a short cache) serves full histories.

    With `outbox` (replies of channels with no provider go to the outbox table), `GET /v1/outbox`
    lists its newest entries; without it the route does not exist (404).

    With `api_keys`, every keyed `/v1/` REST call needs one (`Authorization: Bearer <key>` or
    `X-API-Key`): 401 without, 403 with a wrong one (compared in constant time) or one without the
    route's scope. The web chat socket has its own signed sessions (`sessions`), whose tokens also
    read their own conversation here; health, readiness, metrics and the OpenAPI description stay
    open.
    """

    def __init__(
        self,
        publish: Publish,
        view: ConversationView,
        limits: IngressLimits,
        rate_limiter: RateLimiter | None = None,
        snapshots: SnapshotSource | None = None,
        api_keys: Sequence[ApiKey | str] = (),
        ready: Callable[[], bool] | None = None,
        outbox: OutboxSource | None = None,
        warnings: Sequence[str] = (),
        sessions: SessionTokens | None = None,
    ) -> None:
        self.publish = publish
        self.view = view
        self.limits = limits
        self.admission = Admission(publish, rate_limiter or InProcessRateLimiter(), limits.ingress_topic)
        self.snapshots = snapshots
        self.keys = KeyRing(api_keys)
        self.ready = ready
        self.outbox = outbox
        self.warnings = list(warnings)  # shown on /healthz while the process runs, e.g. an opted-in open API
        self.sessions = sessions

    def endpoints(self) -> list[Endpoint]:
        """Every REST route of the gateway, in the order `/openapi.json` lists them."""
        return [
            Endpoint(
                "/v1/messages",
                "POST",
                self.post_message,
                "Accept a customer message; it is answered on the stream",
                {"202": "accepted; poll status_url", **dict.fromkeys(("400", "401", "403", "413", "422", "429"), "")},
                body=InboundRequest,
            ),
            Endpoint(
                "/v1/messages/{message_id}",
                "GET",
                self.get_message,
                "The answer to a message (reply or escalation), waiting up to `wait` seconds",
                {"200": "pending, replied or escalated", "400": ""},
                scopes=("messages:write", "conversations:read"),
                parameters=(
                    _MESSAGE_ID,
                    {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 30}},
                ),
            ),
            Endpoint(
                "/v1/feedback/csat",
                "POST",
                self.post_csat,
                "A customer's satisfaction answer (1..5) for a conversation, onto sf.feedback",
                {
                    "202": "accepted; feedback_id names it",
                    **dict.fromkeys(("400", "401", "403", "413", "422", "429"), ""),
                },
                body=CsatRequest,
                scopes=("customers:act",),
            ),
            Endpoint(
                "/v1/conversations/{conversation_id}",
                "GET",
                self.get_snapshot,
                "The full history from the conversation store",
                {"200": "the snapshot", "404": "", "503": ""},
                parameters=(_CONVERSATION_ID,),
                scopes=("conversations:read",),
            ),
            Endpoint(
                "/v1/conversations/{conversation_id}/messages",
                "GET",
                self.get_conversation,
                "What this ingress saw of the conversation",
                {"200": "items", "404": ""},
                parameters=(_CONVERSATION_ID, _SESSION_TOKEN),
                scopes=("conversations:read",),
                session_readable=True,
            ),
            Endpoint(
                "/v1/conversations/{conversation_id}/stream",
                "GET",
                self.stream_conversation,
                "The conversation as it happens, as server-sent events",
                {"200": "an event stream"},
                parameters=(_CONVERSATION_ID, _SESSION_TOKEN),
                scopes=("conversations:read",),
                session_readable=True,
            ),
            *(
                [
                    Endpoint(
                        "/v1/outbox",
                        "GET",
                        self.get_outbox,
                        "The newest replies kept in the outbox (channels with no provider configured)",
                        {"200": "entries, newest first", "400": ""},
                        scopes=("conversations:read",),
                        parameters=(
                            {
                                "name": "limit",
                                "in": "query",
                                "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                            },
                        ),
                    )
                ]
                if self.outbox is not None
                else []
            ),
            Endpoint(
                "/v1/session",
                "DELETE",
                self.delete_session,
                "Log out the web chat session of `X-Session-Token`: every token of that session is refused from now on",
                {"204": "logged out (also when it already was)", "401": "", "404": "", "429": ""},
                parameters=({**_SESSION_TOKEN, "required": True, "description": "the session token to log out"},),
                keyed=False,
            ),
            Endpoint("/healthz", "GET", self.health, "Alive", {"200": "ok"}, keyed=False),
            Endpoint(
                "/readyz", "GET", self.readiness, "Ready to serve", {"200": "ready", "503": "starting"}, keyed=False
            ),
        ]

    def app(
        self,
        lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
        extra_routes: Sequence[BaseRoute] = (),
    ) -> Starlette:
        endpoints = self.endpoints()
        routes: list[BaseRoute] = [
            Route(e.path, self._keyed(e) if e.keyed else e.handler, methods=[e.method]) for e in endpoints
        ]
        routes += [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            *extra_routes,
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    # ---- the one API-key check --------------------------------------------------------------

    def _keyed(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def checked(request: Request) -> Response:
            if endpoint.session_readable and "x-session-token" in request.headers:
                refused = await self.session_refusal(request)
            else:
                refused = self.refusal(request, endpoint.scopes)
            if refused is not None:
                if request.url.path == "/v1/messages":
                    REQUESTS.labels("unknown", str(refused.status_code)).inc()
                return refused
            return await endpoint.handler(request)

        return checked

    def refusal(self, request: Request, scopes: Sequence[Scope] = ("messages:write",)) -> Response | None:
        """401/403 for a request without a valid key or one lacking all of `scopes`; None to let it through.

        The key's scopes are left on `request.state.scopes` (every scope when no key is configured).
        """
        given = self.keys.presented(request)
        if not given and not self.keys.open:
            return _error(401, "an API key is required: Authorization: Bearer <key> or X-API-Key")
        granted = self.keys.scopes(given)
        if granted is None:
            return _error(403, "that API key is not valid")
        if not granted.intersection(scopes):
            return _error(403, f"that API key lacks the scope this needs: {' or '.join(scopes)}")
        request.state.scopes = granted
        return None

    async def session_refusal(self, request: Request) -> Response | None:
        """A conversation read with a web chat session token: only that session's own conversation and items."""
        if self.sessions is None:
            return _error(403, "session tokens are not accepted here")
        try:
            session = await self.sessions.check(request.headers["x-session-token"])
        except TokenError as exc:
            return JSONResponse({"error": exc.message, "code": exc.code, "details": []}, status_code=403)
        sender = f"web-{session.id}"
        if self.view.conversation_of_sender(sender) != request.path_params["conversation_id"]:
            return _error(403, "that session token is not this conversation's")
        request.state.own_sender = sender
        return None

    # ---- handlers -----------------------------------------------------------------------------

    async def reject(
        self, source: str, body: bytes, status: int, message: str, details: Sequence[Any] = ()
    ) -> JSONResponse:
        """The 4xx, and a dead letter of the body while the address's allowance lasts (a flood writes no more)."""
        if await self.admission.may_dead_letter(source):
            sample = body[: self.limits.max_dead_letter_bytes]
            kept = f" (the first {len(sample)} of {len(body)} bytes kept)" if len(sample) < len(body) else ""
            letter = DeadLetter(
                dead_letter_id="d-" + uuid.uuid4().hex[:24],
                stage="ingress",
                operator="http",
                error_type=f"HTTP {status}",
                error=message + (f": {'; '.join(str(d) for d in details)}" if details else "") + kept,
                source_topic="http:/v1/messages",
                original=sample.decode("utf-8", "replace"),
                original_b64=base64.b64encode(sample).decode("ascii"),
            )
            await self.publish(self.limits.dead_letter_topic, None, letter.to_bytes())
        else:
            UNKEPT.inc()
        return _error(status, message, details)

    async def post_message(self, request: Request) -> Response:
        response = await self.accept(request)
        REQUESTS.labels(getattr(request.state, "channel", "unknown"), str(response.status_code)).inc()
        return response

    async def accept(self, request: Request) -> Response:
        source = _source(request)
        decision = await self.admission.allow_source(source)
        if not decision.allowed:  # before the body is read: a flood costs a bucket lookup, and writes nothing
            return too_many_from(decision)
        try:
            body = await read_body(request, self.limits.max_body_bytes)
        except BodyRefused as refused:
            return _error(refused.status, refused.message)
        try:
            data = parse_json(body, JsonLimits(self.limits.max_body_bytes))
        except BodyRefused as refused:
            return await self.reject(source, body, refused.status, refused.message)
        try:
            inbound = InboundRequest.model_validate(data)
        except ValidationError as exc:
            details = [
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
            ]
            return await self.reject(source, body, 422, "invalid message", details)
        if len(inbound.text) > self.limits.max_text_chars:
            return await self.reject(
                source, body, 413, f"text is {len(inbound.text)} characters; the limit is {self.limits.max_text_chars}"
            )
        if (inbound.customer_id is not None or inbound.channel != "api") and not self._acts_for_customers(request):
            # a customer id, or a channel address (a phone, a mailbox, a chat session), is a claim about
            # who is writing: only a key trusted to act for customers may make it
            return _error(
                403,
                "naming a customer_id or posting on a channel other than `api` needs an API key with scope "
                "customers:act (customers are identified by their channel, a customer token, or such a key)",
            )
        request.state.channel = inbound.channel
        decision = await self.admission.allow(inbound.channel, inbound.sender)
        if not decision.allowed:
            return too_many(inbound.channel, decision)
        message_id = inbound.message_id or f"m-{uuid.uuid4().hex}"
        raw = RawInbound(
            message_id=message_id,
            channel=inbound.channel,
            sender=inbound.sender,
            text=inbound.text,
            customer_id=inbound.customer_id,
            provider_message_id=inbound.provider_message_id,
            payload=inbound.payload,
        )
        await self.admission.publish_raw(raw)
        return JSONResponse(
            {
                "message_id": message_id,
                "status_url": f"/v1/messages/{message_id}",
                "received_at": raw.received_at.isoformat(),
            },
            status_code=202,
        )

    @staticmethod
    def _acts_for_customers(request: Request) -> bool:
        return "customers:act" in getattr(request.state, "scopes", frozenset())

    @staticmethod
    def _readable(request: Request, items: list[ViewItem]) -> list[ViewItem]:
        """All items for a key with conversations:read; a web chat session's own only, for its token."""
        sender = getattr(request.state, "own_sender", None)
        return items if sender is None else [item for item in items if item.belongs_to(sender)]

    async def post_csat(self, request: Request) -> Response:
        """A customer's CSAT answer onto sf.feedback; a refused one publishes nothing (it is no customer message)."""
        decision = await self.admission.allow_source(_source(request))
        if not decision.allowed:
            return too_many_from(decision)
        try:
            data = parse_json(await read_body(request, self.limits.max_body_bytes))
        except BodyRefused as refused:
            return _error(refused.status, refused.message)
        try:
            answer = CsatRequest.model_validate(data)
        except ValidationError as exc:
            details = [
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
            ]
            return _error(422, "invalid CSAT answer", details)
        channel = answer.channel
        if channel is None:  # the channel the conversation was last seen on, when this ingress saw it
            items = self.view.conversation(answer.conversation_id) or []
            channel = next((i.record["channel"] for i in reversed(items) if "channel" in i.record), None)
        feedback = Feedback.csat(
            answer.conversation_id,
            answer.rating,
            answer.request_id or f"csat-{uuid.uuid4().hex}",
            comment=answer.comment,
            channel=channel,
            escalation_id=answer.escalation_id,
        )
        await self.publish(self.limits.feedback_topic, feedback.partition_key(), feedback.to_bytes())
        return JSONResponse({"feedback_id": feedback.feedback_id, "status": "accepted"}, status_code=202)

    async def get_message(self, request: Request) -> Response:
        message_id = request.path_params["message_id"]
        try:
            wait = float(request.query_params.get("wait", "0"))
        except ValueError:
            wait = math.nan
        if not 0 <= wait <= math.inf:  # NaN too: it compares false both ways
            return _error(400, "wait must be a number of seconds, 0 or more")
        wait = min(wait, self.limits.max_wait_s)
        answer = await self.view.answer(message_id, wait)
        if answer is None:
            return JSONResponse({"message_id": message_id, "status": "pending"})
        status = "replied" if answer.kind == "reply" else "escalated"
        return JSONResponse({"message_id": message_id, "status": status, "answer": answer.as_json()})

    async def delete_session(self, request: Request) -> Response:
        """The `logout` frame over REST, for a host site whose user signs out while no chat page is open.

        The token itself is the credential (it can only end its own session); a logout repeated or
        arriving after the socket's own is still 204, so a host's retry needs no special case.
        """
        if self.sessions is None:
            return _error(404, "this gateway issues no web chat sessions")
        decision = await self.admission.allow_source(_source(request))
        if not decision.allowed:
            return too_many_from(decision)
        token = request.headers.get("x-session-token")
        if not token:
            return _error(401, "the X-Session-Token header names the session to log out")
        try:
            session = self.sessions.verify(token)
        except TokenError as exc:
            return JSONResponse({"error": exc.message, "code": exc.code, "details": []}, status_code=401)
        await self.sessions.revoke(session)
        return Response(status_code=204)

    async def get_conversation(self, request: Request) -> Response:
        conversation_id = request.path_params["conversation_id"]
        items = self.view.conversation(conversation_id)
        if items is None:
            return _error(404, f"no conversation {conversation_id!r} seen by this ingress")
        readable = self._readable(request, items)
        return JSONResponse({"conversation_id": conversation_id, "items": [i.as_json() for i in readable]})

    async def get_snapshot(self, request: Request) -> Response:
        conversation_id = request.path_params["conversation_id"]
        if self.snapshots is None:
            return _error(503, "no conversation store is configured (set DATABASE_URL, or use `supportflow run`)")
        snapshot, cached = await self.snapshots(conversation_id)
        if snapshot is None:
            return _error(404, f"no conversation {conversation_id!r} in the conversation store")
        return JSONResponse(snapshot, headers={"X-Cache": "hit" if cached else "miss"})

    async def stream_conversation(self, request: Request) -> Response:
        conversation_id = request.path_params["conversation_id"]
        queue = self.view.subscribe(conversation_id)

        async def events() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if not self._readable(request, [item]):
                        continue
                    yield f"event: {item.kind}\nid: {item.id}\ndata: {json.dumps(item.as_json())}\n\n"
            finally:
                self.view.unsubscribe(conversation_id, queue)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def get_outbox(self, request: Request) -> Response:
        assert self.outbox is not None
        raw = request.query_params.get("limit", "50")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_OUTBOX_LIMIT:
            return _error(400, f"limit must be a whole number from 1 to {MAX_OUTBOX_LIMIT}")
        return JSONResponse({"entries": await self.outbox(int(raw))}, headers={"Cache-Control": "no-store"})

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok", "warnings": self.warnings} if self.warnings else {"status": "ok"})

    async def readiness(self, _: Request) -> Response:
        if self.ready is not None and not self.ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def openapi(self, _: Request) -> Response:
        return JSONResponse(self.openapi_description())

    async def metrics(self, _: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    def openapi_description(self) -> dict[str, Any]:
        """OpenAPI 3.1 of the REST API, built from the route table; request bodies straight from their models."""
        secured = [{"apiKey": []}, {"bearer": []}] if not self.keys.open else []
        error = {"description": "a clear error", "content": {"application/json": {"schema": _ERROR_REF}}}
        paths: dict[str, Any] = {}
        models: dict[str, Any] = {}
        for e in self.endpoints():
            operation: dict[str, Any] = {"summary": e.summary}
            if e.keyed:
                operation["security"] = secured
            if e.parameters:
                operation["parameters"] = list(e.parameters)
            if e.body is not None:
                ref = {"$ref": f"#/components/schemas/{e.body.__name__}"}
                operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
                models[e.body.__name__] = e.body.model_json_schema(ref_template="#/components/schemas/{model}")
            operation["responses"] = {
                code: ({"description": text} if text else error) for code, text in e.responses.items()
            }
            paths.setdefault(e.path, {})[e.method.lower()] = operation
        return {
            "openapi": "3.1.0",
            "info": {"title": "supportflow ingress", "version": "1"},
            "paths": paths,
            "components": {
                "schemas": {
                    **models,
                    "Error": {
                        "type": "object",
                        "properties": {"error": {"type": "string"}, "details": {"type": "array"}},
                    },
                },
                "securitySchemes": {
                    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "bearer": {"type": "http", "scheme": "bearer"},
                },
            },
        }


def create_app(
    publish: Publish,
    view: ConversationView,
    limits: IngressLimits,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    rate_limiter: RateLimiter | None = None,
    snapshots: SnapshotSource | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    api_keys: Sequence[ApiKey | str] = (),
    ready: Callable[[], bool] | None = None,
    outbox: OutboxSource | None = None,
    warnings: Sequence[str] = (),
    sessions: SessionTokens | None = None,
) -> Starlette:
    """The gateway's Starlette app: `GatewayApi`'s routes plus the channels' (`extra_routes`)."""
    api = GatewayApi(publish, view, limits, rate_limiter, snapshots, api_keys, ready, outbox, warnings, sessions)
    return api.app(lifespan, extra_routes)
