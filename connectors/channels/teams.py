"""Microsoft Teams through the Bot Framework's REST protocol (no SDK): activities in, replies out.

In: the Bot Connector POSTs an Activity to `/webhooks/teams/messages` with `Authorization: Bearer
<JWT>`. The token is checked as Microsoft's "Authentication with the Bot Connector API" asks:
signed RS256 by a key of the JWKS that the OpenID metadata names (cached, PyJWT's `PyJWKClient`),
issuer `https://api.botframework.com`, audience our Microsoft App ID, inside its validity (5 min
skew), its `serviceurl` claim equal to the activity's `serviceUrl`, and, when the key lists
`endorsements`, the key endorsed for the activity's `channelId`. Only then is the body read.

Out: `TeamsSender` gets an app token by OAuth2 client credentials (cached until shortly before it
expires) and posts the reply to the connector at the conversation's serviceUrl. That URL comes
from the recipient, so it is checked against an allow-list first: a forged recipient must not
make us send our token to someone else's server.

Address (`RawInbound.sender`, hence `OutboundMessage.recipient`), `|`-separated because service
URLs and conversation ids both contain colons:
- `SERVICE_URL|CONVERSATION_ID`: post to the conversation (`.../v3/conversations/{id}/activities`);
- `SERVICE_URL|CONVERSATION_ID|ACTIVITY_ID`: reply to that activity (`.../activities/{activity id}`),
  e.g. `https://smba.trafficmanager.net/amer/|a:1Xb2c3d4|1700000000123`.
The ingress publishes the first form as the sender (and the second as `payload["reply_to"]`): the
sender is the identity and partition key of the customer, so it must stay the same from one
message to the next, which an activity id does not. In Teams a post to a conversation lands
where a reply to its last activity would (a personal chat, or the channel thread, whose id ends
in `;messageid=...`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit

import httpx
import jwt
from jwt import PyJWKClient
from jwt.exceptions import PyJWKClientConnectionError, PyJWKClientError, PyJWKSetError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.channels._common import clip, not_configured, refuse
from connectors.channels.base import InputChannel, OutputChannel, PermanentSendError, WebhookContext
from connectors.inbound_body import BodyRefused, parse_json
from schemas import OutboundMessage, RawInbound

__all__ = [
    "BOTFRAMEWORK_ISSUER",
    "DEFAULT_ALLOWED_SERVICE_URLS",
    "OPENID_METADATA_URL",
    "PATH",
    "TEAMS_CHANNEL_ID",
    "TOKEN_SCOPE",
    "TOKEN_URL",
    "BotFrameworkAuth",
    "KeysUnavailable",
    "MessageActivity",
    "TeamsAddress",
    "TeamsInput",
    "TeamsSender",
    "TokenRejected",
    "activity_to_raw",
    "messages_endpoint",
    "service_url_allowed",
]

log = logging.getLogger("connectors.channels.teams")

PATH = "/webhooks/teams/messages"
BOTFRAMEWORK_ISSUER = "https://api.botframework.com"
OPENID_METADATA_URL = "https://login.botframework.com/v1/.well-known/openidconfiguration"
TOKEN_URL = "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token"
TOKEN_SCOPE = "https://api.botframework.com/.default"
TEAMS_CHANNEL_ID = "msteams"
# Microsoft's connector hosts: Teams uses smba.trafficmanager.net, the other channels *.botframework.com
DEFAULT_ALLOWED_SERVICE_URLS = ("https://*.botframework.com", "https://smba.trafficmanager.net/*")
CLOCK_SKEW_S = 300
SEPARATOR = "|"
SENDER_MAX_CHARS = 320  # RawInbound.sender's limit: a longer address cannot be clipped, it would not route


# --- inbound: the Bot Connector's token ---------------------------------------------------------------


class TokenRejected(Exception):
    """The bearer token is not the Bot Connector's for this bot; the message says why (no secrets)."""


class KeysUnavailable(Exception):
    """The OpenID metadata or its JWKS could not be fetched: our problem, not the caller's (503)."""


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict[str, Any]
    endorsements: tuple[str, ...] | None  # None: the key lists none, so it restricts no channel


