"""The HTTP ingress: accept a message for any channel, publish it raw, read replies back.

It authenticates nothing yet and does no AI work: it validates, rate-limits per channel and
sender, publishes to `sf.ingress`, and answers. A rejected request is answered with a clear 4xx
and also kept on the dead-letter topic with its reason, so nothing a client sent is lost; a
rate-limited one gets 429 with Retry-After, for the client (or provider) to send again.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
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

from connectors.channels.conversation_view import ConversationView
from connectors.redis.rate_limit import InProcessRateLimiter, RateLimiter, retry_after_header
from schemas import Channel, DeadLetter, Feedback, RawInbound

Publish = Callable[[str, str | None, bytes], Awaitable[None]]

__all__ = ["CsatRequest", "InboundRequest", "IngressLimits", "create_app"]

REQUESTS = Counter(
    "supportflow_ingress_requests_total", "POST /v1/messages by channel and status.", ["channel", "status"]
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


SnapshotSource = Callable[[str], Awaitable[tuple[dict[str, Any] | None, bool]]]
"""conversation id -> (snapshot or None, whether it came from the cache)"""

OutboxSource = Callable[[int], Awaitable[list[dict[str, Any]]]]
"""limit -> the newest outbox entries, newest first"""

MAX_OUTBOX_LIMIT = 200


def _error(status: int, message: str, details: Sequence[Any] = ()) -> JSONResponse:
    return JSONResponse({"error": message, "details": list(details)}, status_code=status)


def create_app(
    publish: Publish,
    view: ConversationView,
    limits: IngressLimits,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    rate_limiter: RateLimiter | None = None,
    snapshots: SnapshotSource | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    api_keys: Sequence[str] = (),
    ready: Callable[[], bool] | None = None,
    outbox: OutboxSource | None = None,
) -> Starlette:
    """The ingress API; `snapshots` (the conversation store behind a short cache) serves full histories.

    With `outbox` (replies of channels with no provider go to the outbox table), `GET /v1/outbox`
    lists its newest entries; without it the route does not exist (404).

    With `api_keys`, every `/v1/` REST call needs one (`Authorization: Bearer <key>` or
    `X-API-Key`): 401 without, 403 with a wrong one, compared in constant time. The web chat
    socket has its own signed sessions; health, readiness, metrics and the OpenAPI description
    stay open.
    """
    limiter = rate_limiter or InProcessRateLimiter()
    keys = [k.encode() for k in api_keys]

    def authorized(request: Request) -> Response | None:
        if not keys or not request.url.path.startswith("/v1/") or request.url.path == "/v1/chat":
            return None
        header = request.headers.get("authorization", "")
        given = (
            header.removeprefix("Bearer ").strip()
            if header.startswith("Bearer ")
            else request.headers.get("x-api-key", "")
        )
        if not given:
            return _error(401, "an API key is required: Authorization: Bearer <key> or X-API-Key")
        if not any(hmac.compare_digest(given.encode(), key) for key in keys):
            return _error(403, "that API key is not valid")
        return None

    async def reject(body: bytes, status: int, message: str, details: Sequence[Any] = ()) -> JSONResponse:
        letter = DeadLetter(
            dead_letter_id="d-" + uuid.uuid4().hex[:24],
            stage="ingress",
            operator="http",
            error_type=f"HTTP {status}",
            error=message + (f": {'; '.join(str(d) for d in details)}" if details else ""),
            source_topic="http:/v1/messages",
            original=body.decode("utf-8", "replace"),
            original_b64=base64.b64encode(body).decode("ascii"),
        )
        await publish(limits.dead_letter_topic, None, letter.to_bytes())
        return _error(status, message, details)

    async def post_message(request: Request) -> Response:
        response = authorized(request) or await accept(request)
        REQUESTS.labels(getattr(request.state, "channel", "unknown"), str(response.status_code)).inc()
        return response

    async def accept(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
            return _error(413, f"body is {declared} bytes; the limit is {limits.max_body_bytes}")
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            return await reject(body[: limits.max_body_bytes], 413, f"body exceeds {limits.max_body_bytes} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await reject(body, 400, f"body is not valid UTF-8 (byte {exc.start})")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return await reject(body, 400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
        try:
            inbound = InboundRequest.model_validate(data)
        except ValidationError as exc:
            details = [
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
            ]
            return await reject(body, 422, "invalid message", details)
        if len(inbound.text) > limits.max_text_chars:
            return await reject(
                body, 413, f"text is {len(inbound.text)} characters; the limit is {limits.max_text_chars}"
            )
        request.state.channel = inbound.channel
        decision = await limiter.allow(inbound.channel, inbound.sender)
        if not decision.allowed:
            response = _error(
                429, f"too many {inbound.channel} messages from this sender; retry in {decision.retry_after_s:.0f}s"
            )
            response.headers["Retry-After"] = retry_after_header(decision)
            return response
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
        await publish(limits.ingress_topic, raw.partition_key(), raw.to_bytes())
        return JSONResponse(
            {
                "message_id": message_id,
                "status_url": f"/v1/messages/{message_id}",
                "received_at": raw.received_at.isoformat(),
            },
            status_code=202,
        )

    async def post_csat(request: Request) -> Response:
        """A customer's CSAT answer onto sf.feedback; a refused one publishes nothing (it is no customer message)."""
        if (refused := authorized(request)) is not None:
            return refused
        body = await request.body()
        if len(body) > limits.max_body_bytes:
            return _error(413, f"body exceeds {limits.max_body_bytes} bytes")
        try:
            answer = CsatRequest.model_validate_json(body)
        except ValidationError as exc:
            details = [
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
            ]
            return _error(422, "invalid CSAT answer", details)
        channel = answer.channel
        if channel is None:  # the channel the conversation was last seen on, when this ingress saw it
            items = view.conversation(answer.conversation_id) or []
            channel = next((i.record["channel"] for i in reversed(items) if "channel" in i.record), None)
        feedback = Feedback.csat(
            answer.conversation_id,
            answer.rating,
            answer.request_id or f"csat-{uuid.uuid4().hex}",
            comment=answer.comment,
            channel=channel,
            escalation_id=answer.escalation_id,
        )
        await publish(limits.feedback_topic, feedback.partition_key(), feedback.to_bytes())
        return JSONResponse({"feedback_id": feedback.feedback_id, "status": "accepted"}, status_code=202)

    async def get_message(request: Request) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        message_id = request.path_params["message_id"]
        try:
            wait = min(float(request.query_params.get("wait", "0")), limits.max_wait_s)
        except ValueError:
            return _error(400, "wait must be a number of seconds")
        answer = await view.answer(message_id, wait)
        if answer is None:
            return JSONResponse({"message_id": message_id, "status": "pending"})
        status = "replied" if answer.kind == "reply" else "escalated"
        return JSONResponse({"message_id": message_id, "status": status, "answer": answer.as_json()})

    async def get_conversation(request: Request) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        conversation_id = request.path_params["conversation_id"]
        items = view.conversation(conversation_id)
        if items is None:
            return _error(404, f"no conversation {conversation_id!r} seen by this ingress")
        return JSONResponse({"conversation_id": conversation_id, "items": [i.as_json() for i in items]})

    async def get_snapshot(request: Request) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        conversation_id = request.path_params["conversation_id"]
        if snapshots is None:
            return _error(503, "no conversation store is configured (set DATABASE_URL, or use `supportflow run`)")
        snapshot, cached = await snapshots(conversation_id)
        if snapshot is None:
            return _error(404, f"no conversation {conversation_id!r} in the conversation store")
        return JSONResponse(snapshot, headers={"X-Cache": "hit" if cached else "miss"})

    async def stream_conversation(request: Request) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        conversation_id = request.path_params["conversation_id"]
        queue = view.subscribe(conversation_id)

        async def events() -> AsyncIterator[str]:
            try:
                yield ": connected\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {item.kind}\nid: {item.id}\ndata: {json.dumps(item.as_json())}\n\n"
            finally:
                view.unsubscribe(conversation_id, queue)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def get_outbox(request: Request) -> Response:
        if (refused := authorized(request)) is not None:
            return refused
        assert outbox is not None
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_OUTBOX_LIMIT:
            return _error(400, f"limit must be a whole number from 1 to {MAX_OUTBOX_LIMIT}")
        return JSONResponse({"entries": await outbox(int(raw))}, headers={"Cache-Control": "no-store"})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readiness(_: Request) -> Response:
        if ready is not None and not ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def openapi(_: Request) -> Response:
        return JSONResponse(openapi_description(bool(keys), with_outbox=outbox is not None))

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/v1/messages", post_message, methods=["POST"]),
            Route("/v1/messages/{message_id}", get_message, methods=["GET"]),
            Route("/v1/feedback/csat", post_csat, methods=["POST"]),
            Route("/v1/conversations/{conversation_id}", get_snapshot, methods=["GET"]),
            Route("/v1/conversations/{conversation_id}/messages", get_conversation, methods=["GET"]),
            Route("/v1/conversations/{conversation_id}/stream", stream_conversation, methods=["GET"]),
            *([Route("/v1/outbox", get_outbox, methods=["GET"])] if outbox is not None else []),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", readiness, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *extra_routes,
        ],
        lifespan=lifespan,
    )


