"""A real HTTP server for connector tests: records every request, answers as it is told.

uvicorn serves a small Starlette app in a background thread on a free port, so the code under
test goes through real sockets, real HTTP parsing and real timeouts (no mocked transport).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.devstack.embedded import free_port

__all__ = ["Recorded", "Recorder", "Reply", "serve"]


@dataclass(frozen=True)
class Reply:
    """What the server answers: a status, a JSON body (or raw bytes), after an optional delay."""

    status: int = 200
    json: Any = None
    raw: bytes | None = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int


class Recorder:
    """The app's state: the requests seen, and the replies queued per path (then the default)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._queued: dict[str, deque[Reply]] = defaultdict(deque)
        self._default: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self.url = ""

    def reply(self, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Answer the next requests to `path` with `replies` in order, and `then` after them."""
        with self._lock:
            self._queued[path].extend(replies)
            if then is not None:
                self._default[path] = then

    def fail(self, path: str, times: int, status: int = 503, then: Reply | None = None) -> None:
        self.reply(path, *[Reply(status, {"error": "try later"})] * times, then=then or Reply(200, {}))

    def to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def _next(self, path: str) -> Reply:
        with self._lock:
            if self._queued[path]:
                return self._queued[path].popleft()
            return self._default.get(path, Reply(200, {}))

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.scope["path"],
                raw_path=request.scope["raw_path"].decode("latin-1"),
                query=request.scope["query_string"].decode("latin-1"),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                at=time.monotonic(),
                client_port=request.client.port if request.client else 0,
            )
        )
        reply = self._next(request.scope["path"])
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.raw is not None:
            return Response(reply.raw, status_code=reply.status, headers=reply.headers)
        if reply.status == 204:
            return Response(status_code=204, headers=reply.headers)
        return JSONResponse(reply.json if reply.json is not None else {}, reply.status, headers=reply.headers)


@contextmanager
def serve(port: int | None = None) -> Iterator[Recorder]:
    """Start a recorder on 127.0.0.1 and `port` (default: a free one); stop it on exit.

    A fixed port lets a test bring a receiver up where the code under test found nothing listening.
    """
    recorder = Recorder()
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", recorder.handle, methods=methods)])
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"http-recorder-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test HTTP server did not start"
        time.sleep(0.01)
    recorder.url = f"http://127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        server.should_exit = True
        thread.join(timeout=5)
