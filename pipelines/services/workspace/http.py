"""The workspace's HTTP routes: the page, sign-in, the queue, an entry, actions, presence, the knowledge base."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute

from connectors.inbound_body import BodyRefused, parse_json, read_body
from pipelines.handover.auth import (
    Claims,
)
from pipelines.services.workspace.desk import Workspace
from pipelines.services.workspace.knowledge import WorkspaceKnowledge
from pipelines.services.workspace.live import LiveSocket
from pipelines.services.workspace.requests import (
    ACTION,
    COOKIE,
    VERBS,
    WEB_DIR,
    LoginRequest,
    OpenAction,
    WorkspaceError,
    same_origin,
    token_of,
)
from schemas.workspace import AgentSpec

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64_000  # an agent's reply is at most 4,000 characters


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_workspace_app(workspace: Workspace, lifespan: Any = None) -> Starlette:
    """The page, its JSON API and the live WebSocket, over one Workspace."""

    async def page(_: Request) -> Response:
        return FileResponse(WEB_DIR / "workspace.html", headers={"cache-control": "no-store"})

    async def script(_: Request) -> Response:
        return FileResponse(
            WEB_DIR / "workspace.js", media_type="text/javascript", headers={"cache-control": "no-store"}
        )

    async def authorized(request: Request) -> tuple[AgentSpec, Claims]:
        if request.method == "POST":
            if not same_origin(request):
                raise WorkspaceError(403, "requests from another site are refused")
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise WorkspaceError(415, "send JSON (content-type: application/json)")
        return workspace.authenticate(token_of(request))

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = parse_json(await read_body(request, MAX_BODY_BYTES) or b"{}")
        except BodyRefused as refused:
            raise WorkspaceError(refused.status, refused.message) from None
        if not isinstance(data, dict):
            raise WorkspaceError(400, "the body must be a JSON object")
        return data

    def handler(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except WorkspaceError as exc:
                response = _error(exc.status, exc.message)
                if exc.retry_after_s is not None:
                    response.headers["retry-after"] = str(round(exc.retry_after_s))
                return response
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
                return _error(422, problems)

        return wrapped

    @handler
    async def login(request: Request) -> Response:
        if not same_origin(request):
            raise WorkspaceError(403, "requests from another site are refused")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise WorkspaceError(415, "send JSON (content-type: application/json)")
        credentials = LoginRequest.model_validate(await body(request))
        client = request.client.host if request.client else "unknown"
        agent, token = await workspace.login(credentials.agent_id, credentials.password, client)
        response = JSONResponse({"token": token, "agent": workspace.me(agent, workspace.tokens.verify(token))})
        response.set_cookie(COOKIE, token, max_age=int(workspace.tokens.ttl_s), httponly=True, samesite="strict",
                            secure=workspace.secure_cookie, path="/workspace")  # fmt: skip
        return response

    async def logout(request: Request) -> Response:
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(COOKIE, path="/workspace")
        return response

    @handler
    async def me(request: Request) -> Response:
        agent, claims = await authorized(request)
        return JSONResponse(workspace.me(agent, claims))

    @handler
    async def queue(request: Request) -> Response:
        agent, _ = await authorized(request)
        return JSONResponse({"entries": [workspace.summary(e) for e in workspace.visible(agent)]})

    @handler
    async def directory(request: Request) -> Response:
        await authorized(request)
        return JSONResponse(workspace.directory())

    @handler
    async def entry(request: Request) -> Response:
        agent, _ = await authorized(request)
        action = OpenAction(type="open", escalation_id=request.path_params["escalation_id"])
        return JSONResponse(await workspace.perform(agent, action))

    @handler
    async def act(request: Request) -> Response:
        agent, _ = await authorized(request)
        verb = request.path_params["verb"]
        if verb not in VERBS:
            raise WorkspaceError(404, f"no action {verb!r}; actions: {', '.join(sorted(VERBS))}")
        data = {
            **await body(request),
            "type": verb.replace("-", "_"),
            "escalation_id": request.path_params["escalation_id"],
        }
        return JSONResponse(await workspace.perform(agent, ACTION.validate_python(data)))

    async def supervisor(request: Request) -> AgentSpec:
        agent, _ = await authorized(request)
        if agent.role != "supervisor":
            raise WorkspaceError(403, "searching and previewing the knowledge base is for supervisors")
        return agent

    def knowledge() -> WorkspaceKnowledge:
        if workspace.knowledge is None:
            raise WorkspaceError(503, "no knowledge base is configured: the workspace has no DATABASE_URL")
        return workspace.knowledge

    @handler
    async def knowledge_search(request: Request) -> Response:
        await supervisor(request)
        return JSONResponse(await knowledge().search(request.query_params.get("q", "")))

    @handler
    async def knowledge_article(request: Request) -> Response:
        await supervisor(request)
        return JSONResponse(await knowledge().article(request.path_params["doc_id"]))

    @handler
    async def knowledge_article_conversations(request: Request) -> Response:
        await supervisor(request)
        params = request.query_params
        found = await knowledge().conversations(
            request.path_params["doc_id"], params.get("limit"), params.get("offset")
        )
        return JSONResponse(found)

    @handler
    async def presence(request: Request) -> Response:
        agent, _ = await authorized(request)
        data = {**await body(request), "type": "presence"}
        return JSONResponse(await workspace.perform(agent, ACTION.validate_python(data)))

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/", lambda _: RedirectResponse("/workspace")),
        Route("/healthz", health),
        Route("/workspace", page),
        Route("/workspace/workspace.js", script),
        Route("/workspace/api/login", login, methods=["POST"]),
        Route("/workspace/api/logout", logout, methods=["POST"]),
        Route("/workspace/api/me", me),
        Route("/workspace/api/queue", queue),
        Route("/workspace/api/directory", directory),
        Route("/workspace/api/presence", presence, methods=["POST"]),
        Route("/workspace/api/entries/{escalation_id}", entry),
        Route("/workspace/api/entries/{escalation_id}/{verb}", act, methods=["POST"]),
        Route("/workspace/api/knowledge/search", knowledge_search),
        # doc ids are paths or URLs ("help/returns.md"): the rest of the path is the id. The conversations
        # route comes first: "{doc_id:path}" alone would read ".../conversations" as part of the id.
        Route("/workspace/api/knowledge/articles/{doc_id:path}/conversations", knowledge_article_conversations),
        Route("/workspace/api/knowledge/articles/{doc_id:path}", knowledge_article),
        WebSocketRoute("/workspace/ws", LiveSocket(workspace).endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