def openapi_description(with_keys: bool, with_outbox: bool = False) -> dict[str, Any]:
    """OpenAPI 3.1 of the REST API, its request body straight from the pydantic model it validates with."""
    error = {
        "description": "a clear error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    secured = [{"apiKey": []}, {"bearer": []}] if with_keys else []
    conversation = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}
    outbox_path = {
        "/v1/outbox": {
            "get": {
                "summary": "The newest replies kept in the outbox (channels with no provider configured)",
                "security": secured,
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}
                ],
                "responses": {"200": {"description": "entries, newest first"}, "400": error},
            }
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "supportflow ingress", "version": "1"},
        "paths": {
            "/v1/messages": {
                "post": {
                    "summary": "Accept a customer message; it is answered on the stream",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InboundRequest"}}},
                    },
                    "responses": {
                        "202": {"description": "accepted; poll status_url"},
                        "400": error,
                        "401": error,
                        "403": error,
                        "413": error,
                        "422": error,
                        "429": error,
                    },
                }
            },
            "/v1/messages/{message_id}": {
                "get": {
                    "summary": "The answer to a message (reply or escalation), waiting up to `wait` seconds",
                    "security": secured,
                    "parameters": [
                        {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 30}},
                    ],
                    "responses": {"200": {"description": "pending, replied or escalated"}, "400": error},
                }
            },
            "/v1/feedback/csat": {
                "post": {
                    "summary": "A customer's satisfaction answer (1..5) for a conversation, onto sf.feedback",
                    "security": secured,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CsatRequest"}}},
                    },
                    "responses": {
                        "202": {"description": "accepted; feedback_id names it"},
                        "401": error,
                        "403": error,
                        "413": error,
                        "422": error,
                    },
                }
            },
            "/v1/conversations/{conversation_id}": {
                "get": {
                    "summary": "The full history from the conversation store",
                    "security": secured,
                    "parameters": [conversation],
                    "responses": {"200": {"description": "the snapshot"}, "404": error, "503": error},
                }
            },
            "/v1/conversations/{conversation_id}/messages": {
                "get": {
                    "summary": "What this ingress saw of the conversation",
                    "security": secured,
                    "parameters": [conversation],
                    "responses": {"200": {"description": "items"}, "404": error},
                }
            },
            **(outbox_path if with_outbox else {}),
            "/healthz": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "Ready to serve",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "starting"}},
                }
            },
        },
        "components": {
            "schemas": {
                "InboundRequest": InboundRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
                "CsatRequest": CsatRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "details": {"type": "array"}}},
            },
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
