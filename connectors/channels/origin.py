"""The ingress's Origin policy: which web pages a browser may call it from, and in what form.

A browser sends any page's form or `fetch` to any site, and opens WebSockets to any site, with
an `Origin` header saying where the page came from. So:

- A request or WebSocket handshake whose `Origin` is neither the ingress's own (the `Host` it
  was called by, or `public_base_url`) nor listed in `allowed_origins` is refused: 403, or the
  handshake closed with 4403, before any handler runs, so nothing is published. Requests without
  an `Origin` are not from a browser's cross-site page (curl, a backend) and pass to the API-key
  check as before.
- State-changing calls to the JSON API (`/v1/...`) must say `Content-Type: application/json`
  (415 otherwise). A cross-site form can only send the three "simple" content types without a
  preflight, so this closes the forged-form path even for a browser that sends no `Origin`.
- A listed origin gets CORS headers and preflight answers (Starlette's CORSMiddleware).
- Webhooks (`/webhooks/...`) are server-to-server calls, checked by their providers' signatures
  and sent in their providers' content types: exempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["OriginPolicy", "install_origin_policy"]

EXEMPT_PREFIXES = ("/webhooks/",)
JSON_PREFIXES = ("/v1/",)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSED_WEBSOCKET = 4403


def _host_of(origin: str) -> str | None:
    """`host[:port]` of an origin, lower-cased; None for `null` or anything that is not scheme://host."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return None
    return parts.netloc


class OriginPolicy:
    """ASGI middleware: refuses foreign origins and non-JSON writes to the API; see the module docstring."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str] = (), public_base_url: str | None = None) -> None:
        self.app = app
        self.allowed = {origin.rstrip("/").lower() for origin in allowed_origins}
        if public_base_url:
            self.allowed.add(public_base_url.rstrip("/").lower())

    def allows(self, origin: str, headers: Headers) -> bool:
        if origin.rstrip("/").lower() in self.allowed:
            return True
        host = _host_of(origin)
        return host is not None and host == headers.get("host", "").lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and not self.allows(origin, headers):
            if scope["type"] == "websocket":
                # closing before accepting: the server answers the handshake with 403
                await send({"type": "websocket.close", "code": REFUSED_WEBSOCKET, "reason": "origin not allowed"})
                return
            message = f"requests from a page at {origin} are refused; its origin is not in SUPPORTFLOW_ALLOWED_ORIGINS"
            await JSONResponse({"error": message, "details": []}, status_code=403)(scope, receive, send)
            return
        if (
            scope["type"] == "http"
            and scope["method"] in STATE_CHANGING
            and scope["path"].startswith(JSON_PREFIXES)
            and headers.get("content-type", "").split(";")[0].strip().lower() != "application/json"
        ):
            message = "send JSON: Content-Type: application/json"
            await JSONResponse({"error": message, "details": []}, status_code=415)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install_origin_policy(app: Starlette, allowed_origins: Sequence[str], public_base_url: str | None = None) -> None:
    """Put the Origin policy in front of `app`, with CORS headers and preflight answers for the allowed origins."""
    # the last added is the outermost: a foreign origin is refused before CORS or any route sees it
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(allowed_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["authorization", "content-type", "x-api-key", "x-session-token"],
        max_age=600,
    )
    app.add_middleware(OriginPolicy, allowed_origins=allowed_origins, public_base_url=public_base_url)
