"""Web chat over a WebSocket: the protocol the widget (`web/widget.js`) and mobile apps speak.

One socket per browser tab or app screen at `/v1/chat`. Frames are JSON objects (text or binary
frames), read by the one strict parser (`connectors/inbound_body.py`: no U+0000 or other control
characters, lone surrogates, duplicate keys, NaN, deep nesting, frames over 64 kB) and validated
with pydantic; a frame that is refused gets an `error` frame and the socket stays open and usable.

    client → server  {"type": "hello", "token": "<session token>"?, "customer_token": "<JWT>"?,
                      "customer_id": "..."?}
    server → client  {"type": "welcome", "token": "<session token>", "session": "...",
                      "customer_id": "..." | null, "history": [item, ...]}
    client → server  {"type": "message", "text": "...", "client_message_id": "..."?}
    server → client  {"type": "ack", "message_id": "..."}      then {"type": "typing"}
    server → client  {"type": "reply.delta", "reply_to": "<message_id>", "seq": n, "text": "..."}
                     {"type": "reply.restart", "reply_to": "<message_id>", "seq": n}
                     (only while a language model writes the reply, see "Streamed replies" below)
    server → client  {"type": "reply", ...item} | {"type": "escalation", ...item}  (as they happen)
    client → server  {"type": "typing"}                          (optional keep-alive, no answer)
    client → server  {"type": "csat", "rating": 1..5, "comment": "..."?, "client_feedback_id": "..."?}
    server → client  {"type": "csat_ack", "feedback_id": "..."}   (the answer is on sf.feedback)
    client → server  {"type": "logout"}
    server → client  {"type": "logged_out"}   (the session is revoked; say hello again for a new one)
    server → client  {"type": "error", "code": "...", "error": "a sentence for humans"}

Tokens are HS256 JWTs (connectors/channels/session_tokens.py has every claim):

- `token` is the session token of a previous `welcome` (`sub` = session id, `cid` = the bound
  customer, `aud` "supportflow:webchat-session", `exp` = now + `webchat_session_ttl_s`), signed
  with `SUPPORTFLOW_WEBCHAT_SECRET`. Absent: a new anonymous session. Each `welcome` renews it.
- `customer_token` is minted by the backend of the site or app that signed its customer in, with
  `SUPPORTFLOW_CUSTOMER_TOKEN_SECRET`: `sub` = the customer id, `aud` = "supportflow:customer",
  `exp` (all required). The session is then bound to that customer, and every message it sends
  carries that customer id (`RawInbound.customer_id`). This is the only way a session gets a
  customer id. `customer_id` in `hello` is optional and, when sent, must equal the verified
  customer (`customer_id_unverified` / `customer_id_mismatch` otherwise).
- A session token bound to one customer restores that session only for the same customer; a
  `customer_token` for someone else starts a new session bound to them.

`logout` revokes the session on the server (connectors/redis/session_revocations.py): its
tokens, this one and every one a `welcome` renewed, are refused from then on
(`session_token_revoked`), so a shared device that kept one inherits neither the customer nor the
history. The widget also forgets its stored token.

A refused token is an `error` frame, never a silent new session: `code` is
`session_token_<reason>` or `customer_token_<reason>`, with reason `expired`, `revoked`, `bad_signature`
(wrong key), `wrong_audience`, `wrong_issuer`, `bad_algorithm` (anything but HS256, `alg: none`
included), `missing_claim`, `not_yet_valid`, `malformed` (not a JWT), `invalid`, or for customer
tokens `not_configured`. The client may then say `hello` again (e.g. without the stale token).
Other codes: `invalid_frame`, `hello_first`, `rate_limited`, `nothing_to_rate`.

Streamed replies: when a language model writes the reply (`compose`, with `llm_tiers` configured),
the session sees it grow: `reply.delta` frames carry the next pieces of the reply to the message
`reply_to` (append `text`), `reply.restart` says what was shown of it is void (the model's tier failed
mid-reply and the next starts over: clear it, the next deltas begin again). `seq` numbers the frames
of a reply; the gateway sends them in order, each once (a restart may share its number). The deltas
are a preview, never the reply: the `reply` frame whose `in_reply_to` is that message id is the final,
checked text and replaces the preview (it may differ from it: a generated reply the guard refused is
replaced by the non-LLM one); an `escalation` for it replaces it too. No deltas follow the final
frame, and deltas may be missing (they are sent best-effort); nothing else changes without a model.
They come from topic `sf.reply.stream` (`schemas.ReplyChunk`), for this session's own address only.

History is this session's own: the messages its sender address (`web-<session id>`) sent and the
answers to them, as this ingress saw them. `client_message_id` makes a message resent after a
reconnect idempotent (the message id derives from it). A `csat` frame rates the session's own
conversation (there is no conversation id to give, so no other can be rated); `client_feedback_id`
makes a resent answer one record.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from connectors.channels.admit import Admission
from connectors.channels.conversation_view import ConversationView, ViewItem
from connectors.channels.session_tokens import CustomerTokens, Session, SessionTokens, TokenError
from connectors.inbound_body import BodyRefused, JsonLimits, parse_json, receive_frame
from connectors.protocols import RateLimiter
from schemas import Feedback, RawInbound, ReplyChunk

__all__ = ["WebChat"]

log = logging.getLogger(__name__)

Publish = Callable[[str, str | None, bytes], Awaitable[Any]]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hello(_Frame):
    type: Literal["hello"]
    token: str | None = Field(default=None, max_length=4000)
    customer_token: str | None = Field(default=None, max_length=4000)
    customer_id: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")


class ChatMessage(_Frame):
    type: Literal["message"]
    text: str = Field(min_length=1, max_length=4000)
    client_message_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,100}$")


class Typing(_Frame):
    type: Literal["typing"]


class Logout(_Frame):
    type: Literal["logout"]


class CsatAnswer(_Frame):
    type: Literal["csat"]
    rating: int = Field(ge=1, le=5, strict=True)
    comment: str = Field(default="", max_length=2000)
    client_feedback_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,100}$")


FRAME_LIMITS = JsonLimits(max_bytes=64_000, max_depth=8)  # frames are flat; 4,000 characters escaped fit

ClientFrame = TypeAdapter(Annotated[Hello | ChatMessage | Typing | CsatAnswer | Logout, Field(discriminator="type")])


class HelloRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(code: str, message: str) -> dict[str, str]:
    return {"type": "error", "code": code, "error": message}


def _delta_frame(chunk: ReplyChunk) -> dict[str, Any]:
    if chunk.kind == "restart":
        return {"type": "reply.restart", "reply_to": chunk.reply_to, "seq": chunk.seq}
    return {"type": "reply.delta", "reply_to": chunk.reply_to, "seq": chunk.seq, "text": chunk.text}


class WebChat:
    """The `/v1/chat` WebSocket endpoint: publish what the customer types, push what the pipeline answers."""

    def __init__(
        self,
        publish: Publish,
        view: ConversationView,
        sessions: SessionTokens,
        customers: CustomerTokens,
        limiter: RateLimiter,
        ingress_topic: str = "sf.ingress",
        max_text_chars: int = 4000,
        feedback_topic: str = "sf.feedback",
    ) -> None:
        self.publish = publish
        self.view = view
        self.sessions = sessions
        self.customers = customers
        self.admission = Admission(publish, limiter, ingress_topic)
        self.max_text_chars = max_text_chars
        self.feedback_topic = feedback_topic

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        session: Session | None = None
        pushing: asyncio.Task[None] | None = None
        try:
            while True:
                try:  # the one strict parser: NUL, lone surrogates, duplicate keys, NaN, deep nesting refused
                    data = parse_json(await receive_frame(websocket), FRAME_LIMITS)
                except BodyRefused as refused:
                    await websocket.send_json(_error("invalid_frame", f"invalid frame: {refused.message}"))
                    continue
                try:
                    frame = ClientFrame.validate_python(data)
                except ValidationError as exc:
                    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'frame'}: {e['msg']}" for e in exc.errors())
                    await websocket.send_json(_error("invalid_frame", f"invalid frame: {problems}"))
                    continue
                if isinstance(frame, Hello):
                    try:
                        new_session, token = await self.hello(frame)
                    except HelloRefused as refused:  # the socket keeps whatever session it had
                        await websocket.send_json(_error(refused.code, refused.message))
                        continue
                    sender = f"web-{new_session.id}"
                    if pushing is not None and (session is None or session.id != new_session.id):
                        pushing.cancel()
                        pushing = None
                    session = new_session
                    welcome = {
                        "type": "welcome",
                        "token": token,
                        "session": session.id,
                        "customer_id": session.customer_id,
                        "history": [i.as_json() for i in self._history(sender)],
                    }
                    await websocket.send_json(welcome)
                    if pushing is None:
                        pushing = asyncio.create_task(self._push(websocket, sender))
                elif isinstance(frame, ChatMessage):
                    if session is None:
                        await websocket.send_json(_error("hello_first", "say hello first"))
                        continue
                    await self._accept(websocket, frame, session)
                elif isinstance(frame, CsatAnswer):
                    if session is None:
                        await websocket.send_json(_error("hello_first", "say hello first"))
                        continue
                    await self._csat(websocket, frame, f"web-{session.id}")
                elif isinstance(frame, Logout):
                    if session is None:
                        await websocket.send_json(_error("hello_first", "say hello first"))
                        continue
                    await self.sessions.revoke(session)
                    if pushing is not None:
                        pushing.cancel()
                        pushing = None
                    session = None
                    await websocket.send_json({"type": "logged_out"})
                # a Typing frame needs no answer; it only keeps the socket warm
        except WebSocketDisconnect:
            pass
        finally:
            if pushing is not None:
                pushing.cancel()

    async def hello(self, frame: Hello) -> tuple[Session, str]:
        """The session a hello opens, and its renewed token; HelloRefused when a token or claim is refused."""
        try:
            restored = await self.sessions.check(frame.token) if frame.token else None
            if frame.customer_token:
                customer = self.customers.verify(frame.customer_token)
            else:
                customer = restored.customer_id if restored is not None else None
        except TokenError as exc:
            raise HelloRefused(exc.code, exc.message) from None
        if frame.customer_id is not None:
            if customer is None:
                raise HelloRefused(
                    "customer_id_unverified",
                    "customer_id is taken only from a customer_token signed by your backend; send that instead",
                )
            if frame.customer_id != customer:
                raise HelloRefused("customer_id_mismatch", "customer_id is not the customer the token names")
        if restored is not None and restored.customer_id == customer:
            return self.sessions.issue(restored)
        # no session yet, or a session of another customer (or of nobody): a new one, never another's history
        return self.sessions.issue(Session(secrets.token_urlsafe(16), customer))

    def _history(self, sender: str) -> list[ViewItem]:
        return self.view.sender_items(sender)

    async def _accept(self, websocket: WebSocket, frame: ChatMessage, session: Session) -> None:
        sender = f"web-{session.id}"
        decision = await self.admission.allow("webchat", sender)
        if not decision.allowed:
            await websocket.send_json(
                _error("rate_limited", f"too many messages; retry in {decision.retry_after_s:.0f}s")
            )
            return
        suffix = frame.client_message_id or secrets.token_hex(12)
        message_id = "w-" + hashlib.sha256(f"{sender}|{suffix}".encode()).hexdigest()[:24]
        raw = RawInbound(
            message_id=message_id,
            channel="webchat",
            sender=sender,
            address_verified=True,  # the session's own address: its replies go back on this socket
            text=frame.text,
            customer_id=session.customer_id,
        )
        await self.admission.publish_raw(raw)
        await websocket.send_json({"type": "ack", "message_id": message_id})
        await websocket.send_json({"type": "typing"})

    async def _csat(self, websocket: WebSocket, frame: CsatAnswer, sender: str) -> None:
        """Rate this session's own conversation: the conversation comes from the verified session, never the frame."""
        conversation_id = self.view.conversation_of_sender(sender)
        if conversation_id is None:
            await websocket.send_json(_error("nothing_to_rate", "there is no conversation to rate yet"))
            return
        request_id = f"{sender}|{frame.client_feedback_id or secrets.token_hex(12)}"
        feedback = Feedback.csat(conversation_id, frame.rating, request_id, comment=frame.comment, channel="webchat")
        await self.publish(self.feedback_topic, feedback.partition_key(), feedback.to_bytes())
        await websocket.send_json({"type": "csat_ack", "feedback_id": feedback.feedback_id})

    async def _push(self, websocket: WebSocket, sender: str) -> None:
        """Forward replies and escalations of this sender's conversation, as they arrive."""
        queue = self.view.subscribe_sender(sender)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, ReplyChunk):
                    if item.recipient == sender:
                        await websocket.send_json(_delta_frame(item))
                elif item.kind in ("reply", "escalation") and item.belongs_to(sender):
                    await websocket.send_json({"type": item.kind, **item.as_json()})
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.view.unsubscribe_sender(sender, queue)