class _EndorsingJWKClient(PyJWKClient):
    """PyJWKClient that also keeps each key's `endorsements`, a Bot Framework extension of the JWKS
    that PyJWK drops. It is refreshed by every fetch, so it always describes the cached key set."""

    def __init__(self, uri: str, **kwargs: Any) -> None:
        super().__init__(uri, **kwargs)
        self.endorsements: dict[str, tuple[str, ...]] = {}

    def fetch_data(self) -> Any:
        data = super().fetch_data()
        keys = data.get("keys") if isinstance(data, dict) else None
        self.endorsements = {
            key["kid"]: tuple(str(e) for e in key["endorsements"])
            for key in (keys if isinstance(keys, list) else [])
            if isinstance(key, dict) and isinstance(key.get("kid"), str) and isinstance(key.get("endorsements"), list)
        }
        return data


class BotFrameworkAuth:
    """Checks the Bot Connector's JWT. Blocking (the key fetch is urllib, inside PyJWKClient): call it
    in a thread. Keys are cached for `keys_ttl_s`; an unknown `kid` refetches them at most once per
    `refresh_cooldown_s`, so forged tokens cannot make us hammer Microsoft's key endpoint."""

    def __init__(
        self,
        app_id: str,
        openid_metadata_url: str = OPENID_METADATA_URL,
        issuer: str = BOTFRAMEWORK_ISSUER,
        keys_ttl_s: float = 24 * 3600,
        refresh_cooldown_s: float = 300,
        timeout_s: float = 10.0,
    ) -> None:
        self.app_id = app_id
        self.openid_metadata_url = openid_metadata_url
        self.issuer = issuer
        self.keys_ttl_s = keys_ttl_s
        self.refresh_cooldown_s = refresh_cooldown_s
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._keys: _EndorsingJWKClient | None = None
        self._resolved_at = 0.0

    def _key_client(self) -> _EndorsingJWKClient:
        """The JWKS client of the URI the metadata names; the metadata is read again once a key TTL."""
        with self._lock:
            if self._keys is not None and time.monotonic() - self._resolved_at < self.keys_ttl_s:
                return self._keys
            try:
                response = httpx.get(self.openid_metadata_url, timeout=self.timeout_s)
                response.raise_for_status()
                jwks_uri = response.json().get("jwks_uri")
            except (httpx.HTTPError, ValueError, AttributeError) as exc:
                if self._keys is not None:  # keep serving the keys we have; ask again after the cooldown
                    self._resolved_at = time.monotonic() - self.keys_ttl_s + self.refresh_cooldown_s
                    return self._keys
                raise KeysUnavailable(f"OpenID metadata {self.openid_metadata_url}: {exc}") from exc
            if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
                raise KeysUnavailable(f"OpenID metadata {self.openid_metadata_url} names no http(s) jwks_uri")
            if self._keys is None or self._keys.uri != jwks_uri:
                self._keys = _EndorsingJWKClient(
                    jwks_uri,
                    cache_jwk_set=True,
                    lifespan=self.keys_ttl_s,
                    timeout=self.timeout_s,
                    cooldown_duration=self.refresh_cooldown_s,
                )
            self._resolved_at = time.monotonic()
            return self._keys

    def verify(self, token: str) -> VerifiedToken:
        """The token's claims and its key's endorsements; TokenRejected or KeysUnavailable otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected("the bearer token is not a JWT") from exc
        # checked before any key is looked up: `none` and HS256-with-the-public-key never get that far
        if header.get("alg") != "RS256":
            raise TokenRejected(f"the token must be signed RS256, not {str(header.get('alg'))[:20]!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("the token names no signing key (kid)")
        client = self._key_client()
        try:
            key = client.get_signing_key(kid)
        except (PyJWKClientConnectionError, PyJWKSetError) as exc:
            raise KeysUnavailable(f"Bot Framework keys: {exc}") from exc
        except PyJWKClientError as exc:
            raise TokenRejected("the token's signing key is not one of the Bot Framework's") from exc
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self.app_id,
                issuer=self.issuer,
                leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("the token is not for this bot (aud is not our Microsoft App ID)") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected(f"the token's issuer is not {self.issuer}") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"the token does not verify: {type(exc).__name__}") from exc
        return VerifiedToken(claims, client.endorsements.get(kid))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for anything else."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# --- inbound: the activity ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class ChannelAccount(_Model):
    id: str = Field(min_length=1, max_length=500)
    name: str | None = None
    aad_object_id: str | None = None


class ConversationAccount(_Model):
    id: str = Field(min_length=1, max_length=500)
    conversation_type: str | None = None
    tenant_id: str | None = None


class MessageActivity(_Model):
    """The fields of a Bot Framework `message` activity that a turn needs; the rest is ignored."""

    type: Literal["message"]
    id: str = Field(min_length=1, max_length=200)
    channel_id: str = Field(min_length=1)
    service_url: str = Field(min_length=1, max_length=300)
    from_: ChannelAccount = Field(alias="from")
    conversation: ConversationAccount
    recipient: ChannelAccount | None = None
    text: str | None = None
    entities: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True)
class TeamsAddress:
    """Where a reply goes: the connector, the conversation and optionally the activity answered."""

    service_url: str
    conversation_id: str
    activity_id: str | None = None

    def __str__(self) -> str:
        parts = [self.service_url, self.conversation_id, *([self.activity_id] if self.activity_id else [])]
        return SEPARATOR.join(parts)

    @classmethod
    def parse(cls, value: str) -> TeamsAddress:
        parts = value.split(SEPARATOR)
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError("a teams recipient is SERVICE_URL|CONVERSATION_ID[|ACTIVITY_ID]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def activities_url(self) -> str:
        """Ids are percent-encoded whole (as Microsoft's SDKs do), so none can add a path segment."""
        url = f"{self.service_url.rstrip('/')}/v3/conversations/{quote(self.conversation_id, safe='')}/activities"
        return f"{url}/{quote(self.activity_id, safe='')}" if self.activity_id else url


def _without_bot_mentions(text: str, activity: MessageActivity) -> str:
    """In channels and group chats the text starts with `<at>Bot name</at>`: the customer's words do not."""
    bot = activity.recipient.id if activity.recipient else None
    for entity in activity.entities:
        mentioned = entity.get("mentioned")
        if entity.get("type") == "mention" and isinstance(mentioned, dict) and mentioned.get("id") == bot:
            mention = entity.get("text")
            if isinstance(mention, str) and mention:
                text = text.replace(mention, "")
    return text.strip()


def activity_to_raw(data: Any) -> RawInbound | None:
    """A Teams message as a RawInbound; None for other activity types and unusable addresses.

    Raises pydantic's ValidationError for a `message` activity that lacks what a reply needs. The
    message id hashes the conversation and activity ids (Teams activity ids are only unique within
    a conversation), so the connector's resend of an activity is the same message.
    """
    if not isinstance(data, dict) or data.get("type") != "message" or data.get("channelId") != TEAMS_CHANNEL_ID:
        return None
    activity = MessageActivity.model_validate(data)
    ids = (activity.service_url, activity.conversation.id, activity.id)
    if any(SEPARATOR in part for part in ids):
        log.warning("teams: skipped activity %s: '|' in its service URL or ids", clip(activity.id, 40))
        return None
    conversation = TeamsAddress(activity.service_url, activity.conversation.id)
    if len(str(conversation)) > SENDER_MAX_CHARS:
        log.warning("teams: skipped activity %s: its conversation address is too long", clip(activity.id, 40))
        return None
    digest = hashlib.sha256(f"{activity.conversation.id}\n{activity.id}".encode()).hexdigest()[:32]
    return RawInbound(
        message_id=f"teams-{digest}",
        channel="teams",
        sender=str(conversation),
        address_verified=True,  # the conversation of an activity the Bot Connector's token vouches for
        text=_without_bot_mentions(activity.text or "", activity),
        provider_message_id=clip(activity.id),
        reply_to=str(TeamsAddress(*ids)),
        payload={
            "provider": "teams",
            "reply_to": str(TeamsAddress(*ids)),
            "service_url": activity.service_url,
            "conversation_id": activity.conversation.id,
            "conversation_type": activity.conversation.conversation_type,
            "tenant_id": activity.conversation.tenant_id,
            "activity_id": activity.id,
            # the person behind the conversation, for identity across channels later
            "from_id": activity.from_.id,
            "from_aad_object_id": activity.from_.aad_object_id,
        },
    )


class TeamsInput(InputChannel):
    """The Bot Connector's activities, each with a Bot Framework JWT checked before the body is read."""

    name = "teams"

    def __init__(self, app_id: str | None, openid_metadata_url: str = OPENID_METADATA_URL) -> None:
        self.auth = BotFrameworkAuth(app_id, openid_metadata_url) if app_id else None

    def routes(self, context: WebhookContext) -> list[BaseRoute]:
        return [Route(PATH, messages_endpoint(self.auth, context.read_body, context.admit), methods=["POST"])]


def messages_endpoint(
    auth: BotFrameworkAuth | None,
    read_body: Callable[[Request], Awaitable[bytes | Response]],
    admit: Callable[[Sequence[RawInbound]], Awaitable[Response | None]],
) -> Callable[[Request], Awaitable[Response]]:
    """The `POST /webhooks/teams/messages` handler: token first, then the body, then adapt and admit."""

    async def teams_messages(request: Request) -> Response:
        if auth is None:
            return not_configured(request, "teams", "teams_app_id")
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return refuse(request, "teams", "missing_signature", "missing Authorization: Bearer <token> header")
        try:
            verified = await asyncio.to_thread(auth.verify, token)
        except TokenRejected as exc:
            return refuse(request, "teams", "bad_token", str(exc))
        except KeysUnavailable as exc:
            log.error("teams: cannot check tokens: %s", exc)
            return JSONResponse({"error": "the Bot Framework signing keys are unavailable; retry later"}, 503)
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        try:
            data = parse_json(body)
        except BodyRefused as refused:
            return JSONResponse({"error": refused.message}, refused.status)
        if not isinstance(data, dict):
            return JSONResponse({"error": "body is not a Bot Framework activity"}, 400)
        claimed = verified.claims.get("serviceurl", verified.claims.get("serviceUrl"))
        if not isinstance(claimed, str) or claimed != data.get("serviceUrl"):
            return refuse(
                request, "teams", "bad_token", "the token's serviceurl claim is not the activity's serviceUrl"
            )
        channel_id = data.get("channelId")
        if verified.endorsements is not None and channel_id and channel_id not in verified.endorsements:
            return refuse(request, "teams", "bad_token", "the token's signing key is not endorsed for this channelId")
        try:
            raw = activity_to_raw(data)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})[:5]
            return JSONResponse({"error": f"not a usable message activity: {', '.join(fields)}"}, 400)
        # other activity types (conversationUpdate, typing, invoke, ...) are acknowledged, not published
        return await admit([raw] if raw else []) or JSONResponse({"status": "ok"})

    return teams_messages


