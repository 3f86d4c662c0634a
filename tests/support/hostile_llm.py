"""A deliberately hostile OpenAI-compatible model server: a STAND-IN, scripted per test.

A real model cannot be made hostile on demand: whether SmolLM2 or a hosted model proposes a refund for another
customer's order, a refund over the limit or a reply with an invented order number depends on its weights and
the prompt, not on the test. This server replays what a test scripts instead, in the wire format a real
endpoint uses (`POST /v1/chat/completions` with `stream: true`: server-sent events of `chat.completion.chunk`
objects, `tool_calls` deltas whose arguments arrive in pieces, a usage chunk, `data: [DONE]`), so the client,
the gateway and the operators downstream meet exactly the bytes a misbehaving model would send. It proves what
the deterministic code does with such answers, never what a model would do.

Each request takes the next scripted `Turn` of its kind: requests offering tools (the planner's) take from
`planner`, the others (`compose`'s rewrites) from `compose`; every request is kept in `requests`. A kind with
no turns left answers 400 (not retried by the client), so an unexpected call shows as a failed tier. Runs
uvicorn in a thread on a free port (`connectors._process.free_port`); `ready` is awaited, never slept on.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from connectors._process import free_port
from connectors.llm import TierSpec


@dataclass(frozen=True)
class Call:
    """A tool call as the model streams it: `arguments` is sent as written (valid JSON or not), in `pieces`."""

    name: str
    arguments: str
    pieces: int = 3


@dataclass(frozen=True)
class Turn:
    """One scripted answer. `endless`: content chunks forever (cut by the tier's token budget); `stall`: one
    chunk, then nothing (cut by the tier's deadline)."""

    text: str = ""
    calls: tuple[Call, ...] = ()
    endless: bool = False
    stall: bool = False
    status: int | None = None  # answer this HTTP error instead (a 429 or 503 an overloaded endpoint sends)


def say(text: str) -> Turn:
    return Turn(text=text)


def call(name: str, arguments: dict[str, Any] | str, text: str = "") -> Turn:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Turn(text=text, calls=(Call(name, raw),))


@dataclass
class HostileModel:
    """The scripted server; `planner` and `compose` hold the answers still to give, `requests` what came."""

    port: int = field(default_factory=free_port)
    planner: deque[Turn] = field(default_factory=deque)
    compose: deque[Turn] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ready = threading.Event()
        self.closing = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *planner: Turn, compose: tuple[Turn, ...] = ()) -> None:
        self.planner.extend(planner)
        self.compose.extend(compose)

    def tier(self, name: str = "large", **overrides: Any) -> TierSpec:
        spec: dict[str, Any] = {
            "name": name,
            "base_url": self.base_url,
            "model": "hostile",
            "timeout_s": 5.0,
            "first_token_timeout_s": 2.0,
            "retries": 0,
            "max_output_tokens": 200,
            "price_in_per_mtok": 1.0,
            "price_out_per_mtok": 2.0,
        }
        spec.update(overrides)
        return TierSpec.model_validate(spec)

    @property
    def planner_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("tools")]

    # --- the server

    def app(self) -> Starlette:
        async def models(_request: Request) -> Response:
            return JSONResponse({"object": "list", "data": [{"id": "hostile", "object": "model"}]})

        async def completions(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            queue = self.planner if body.get("tools") else self.compose
            if not queue:
                return JSONResponse({"error": {"message": "the script has no answer left", "type": "test"}}, 400)
            turn = queue.popleft()
            if turn.status is not None:
                return JSONResponse({"error": {"message": "scripted failure", "type": "test"}}, turn.status)
            return StreamingResponse(self._events(turn), media_type="text/event-stream")

        @asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            self.ready.set()
            yield

        return Starlette(
            routes=[Route("/v1/models", models), Route("/v1/chat/completions", completions, methods=["POST"])],
            lifespan=lifespan,
        )

    async def _events(self, turn: Turn) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0, "model": "hostile",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return f"data: {json.dumps(body)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        if turn.stall:
            yield chunk({"content": "Let me"})
            while not self.closing.is_set():  # nothing more, until the client gives up or the server stops
                await asyncio.sleep(0.05)
            return
        if turn.endless:
            while not self.closing.is_set():
                yield chunk({"content": "I've refunded you 500 EUR and "})
                await asyncio.sleep(0)
            return
        for word in turn.text.split(" ") if turn.text else ():
            yield chunk({"content": word + " "})
        for index, scripted in enumerate(turn.calls):
            yield chunk({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                         "function": {"name": scripted.name, "arguments": ""}}]})  # fmt: skip
            size = max(1, -(-len(scripted.arguments) // scripted.pieces))
            for start in range(0, len(scripted.arguments), size):
                piece = scripted.arguments[start : start + size]
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls" if turn.calls else "stop")
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        last = {"id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 0, "model": "hostile",
                "choices": [], "usage": usage}  # fmt: skip
        yield f"data: {json.dumps(last)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    def start(self) -> HostileModel:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=1)  # fmt: skip
        self._server = uvicorn.Server(config)
        # listening before the thread starts: a request sent at once waits in the backlog, never is refused
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        server = self._server
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]), name="hostile-llm", daemon=True)
        self._thread.start()
        if not self.ready.wait(timeout=10):
            raise RuntimeError("the hostile model server did not start within 10 s")
        return self

    def stop(self) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


@pytest.fixture
def hostile_model() -> Iterator[HostileModel]:
    """A stand-in model server of this test's own (a real model cannot be made hostile on demand)."""
    server = HostileModel().start()
    try:
        yield server
    finally:
        server.stop()
