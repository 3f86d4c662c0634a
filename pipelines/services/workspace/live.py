"""The workspace's live socket: queue changes and conversation items pushed to the agent's page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from connectors.inbound_body import BodyRefused, parse_json, receive_frame
from pipelines.handover.auth import (
    Claims,
    may_access,
)
from pipelines.services.workspace.desk import Workspace
from pipelines.services.workspace.requests import ACTION, WorkspaceError, same_origin, token_of
from schemas import utcnow
from schemas.workspace import AgentSpec, WorkspaceState

log = logging.getLogger(__name__)


class LiveSocket:
    """`/workspace/ws`: the agent's queue as it changes, and their actions as frames.

    Server → client: `welcome` {agent, entries}, `entry` {entry: row}, `removed` {escalation_id},
    `agent` {agent: state}, `result` {request_id, result}, `error` {request_id?, status, error}.
    Client → server: `auth` {token} (unless the cookie came with the handshake), `ping`, and any
    action as in the HTTP API with `type` and an optional `request_id`. Every frame is checked
    against the token's expiry and the entry's assignment; an expired token closes the socket (4401).
    """

    AUTH_TIMEOUT_S = 10.0

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    async def endpoint(self, websocket: WebSocket) -> None:
        if not same_origin(websocket):
            await websocket.close(code=4403, reason="requests from another site are refused")
            return
        await websocket.accept()
        token = token_of(websocket)
        try:
            if token is None:
                token = await self._await_auth(websocket)
            try:
                agent, claims = self.workspace.authenticate(token)
            except WorkspaceError as exc:
                await websocket.send_json({"type": "error", "status": exc.status, "error": exc.message})
                await websocket.close(code=4401)
                return
            await self._serve(websocket, agent, claims)
        except (WebSocketDisconnect, TimeoutError):
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=4401)

    async def _await_auth(self, websocket: WebSocket) -> str | None:
        raw = await asyncio.wait_for(receive_frame(websocket), self.AUTH_TIMEOUT_S)
        with contextlib.suppress(BodyRefused):
            frame = parse_json(raw)
            if isinstance(frame, dict) and frame.get("type") == "auth" and isinstance(frame.get("token"), str):
                return str(frame["token"])
        return None

    async def _serve(self, websocket: WebSocket, agent: AgentSpec, claims: Claims) -> None:
        workspace = self.workspace
        changes = workspace.router.subscribe()
        shown: set[str] = set()
        send_lock = asyncio.Lock()

        async def send(frame: dict[str, Any]) -> None:
            async with send_lock:
                await websocket.send_json(frame)

        entries = workspace.visible(agent)
        shown.update(e.escalation_id for e in entries)
        await send({"type": "welcome", "agent": workspace.me(agent, claims),
                    "entries": [workspace.summary(e) for e in entries]})  # fmt: skip
        pusher = asyncio.create_task(self._push(send, agent, changes, shown))
        try:
            while True:
                raw = await receive_frame(websocket)
                await self._frame(send, websocket, agent, claims, raw)
        finally:
            pusher.cancel()
            workspace.router.unsubscribe(changes)

    async def _push(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        agent: AgentSpec,
        changes: asyncio.Queue[WorkspaceState],
        shown: set[str],
    ) -> None:
        workspace = self.workspace
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            while True:
                state = await changes.get()
                if state.entry is not None:
                    entry = state.entry
                    if may_access(agent, entry):
                        shown.add(entry.escalation_id)
                        await send({"type": "entry", "entry": workspace.summary(entry)})
                    elif entry.escalation_id in shown:
                        shown.discard(entry.escalation_id)
                        await send({"type": "removed", "escalation_id": entry.escalation_id})
                if state.agent is not None and (state.agent.agent_id == agent.agent_id or agent.role == "supervisor"):
                    await send({"type": "agent", "agent": state.agent.model_dump(mode="json")})

    async def _frame(
        self,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        websocket: WebSocket,
        agent: AgentSpec,
        claims: Claims,
        raw: str | bytes,
    ) -> None:
        request_id = None
        try:
            data = parse_json(raw)
            if not isinstance(data, dict):
                raise WorkspaceError(400, "a frame is a JSON object")
            request_id = data.pop("request_id", None)
            if claims.expires_at <= utcnow().timestamp():
                await send({"type": "error", "request_id": request_id, "status": 401,
                            "error": "the session has expired; sign in again"})  # fmt: skip
                await websocket.close(code=4401)
                return
            if data.get("type") == "ping":
                await send({"type": "pong", "request_id": request_id})
                return
            action = ACTION.validate_python(data)
            result = await self.workspace.perform(agent, action)
            await send({"type": "result", "request_id": request_id, "action": action.type, "result": result})
        except WorkspaceError as exc:
            await send({"type": "error", "request_id": request_id, "status": exc.status, "error": exc.message})
        except BodyRefused as exc:
            await send({"type": "error", "request_id": None, "status": exc.status, "error": f"invalid frame: {exc}"})
        except ValueError as exc:  # bad JSON or a frame that does not validate
            message = str(exc)
            if isinstance(exc, ValidationError):
                message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'frame'}: {e['msg']}" for e in exc.errors())
            await send({"type": "error", "request_id": request_id, "status": 422, "error": f"invalid frame: {message}"})