# --- outbound -----------------------------------------------------------------------------------------


def _pattern_parts(pattern: str) -> tuple[str, str, int | None, str]:
    split = urlsplit(pattern)
    host = split.netloc.rsplit(":", 1)[0] if split.port is not None else split.netloc
    path = split.path[:-1] if split.path.endswith("*") else split.path
    return split.scheme.lower(), host.lower(), split.port, path


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def service_url_allowed(url: str, patterns: Sequence[str]) -> bool:
    """True when `url` is under one of `patterns`: `scheme://host[:port][/path-prefix*]`, where the
    host may be `*.domain` (any subdomain, not the domain itself). Userinfo, queries, fragments,
    dot segments, backslashes and whitespace are refused outright: they are where URL parsers
    disagree, or where the URL sent is not the URL checked."""
    if not url.isascii() or any(c.isspace() or c == "\\" for c in url):
        return False
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError:
        return False
    if split.username is not None or "@" in split.netloc or split.query or split.fragment or not split.hostname:
        return False
    scheme, host = split.scheme.lower(), split.hostname.lower()
    if scheme not in ("http", "https"):
        return False
    # httpx resolves `..` before sending, which would walk out of a path prefix
    if any(segment in (".", "..") for segment in unquote(split.path).split("/")):
        return False
    for pattern in patterns:
        p_scheme, p_host, p_port, p_path = _pattern_parts(pattern)
        if scheme != p_scheme or (port or _default_port(scheme)) != (p_port or _default_port(p_scheme)):
            continue
        if p_host.startswith("*."):
            host_ok = host.endswith(p_host[1:]) and len(host) > len(p_host) - 1
        else:
            host_ok = host == p_host
        if host_ok and (split.path or "/").startswith(p_path or "/"):
            return True
    return False


