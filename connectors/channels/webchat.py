"""Web chat over a WebSocket: the protocol the widget (`web/widget.js`) and mobile apps speak.

One socket per browser tab at `/v1/chat`. Frames are JSON, validated with pydantic; a bad frame
gets an `error` frame and the socket stays open. The protocol:

    client → server  {"type": "hello", "token": "<from a previous welcome>"?, "customer_id": "..."?}
    server → client  {"type": "welcome", "token": "...", "session": "...", "history": [item, ...]}
    client → server  {"type": "message", "text": "...", "client_message_id": "..."?}
    server → client  {"type": "ack", "message_id": "..."}      then {"type": "typing"}
    server → client  {"type": "reply", ...item} | {"type": "escalation", ...item}  (as they happen)
    server → client  {"type": "error", "error": "..."}
    client → server  {"type": "csat", "rating": 1..5, "comment": "..."?, "client_feedback_id": "..."?}
    server → client  {"type": "csat_ack", "feedback_id": "..."}   (the answer is on sf.feedback)

The session is a random id signed with the ingress's secret (HMAC-SHA256); the widget keeps the
token and sends it back in `hello` after a reconnect or a reload, and gets the history of its
own conversation — never another's: the sender address is derived from the verified session, and
history is only what this ingress saw for that sender's conversation. `client_message_id` makes a
message resent after a reconnect idempotent (the message id derives from it). A `csat` frame rates
the session's own conversation (there is no conversation id to give, so no other can be rated);
`client_feedback_id` makes a resent answer one record.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from connectors.conversation_view import ConversationView, ViewItem
from connectors.protocols import RateLimiter
from schemas import Feedback, RawInbound

__all__ = ["SessionSigner", "WebChat"]

log = logging.getLogger(__name__)

Publish = Callable[[str, str | None, bytes], Awaitable[Any]]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hello(_Frame):
    type: Literal["hello"]
    token: str | None = Field(default=None, max_length=300)
    customer_id: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")


class ChatMessage(_Frame):
    type: Literal["message"]
    text: str = Field(min_length=1, max_length=4000)
    client_message_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,100}$")


class Typing(_Frame):
    type: Literal["typing"]


class CsatAnswer(_Frame):
    type: Literal["csat"]
    rating: int = Field(ge=1, le=5, strict=True)
    comment: str = Field(default="", max_length=2000)
    client_feedback_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,100}$")


ClientFrame = TypeAdapter(Annotated[Hello | ChatMessage | Typing | CsatAnswer, Field(discriminator="type")])


class SessionSigner:
    """Signed session tokens: `<session>.<hmac>`; a token this ingress did not sign is refused."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def issue(self) -> tuple[str, str]:
        session = secrets.token_urlsafe(16)
        return session, f"{session}.{self._mac(session)}"

    def verify(self, token: str) -> str | None:
        session, _, mac = token.rpartition(".")
        if not session or not hmac.compare_digest(mac, self._mac(session)):
            return None
        return session

    def _mac(self, session: str) -> str:
        digest = hmac.new(self.secret, session.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class WebChat:
    """The `/v1/chat` WebSocket endpoint: publish what the customer types, push what the pipeline answers."""

    def __init__(
        self,
        publish: Publish,
        view: ConversationView,
        signer: SessionSigner,
        limiter: RateLimiter,
        ingress_topic: str = "sf.ingress",
        max_text_chars: int = 4000,
        feedback_topic: str = "sf.feedback",
    ) -> None:
        self.publish = publish
        self.view = view
        self.signer = signer
        self.limiter = limiter
        self.ingress_topic = ingress_topic
        self.max_text_chars = max_text_chars
        self.feedback_topic = feedback_topic

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        session: str | None = None
        customer_id: str | None = None
        pushing: asyncio.Task[None] | None = None
        try:
            while True:
                raw = await websocket.receive_text()
                try:
                    frame = ClientFrame.validate_json(raw)
                except ValidationError as exc:
                    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'frame'}: {e['msg']}" for e in exc.errors())
                    await websocket.send_json({"type": "error", "error": f"invalid frame: {problems}"})
                    continue
                if isinstance(frame, Hello):
                    session, token = self._session(frame.token)
                    customer_id = frame.customer_id
                    sender = f"web-{session}"
                    history = [i.as_json() for i in self._history(sender)]
                    welcome = {"type": "welcome", "token": token, "session": session, "history": history}
                    await websocket.send_json(welcome)
                    if pushing is None:
                        pushing = asyncio.create_task(self._push(websocket, sender))
                elif isinstance(frame, ChatMessage):
                    if session is None:
                        await websocket.send_json({"type": "error", "error": "say hello first"})
                        continue
                    await self._accept(websocket, frame, f"web-{session}", customer_id)
                elif isinstance(frame, CsatAnswer):
                    if session is None:
                        await websocket.send_json({"type": "error", "error": "say hello first"})
                        continue
                    await self._csat(websocket, frame, f"web-{session}")
                # a Typing frame needs no answer; it only keeps the socket warm
        except WebSocketDisconnect:
            pass
        finally:
            if pushing is not None:
                pushing.cancel()

    def _session(self, token: str | None) -> tuple[str, str]:
        if token:
            session = self.signer.verify(token)
            if session is not None:
                return session, token
        return self.signer.issue()

    def _history(self, sender: str) -> list[ViewItem]:
        conversation_id = self.view.conversation_of_sender(sender)
        return (self.view.conversation(conversation_id) or []) if conversation_id else []

    async def _accept(self, websocket: WebSocket, frame: ChatMessage, sender: str, customer_id: str | None) -> None:
        decision = await self.limiter.allow("webchat", sender)
        if not decision.allowed:
            await websocket.send_json(
                {"type": "error", "error": f"too many messages; retry in {decision.retry_after_s:.0f}s"}
            )
            return
        suffix = frame.client_message_id or secrets.token_hex(12)
        message_id = "w-" + hashlib.sha256(f"{sender}|{suffix}".encode()).hexdigest()[:24]
        raw = RawInbound(
            message_id=message_id, channel="webchat", sender=sender, text=frame.text, customer_id=customer_id
        )
        await self.publish(self.ingress_topic, raw.partition_key(), raw.to_bytes())
        await websocket.send_json({"type": "ack", "message_id": message_id})
        await websocket.send_json({"type": "typing"})

    async def _csat(self, websocket: WebSocket, frame: CsatAnswer, sender: str) -> None:
        """Rate this session's own conversation: the conversation comes from the verified session, never the frame."""
        conversation_id = self.view.conversation_of_sender(sender)
        if conversation_id is None:
            await websocket.send_json({"type": "error", "error": "there is no conversation to rate yet"})
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
                if item.kind in ("reply", "escalation"):
                    await websocket.send_json({"type": item.kind, **item.as_json()})
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.view.unsubscribe_sender(sender, queue)
