"""What every provider webhook shares: refusals that are counted and logged, and deterministic ids."""

from __future__ import annotations

import logging
from typing import Literal

from prometheus_client import Counter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("connectors.channels")

Provider = Literal["twilio", "meta", "slack", "teams"]
Reason = Literal[
    "not_configured", "missing_signature", "bad_signature", "stale_timestamp", "bad_verify_token", "bad_token"
]

REJECTIONS = Counter(
    "supportflow_webhook_rejections_total",
    "Provider webhooks refused before anything was published, by provider and reason.",
    ["provider", "reason"],
)

_STATUS: dict[str, int] = {
    "not_configured": 503,
    "missing_signature": 401,
    "bad_signature": 403,
    "stale_timestamp": 403,
    "bad_verify_token": 403,
    "bad_token": 403,  # a bearer token (Teams) that is not the provider's for us
}


def refuse(request: Request, provider: Provider, reason: Reason, message: str) -> JSONResponse:
    """Answer a refused webhook, and count and log it: a spike means a misconfiguration or an attack.

    The log names the reason and the peer, never a secret or the signature that was sent.
    """
    REJECTIONS.labels(provider, reason).inc()
    peer = request.client.host if request.client else "unknown"
    log.warning("refused a %s webhook from %s on %s: %s", provider, peer, request.url.path, reason)
    return JSONResponse({"error": message, "reason": reason}, status_code=_STATUS[reason])


def not_configured(request: Request, provider: Provider, setting: str) -> JSONResponse:
    return refuse(
        request,
        provider,
        "not_configured",
        f"{provider} webhooks are not configured: set SUPPORTFLOW_{setting.upper()}",
    )


def clip(value: str, limit: int = 200) -> str:
    """Provider ids are short, but a RawInbound field has a limit and a signed body is still outside input."""
    return value[:limit]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def query_int(request: Request, name: str, low: int, high: int) -> int | None:
    value = request.query_params.get(name)
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 9:  # int() of 4,301 digits raises
        return None
    number = int(value)
    return number if low <= number <= high else None


def invalid_fields(exc: ValidationError) -> str:
    """Which fields were wrong, without echoing their values (they are outside input)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