def _permanent(status: int) -> bool:
    return 400 <= status < 500 and status != 429


class TeamsSender(OutputChannel):
    """Replies through the Bot Connector REST API with an app token from the client-credentials flow.

    The token is fetched once and reused until shortly before `expires_in` runs out; a 401 from the
    connector drops it and tries once more with a fresh one (it may have been revoked early).
    """

    provider = "teams"

    def __init__(
        self,
        app_id: str,
        app_password: str,
        token_url: str = TOKEN_URL,
        allowed_service_urls: Sequence[str] = DEFAULT_ALLOWED_SERVICE_URLS,
        timeout_s: float = 15.0,
    ) -> None:
        self.app_id = app_id
        self._password = app_password
        self.token_url = token_url
        self.allowed_service_urls = tuple(allowed_service_urls)
        self.http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._token: str | None = None
        self._renew_at = 0.0
        self._token_lock = asyncio.Lock()

    async def _access_token(self, renew: bool = False) -> str:
        async with self._token_lock:
            if self._token is not None and not renew and time.monotonic() < self._renew_at:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "client_id": self.app_id,
                "client_secret": self._password,
                "scope": TOKEN_SCOPE,
            }
            response = await self.http.post(self.token_url, data=form)
            if _permanent(response.status_code):  # wrong id or password: no retry will fix it
                raise PermanentSendError(f"teams token {response.status_code}: {response.text[:300]}")
            response.raise_for_status()
            data = response.json()
            token, expires_in = data.get("access_token"), data.get("expires_in", 3600)
            if not isinstance(token, str) or not token:
                raise RuntimeError("teams token: the answer has no access_token")
            lifetime = float(expires_in)
            # renew 5 minutes early (half-way for short-lived tokens) so no send carries a stale one
            self._renew_at = time.monotonic() + lifetime - min(300.0, lifetime / 2)
            self._token = token
            return token

    async def send(self, message: OutboundMessage) -> str:
        try:
            address = TeamsAddress.parse(message.recipient)
        except ValueError as exc:
            raise PermanentSendError(f"teams: {exc}") from exc
        if not service_url_allowed(address.service_url, self.allowed_service_urls):
            raise PermanentSendError(f"teams: service URL {address.service_url[:100]!r} is not an allowed connector")
        activity: dict[str, Any] = {
            "type": "message",
            "text": message.text,
            "textFormat": "markdown" if message.content_format == "markdown" else "plain",
            "conversation": {"id": address.conversation_id},
        }
        if address.activity_id:
            activity["replyToId"] = address.activity_id
        url = address.activities_url()
        response = await self._post(url, activity, await self._access_token())
        if response.status_code == 401:
            response = await self._post(url, activity, await self._access_token(renew=True))
        if _permanent(response.status_code):
            raise PermanentSendError(f"teams {response.status_code}: {response.text[:500]}")
        response.raise_for_status()
        try:
            data = response.json()
        except ValueError:
            return ""
        return str(data.get("id", "")) if isinstance(data, dict) else ""

    async def _post(self, url: str, activity: dict[str, Any], token: str) -> httpx.Response:
        return await self.http.post(url, json=activity, headers={"Authorization": f"Bearer {token}"})

    async def aclose(self) -> None:
        await self.http.aclose()
