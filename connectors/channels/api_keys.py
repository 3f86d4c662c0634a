"""API keys and their scopes: what a caller of the REST API may do, decided once per request.

A key is configured either as a bare string (every scope: what any key could do before scopes
existed) or as `{"key": "...", "scopes": [...]}`:

- `messages:write` — post messages on channel `api` (the sender address is the caller's own name
  for its user), and read the answer to a message it posted (`GET /v1/messages/{id}`).
- `customers:act` — act for customers: name a `customer_id`, post on any channel (the address is
  then a claim, so replies by SMS, email, ... still go only to the customer's verified contacts),
  answer a CSAT survey for a conversation.
- `conversations:read` — read any conversation (`/v1/conversations/...`), the outbox, and the
  answers to any message.

With no key configured the REST API is open (the embedded development default): every caller has
every scope.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from starlette.requests import Request

__all__ = ["ALL_SCOPES", "ApiKey", "KeyRing", "Scope"]

Scope = Literal["messages:write", "customers:act", "conversations:read"]
ALL_SCOPES: frozenset[Scope] = frozenset(Scope.__args__)  # type: ignore[attr-defined]


class ApiKey(BaseModel):
    """One key and what it may do; a bare string in the configuration is a key with every scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: SecretStr = Field(min_length=1)
    scopes: frozenset[Scope] = Field(default=ALL_SCOPES, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _bare_string_is_a_full_key(cls, value: Any) -> Any:
        if isinstance(value, str | SecretStr):
            return {"key": value}
        return value


class KeyRing:
    """The configured keys; `scopes` says what a request's key grants (every scope when none is configured)."""

    def __init__(self, keys: Sequence[ApiKey | str] = ()) -> None:
        parsed = [k if isinstance(k, ApiKey) else ApiKey.model_validate(k) for k in keys]
        self._keys = [(k.key.get_secret_value().encode(), k.scopes) for k in parsed]

    @property
    def open(self) -> bool:
        return not self._keys

    @staticmethod
    def presented(request: Request) -> str:
        """The key the request carries (`Authorization: Bearer <key>` or `X-API-Key`), or ""."""
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer "):
            return header.removeprefix("Bearer ").strip()
        return request.headers.get("x-api-key", "")

    def scopes(self, given: str) -> frozenset[Scope] | None:
        """The scopes of key `given` (compared in constant time), or None when it is no key of ours."""
        if self.open:
            return ALL_SCOPES
        found: frozenset[Scope] | None = None
        for key, scopes in self._keys:  # every key is compared, so the time says nothing of which matched
            if hmac.compare_digest(given.encode(), key):
                found = scopes
        return found
