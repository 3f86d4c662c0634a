"""JWTs (PyJWT, HS256) for the web chat and mobile protocol: our session tokens, and customer tokens.

Two kinds, two keys, two audiences, so neither can stand in for the other:

- **Session token** — issued by the gateway in `welcome`, signed with `SUPPORTFLOW_WEBCHAT_SECRET`.
  Claims: `iss` = "supportflow", `aud` = "supportflow:webchat-session", `sub` = the session id,
  `iat`, `exp` (now + `webchat_session_ttl_s`), and `cid` = the customer id when the session is
  bound to a customer. A client stores it and sends it back in `hello`; each `welcome` renews it.
- **Customer token** — minted by the backend of a site or mobile app that has signed its customer
  in, signed with the secret it shares with the gateway (`SUPPORTFLOW_CUSTOMER_TOKEN_SECRET`).
  Claims: `sub` = the customer id (required), `aud` = "supportflow:customer" (required), `exp`
  (required; keep it short, minutes), `iat` and `iss` optional. HS256 only.

A logout revokes its session (`SessionTokens.revoke`): the session id is kept in the revocation
store (Redis when configured) for as long as any token of it may be valid, and `check` refuses
such a token with `session_token_revoked`, whichever replica it is shown to.

Verification accepts HS256 only (so `alg: none` and algorithm swaps are refused), requires the
claims above, allows `LEEWAY_S` of clock skew, and classifies each refusal (expired, wrong key,
wrong audience, ...) so the client is told which one in a clear error frame.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from connectors.protocols import SessionRevocations

__all__ = [
    "ALGORITHM",
    "CUSTOMER_AUDIENCE",
    "ISSUER",
    "SESSION_AUDIENCE",
    "CustomerTokens",
    "Session",
    "SessionTokens",
    "TokenError",
]

ALGORITHM = "HS256"
ISSUER = "supportflow"
SESSION_AUDIENCE = "supportflow:webchat-session"
CUSTOMER_AUDIENCE = "supportflow:customer"
LEEWAY_S = 30
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key of at least 256 bits

CUSTOMER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,200}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

Kind = Literal["session_token", "customer_token"]


class TokenError(Exception):
    """A token refused, with a stable `code` (`<kind>_<reason>`) and a message for the client."""

    def __init__(self, kind: Kind, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = f"{kind}_{reason}"
        self.message = message


def _refusal(kind: Kind, exc: jwt.PyJWTError) -> TokenError:
    name = "session token" if kind == "session_token" else "customer token"
    if isinstance(exc, jwt.ExpiredSignatureError):
        return TokenError(kind, "expired", f"the {name} has expired")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return TokenError(kind, "bad_algorithm", f"the {name} must be signed with {ALGORITHM}")
    if isinstance(exc, jwt.InvalidSignatureError):
        return TokenError(kind, "bad_signature", f"the {name}'s signature does not verify (wrong key?)")
    if isinstance(exc, jwt.InvalidAudienceError):
        return TokenError(kind, "wrong_audience", f"the {name} is not meant for this service (aud)")
    if isinstance(exc, jwt.InvalidIssuerError):
        return TokenError(kind, "wrong_issuer", f"the {name} was not issued by {ISSUER} (iss)")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return TokenError(kind, "missing_claim", f"the {name} lacks the {exc.claim!r} claim")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return TokenError(kind, "not_yet_valid", f"the {name} is not valid yet (iat/nbf in the future)")
    if isinstance(exc, jwt.DecodeError):
        return TokenError(kind, "malformed", f"the {name} is not a JWT")
    return TokenError(kind, "invalid", f"the {name} is not valid: {exc}")


def _decode(kind: Kind, token: str, key: bytes, audience: str, issuer: str | None, required: list[str]) -> Any:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_S,
            options={"require": required},
        )
    except jwt.PyJWTError as exc:
        raise _refusal(kind, exc) from None
    return claims


@dataclass(frozen=True)
class Session:
    id: str
    customer_id: str | None = None


class SessionTokens:
    """Issues and verifies the gateway's own session JWTs; `check` also refuses the sessions a logout revoked."""

    def __init__(
        self, secret: bytes, ttl_s: float = 7 * 24 * 3600, revocations: SessionRevocations | None = None
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the web chat secret needs at least {MIN_SECRET_BYTES} bytes")
        self.secret = secret
        self.ttl_s = ttl_s
        self.revocations = revocations

    async def check(self, token: str) -> Session:
        """`verify`, then refuse a session that was logged out (`session_token_revoked`)."""
        session = self.verify(token)
        if self.revocations is not None and await self.revocations.revoked(session.id):
            raise TokenError("session_token", "revoked", "the session token was revoked: that session was logged out")
        return session

    async def revoke(self, session: Session) -> None:
        """End `session` everywhere: its tokens are refused until the last one it may have had expires."""
        if self.revocations is None:
            raise RuntimeError("no revocation store: SessionTokens was built without one")
        await self.revocations.revoke(session.id, self.ttl_s + LEEWAY_S)

    def issue(self, session: Session | None = None) -> tuple[Session, str]:
        """A token for `session` (a new anonymous one if None), valid for `ttl_s` from now."""
        session = session or Session(secrets.token_urlsafe(16))
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": SESSION_AUDIENCE,
            "sub": session.id,
            "iat": now,
            "exp": now + int(self.ttl_s),
        }
        if session.customer_id is not None:
            claims["cid"] = session.customer_id
        return session, jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Session:
        claims = _decode(
            "session_token", token, self.secret, SESSION_AUDIENCE, ISSUER, ["exp", "iat", "sub", "aud", "iss"]
        )
        sub, cid = claims.get("sub"), claims.get("cid")
        if not isinstance(sub, str) or not SESSION_ID.match(sub):
            raise TokenError("session_token", "invalid", "the session token names no valid session")
        if cid is not None and (not isinstance(cid, str) or not CUSTOMER_ID.match(cid)):
            raise TokenError("session_token", "invalid", "the session token names no valid customer")
        return Session(sub, cid)


class CustomerTokens:
    """Verifies customer tokens minted by a host site's or app's backend (`mint` does it their way)."""

    def __init__(self, secret: bytes | None) -> None:
        if secret is not None and len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the customer token secret needs at least {MIN_SECRET_BYTES} bytes")
        self.secret = secret

    def verify(self, token: str) -> str:
        """The customer id the token vouches for."""
        if self.secret is None:
            raise TokenError(
                "customer_token",
                "not_configured",
                "customer tokens are not accepted here: the gateway has no SUPPORTFLOW_CUSTOMER_TOKEN_SECRET",
            )
        claims = _decode("customer_token", token, self.secret, CUSTOMER_AUDIENCE, None, ["exp", "sub", "aud"])
        sub = claims.get("sub")
        if not isinstance(sub, str) or not CUSTOMER_ID.match(sub):
            raise TokenError("customer_token", "invalid", "the customer token's sub is not a customer id")
        return sub

    def mint(self, customer_id: str, ttl_s: float = 3600) -> str:
        """What a host backend does (any JWT library will do): used by the demo page and the tests."""
        assert self.secret is not None, "no customer token secret configured"
        now = int(time.time())
        claims = {"sub": customer_id, "aud": CUSTOMER_AUDIENCE, "iat": now, "exp": now + int(ttl_s)}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)
