"""Microsoft Teams over the Bot Framework REST protocol, through real sockets end to end.

Microsoft's cloud cannot be reached from here, so tests/support/http_recorder.py (a real uvicorn server on
127.0.0.1) stands in for it, and it is the only stand-in: it serves the Bot Framework's OpenID
metadata and a JWKS made from an RSA key generated for these tests, the OAuth2 token endpoint and
the Bot Connector's conversations API. The gateway is the real ingress served by uvicorn on a
local port, posted to over HTTP, publishing to a real tansu broker that is read back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from connectors.channels import teams
from connectors.channels.base import PermanentSendError
from connectors.channels.teams import TeamsAddress, TeamsSender, service_url_allowed
from pipelines.devstack.embedded import EmbeddedBroker, free_port
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.topology import load_topology
from pipelines.services.ingress import build_ingress
from schemas import OutboundMessage
from tests.support.hostile import HOSTILE
from tests.support.http_recorder import Recorder, Reply, serve
from tests.support.stream import DEFAULT_TOPOLOGY, read_topics, settings_for

APP_ID = "8b7c1d2e-0000-4a4a-9f9f-123456789abc"
SERVICE_URL = "https://smba.trafficmanager.net/amer/"
CONVERSATION = "a:1Xb2c3d4e5f6CONVERSATION"
METADATA = "/v1/.well-known/openidconfiguration"
KEYS = "/v1/.well-known/keys"
TOKEN = "/botframework.com/oauth2/v2.0/token"

RSA_KEYS = {
    name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("bot", "other", "webchat")
}


def jwk(name: str, kid: str, endorsements: list[str]) -> dict[str, Any]:
    key = RSAAlgorithm.to_jwk(RSA_KEYS[name].public_key(), as_dict=True)
    return {**key, "kid": kid, "use": "sig", "endorsements": endorsements}


# the key set Microsoft would publish: ours endorsed for Teams, another only for Web Chat
JWKS = {"keys": [jwk("bot", "bot-key-1", ["msteams", "skype"]), jwk("webchat", "webchat-key", ["webchat"])]}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "https://api.botframework.com",
        "aud": APP_ID,
        "nbf": now - 60,
        "exp": now + 3600,
        "serviceurl": SERVICE_URL,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: str = "bot", kid: str = "bot-key-1") -> str:
    return jwt.encode(payload, RSA_KEYS[key], algorithm="RS256", headers={"kid": kid})


ACTIVITY: dict[str, Any] = {
    "type": "message",
    "id": "1700000000123",
    "timestamp": "2026-11-24T10:00:00.000Z",
    "serviceUrl": SERVICE_URL,
    "channelId": "msteams",
    "from": {"id": "29:1UserIdOfErin", "name": "Erin", "aadObjectId": "6c0f5b1e-aaaa-bbbb-cccc-0123456789ab"},
    "conversation": {"conversationType": "personal", "tenantId": "tenant-1", "id": CONVERSATION},
    "recipient": {"id": f"28:{APP_ID}", "name": "Support"},
    "text": "<at>Support</at> where is my refund?",
    "textFormat": "plain",
    "entities": [
        {"type": "mention", "mentioned": {"id": f"28:{APP_ID}", "name": "Support"}, "text": "<at>Support</at>"},
        {"type": "clientInfo", "locale": "en-US"},
    ],
    "channelData": {"tenant": {"id": "tenant-1"}},
}


@pytest.fixture
def microsoft() -> Iterator[Recorder]:
    """The stand-in for Microsoft: OpenID metadata, JWKS, token endpoint, Bot Connector."""
    with serve() as recorder:
        recorder.reply(
            METADATA,
            then=Reply(
                200,
                {
                    "issuer": "https://api.botframework.com",
                    "jwks_uri": f"{recorder.url}{KEYS}",
                    "id_token_signing_alg_values_supported": ["RS256"],
                },
            ),
        )
        recorder.reply(KEYS, then=Reply(200, JWKS))
        yield recorder


@contextmanager
def serve_app(app: Starlette) -> Iterator[str]:
    """The app on uvicorn on a free local port (its lifespan runs: the producer starts), then stopped."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def gateway(broker: EmbeddedBroker) -> Iterator[Callable[..., httpx.Client]]:
    """Starts the real ingress with the given settings and returns an HTTP client for it."""
    topology = load_topology(DEFAULT_TOPOLOGY)
    ensure_topics(settings_for(broker.bootstrap), topology)
    opened: list[Any] = []

    def make(**settings: Any) -> httpx.Client:
        served = serve_app(build_ingress(settings_for(broker.bootstrap, **settings), topology))
        url = served.__enter__()
        client = httpx.Client(base_url=url, timeout=30)
        opened.append((served, client))
        return client

    yield make
    for served, client in opened:
        client.close()
        served.__exit__(None, None, None)


def configured(gateway: Callable[..., httpx.Client], microsoft: Recorder) -> httpx.Client:
    return gateway(teams_app_id=APP_ID, teams_openid_metadata_url=f"{microsoft.url}{METADATA}")


def post(client: httpx.Client, activity: dict[str, Any] | bytes, authorization: str | None) -> httpx.Response:
    body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    return client.post(teams.PATH, content=body, headers=headers)


def ingress_records(broker: EmbeddedBroker, expected: int) -> list[dict[str, Any]]:
    records = read_topics(broker.bootstrap, ["sf.ingress"], until=lambda r: len(r) >= expected, timeout_s=20)
    return [json.loads(r.value) for r in records if r.value is not None]


def rejections(reason: str) -> float:
    value = REGISTRY.get_sample_value("supportflow_webhook_rejections_total", {"provider": "teams", "reason": reason})
    return value or 0.0


# --- inbound --------------------------------------------------------------------------------------------


def test_a_bot_connector_message_with_a_valid_token_is_published_and_a_resend_is_the_same_message(
    gateway, microsoft, broker
):
    client = configured(gateway, microsoft)
    bearer = f"Bearer {sign(claims())}"
    first = post(client, ACTIVITY, bearer)
    assert first.status_code == 200, first.text
    assert post(client, ACTIVITY, bearer).status_code == 200, "the connector's resend"
    # acknowledged, not published: other activity types, and other Bot Framework channels
    update = {**ACTIVITY, "type": "conversationUpdate", "id": "f:update-1", "membersAdded": [{"id": "29:x"}]}
    typing = {**ACTIVITY, "type": "typing", "id": "typing-1"}
    assert post(client, update, bearer).status_code == 200 and post(client, typing, bearer).status_code == 200
    webchat = {**ACTIVITY, "channelId": "skype", "id": "skype-1"}
    assert post(client, webchat, bearer).status_code == 200

    records = ingress_records(broker, 2)
    assert len(records) == 2
    first_record, resend = records
    assert first_record["message_id"] == resend["message_id"]
    assert first_record["message_id"].startswith("teams-") and len(first_record["message_id"]) == 6 + 32
    assert first_record["channel"] == "teams"
    assert first_record["sender"] == f"{SERVICE_URL}|{CONVERSATION}"
    assert first_record["text"] == "where is my refund?", "the bot's own @mention is not the customer's words"
    assert first_record["provider_message_id"] == "1700000000123"
    payload = first_record["payload"]
    assert payload["reply_to"] == f"{SERVICE_URL}|{CONVERSATION}|1700000000123"
    assert first_record["reply_to"] == payload["reply_to"], "the answer replies to the activity"
    assert TeamsAddress.parse(payload["reply_to"]) == TeamsAddress(SERVICE_URL, CONVERSATION, "1700000000123")
    assert (payload["tenant_id"], payload["from_id"]) == ("tenant-1", "29:1UserIdOfErin")
    assert payload["from_aad_object_id"] == ACTIVITY["from"]["aadObjectId"]
    # the metadata and the key set were fetched once for all those requests
    assert (len(microsoft.to(METADATA)), len(microsoft.to(KEYS))) == (1, 1)


def test_another_conversation_with_the_same_activity_id_is_another_message(gateway, microsoft, broker):
    client = configured(gateway, microsoft)
    bearer = f"Bearer {sign(claims())}"
    other = {**ACTIVITY, "conversation": {**ACTIVITY["conversation"], "id": "a:1AnotherConversation"}}
    assert post(client, ACTIVITY, bearer).status_code == 200 and post(client, other, bearer).status_code == 200
    records = ingress_records(broker, 2)
    assert len({r["message_id"] for r in records}) == 2


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def _bad_tokens() -> list[tuple[str, str | None, int, str, str]]:
    """(case, Authorization header, status, reason, words in the error)."""
    now = int(time.time())
    public_pem = (
        RSA_KEYS["bot"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    # HS256 keyed with the public key, the classic algorithm confusion (PyJWT will not make it: by hand)
    confused = hs256_token(claims(), public_pem.encode(), kid="bot-key-1")
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "bot-key-1"})
    return [
        ("no header", None, 401, "missing_signature", "Authorization"),
        ("not bearer", "Basic Ym90OnBhc3N3b3Jk", 401, "missing_signature", "Authorization"),
        ("not a jwt", "Bearer not-a-jwt", 403, "bad_token", "not a JWT"),
        ("expired", f"Bearer {sign(claims(exp=now - 301 - 60, nbf=now - 3600))}", 403, "bad_token", "expired"),
        ("not yet valid", f"Bearer {sign(claims(nbf=now + 600))}", 403, "bad_token", "not valid yet"),
        ("no exp", f"Bearer {sign(claims(exp=None))}", 403, "bad_token", "does not verify"),
        ("wrong audience", f"Bearer {sign(claims(aud='another-bot'))}", 403, "bad_token", "not for this bot"),
        ("wrong issuer", f"Bearer {sign(claims(iss='https://evil.example'))}", 403, "bad_token", "issuer"),
        ("unknown key", f"Bearer {sign(claims(), key='other', kid='unknown')}", 403, "bad_token", "signing key"),
        ("wrong key, known kid", f"Bearer {sign(claims(), key='other')}", 403, "bad_token", "does not verify"),
        ("alg none", f"Bearer {unsigned}", 403, "bad_token", "RS256"),
        ("HS256 with the public key", f"Bearer {confused}", 403, "bad_token", "RS256"),
        (
            "serviceurl of another connector",
            f"Bearer {sign(claims(serviceurl='https://evil.example/'))}",
            403,
            "bad_token",
            "serviceurl",
        ),
        ("no serviceurl claim", f"Bearer {sign(claims(serviceurl=None))}", 403, "bad_token", "serviceurl"),
        (
            "key not endorsed for msteams",
            f"Bearer {sign(claims(), key='webchat', kid='webchat-key')}",
            403,
            "bad_token",
            "endorsed",
        ),
    ]


def test_every_bad_token_is_refused_and_nothing_is_published(gateway, microsoft, broker):
    client = configured(gateway, microsoft)
    for case, authorization, status, reason, words in _bad_tokens():
        before = rejections(reason)
        response = post(client, ACTIVITY, authorization)
        assert response.status_code == status, (case, response.text)
        assert response.json()["reason"] == reason and words in response.json()["error"], (case, response.json())
        assert rejections(reason) == before + 1, case
    assert ingress_records(broker, 0) == []
    # an unknown kid did not refetch the keys (the refresh cooldown): forged tokens cannot hammer Microsoft
    assert len(microsoft.to(KEYS)) == 1


def test_a_valid_token_with_an_unusable_body_is_400_and_unconfigured_is_503(gateway, microsoft, broker):
    client = configured(gateway, microsoft)
    bearer = f"Bearer {sign(claims())}"
    missing = {k: v for k, v in ACTIVITY.items() if k != "conversation"}
    response = post(client, missing, bearer)
    assert response.status_code == 400 and "conversation" in response.json()["error"]
    assert post(client, b"{not json", bearer).status_code == 400
    assert post(client, b"[1, 2]", bearer).status_code == 400

    unconfigured = gateway()
    refused = post(unconfigured, ACTIVITY, bearer)
    assert refused.status_code == 503
    assert refused.json()["error"] == "teams webhooks are not configured: set SUPPORTFLOW_TEAMS_APP_ID"
    assert ingress_records(broker, 0) == []


def test_signed_hostile_bodies_get_a_clear_4xx_and_publish_nothing(gateway, microsoft, broker):
    """A valid token over a hostile body: the one strict parser answers, the activity adapter never sees it."""
    client = configured(gateway, microsoft)
    bearer = f"Bearer {sign(claims())}"
    template = json.dumps({**ACTIVITY, "text": "__HOSTILE__"}).encode()
    answers = {}
    for case in HOSTILE:
        response = post(client, case.body(lambda text: template.replace(b'"__HOSTILE__"', text)), bearer)
        answers[case.name] = (response.status_code, case.says in response.json()["error"])
    assert answers == {case.name: (case.status, True) for case in HOSTILE}
    assert post(client, ACTIVITY, bearer).status_code == 200, "the gateway still takes a good activity"
    assert len(ingress_records(broker, 1)) == 1, "only the good activity was published"


def test_keys_that_cannot_be_fetched_are_a_503_not_a_refusal(gateway, microsoft, broker):
    microsoft.reply("/down/openidconfiguration", then=Reply(500, {"error": "down"}))
    client = gateway(teams_app_id=APP_ID, teams_openid_metadata_url=f"{microsoft.url}/down/openidconfiguration")
    before = rejections("bad_token")
    response = post(client, ACTIVITY, f"Bearer {sign(claims())}")
    assert response.status_code == 503 and "retry later" in response.json()["error"]
    assert rejections("bad_token") == before
    assert ingress_records(broker, 0) == []


def test_random_bodies_and_headers_never_get_a_5xx_and_only_signed_messages_are_published(gateway, microsoft, broker):
    """Fuzz (a seeded stdlib generator; hypothesis is not installed here): half the requests carry a
    valid token, so the adapter sees arbitrary shapes too, among them message activities with one
    field altered (some of which are still valid messages, and are published)."""
    client = configured(gateway, microsoft)
    rng = random.Random(20261124)
    alphabet = 'abcXYZ019=&%+:._-/|; {}[]",\\\n\té漢\x00'
    unsigned: list[int] = []
    signed: list[int] = []
    for i in range(40):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(300)))
        shaped = {**ACTIVITY, rng.choice(list(ACTIVITY)): rng.choice([None, 1, [], {}, text])}
        body = rng.choice([text.encode("utf-8"), json.dumps(shaped).encode(), b"null", bytes(rng.randbytes(50))])
        if i % 2 == 0:
            signed.append(post(client, body, f"Bearer {sign(claims())}").status_code)
        else:
            noise = "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(80))).strip()
            unsigned.append(post(client, body, rng.choice([f"Bearer {noise}", noise])).status_code)
    assert set(unsigned) <= {401, 403}, sorted(set(unsigned))
    # 403: a serviceUrl altered away from the claim; 422: a U+0000 in a string (the strict parser)
    assert set(signed) <= {200, 400, 403, 422}, sorted(set(signed))
    published = ingress_records(broker, 0)
    assert len(published) <= signed.count(200)
    assert {(r["channel"], r["sender"]) for r in published} <= {("teams", f"{SERVICE_URL}|{CONVERSATION}")}


# --- outbound -------------------------------------------------------------------------------------------

TOKEN_REPLY = {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "app-token-1"}


def reply(recipient: str, text: str = "Your refund was sent today.", n: int = 1, markdown: bool = True) -> Any:
    return OutboundMessage(
        reply_id=f"r-{n}",
        in_reply_to=f"m-{n}",
        conversation_id="conv-1",
        customer_id="C000001",
        channel="teams",
        recipient=recipient,
        text=text,
        content_format="markdown" if markdown else "text",
    )


def sender(microsoft: Recorder) -> TeamsSender:
    allowed = [*teams.DEFAULT_ALLOWED_SERVICE_URLS, f"{microsoft.url}/teams/*"]
    return TeamsSender(APP_ID, "app-password", token_url=f"{microsoft.url}{TOKEN}", allowed_service_urls=allowed)


def form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode(), strict_parsing=True).items()}


async def test_the_sender_gets_an_app_token_once_then_replies_to_the_activity(microsoft):
    connector = f"{microsoft.url}/teams/"
    thread = "19:abc123@thread.tacv2;messageid=1700000000000"
    activity_path = f"/teams/v3/conversations/{CONVERSATION}/activities/1700000000123"
    thread_path = f"/teams/v3/conversations/{thread}/activities"
    microsoft.reply(TOKEN, Reply(200, TOKEN_REPLY))
    microsoft.reply(activity_path, Reply(200, {"id": "1700000000999"}))
    microsoft.reply(thread_path, Reply(201, {"id": "1700000001000"}))
    teams_sender = sender(microsoft)
    try:
        first = await teams_sender.send(reply(f"{connector}|{CONVERSATION}|1700000000123"))
        second = await teams_sender.send(reply(f"{connector}|{thread}", "Anything else?", n=2, markdown=False))
    finally:
        await teams_sender.aclose()
    assert (first, second) == ("1700000000999", "1700000001000")
    assert [r.path for r in microsoft.requests] == [TOKEN, activity_path, thread_path], "one token for both"

    token_request, to_activity, to_thread = microsoft.requests
    assert token_request.method == "POST"
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form(token_request.body) == {
        "grant_type": "client_credentials",
        "client_id": APP_ID,
        "client_secret": "app-password",
        "scope": "https://api.botframework.com/.default",
    }
    assert to_activity.method == "POST" and to_activity.headers["authorization"] == "Bearer app-token-1"
    assert to_activity.headers["content-type"] == "application/json"
    # the ids travel percent-encoded whole, as Microsoft's SDKs send them
    assert to_activity.raw_path == "/teams/v3/conversations/a%3A1Xb2c3d4e5f6CONVERSATION/activities/1700000000123"
    assert json.loads(to_activity.body) == {
        "type": "message",
        "text": "Your refund was sent today.",
        "textFormat": "markdown",
        "conversation": {"id": CONVERSATION},
        "replyToId": "1700000000123",
    }
    assert (
        to_thread.raw_path
        == "/teams/v3/conversations/19%3Aabc123%40thread.tacv2%3Bmessageid%3D1700000000000/activities"
    )
    assert json.loads(to_thread.body) == {
        "type": "message",
        "text": "Anything else?",
        "textFormat": "plain",
        "conversation": {"id": thread},
    }
    assert to_thread.headers["authorization"] == "Bearer app-token-1"


async def test_a_400_is_permanent_and_a_503_is_transient_then_retried(microsoft):
    path = f"/teams/v3/conversations/{CONVERSATION}/activities/1700000000123"
    recipient = f"{microsoft.url}/teams/|{CONVERSATION}|1700000000123"
    microsoft.reply(TOKEN, then=Reply(200, TOKEN_REPLY))
    microsoft.reply(
        path,
        Reply(400, {"error": {"code": "BadArgument", "message": "Unknown conversation"}}),
        Reply(503, {"error": {"code": "ServiceError", "message": "try later"}}),
        Reply(200, {"id": "1700000000999"}),
    )
    teams_sender = sender(microsoft)
    try:
        with pytest.raises(PermanentSendError, match=r"400.*Unknown conversation"):
            await teams_sender.send(reply(recipient))
        with pytest.raises(httpx.HTTPStatusError) as transient:
            await teams_sender.send(reply(recipient, n=2))
        assert not isinstance(transient.value, PermanentSendError) and transient.value.response.status_code == 503
        assert await teams_sender.send(reply(recipient, n=2)) == "1700000000999", "the retry goes through"
    finally:
        await teams_sender.aclose()
    assert len(microsoft.to(path)) == 3 and len(microsoft.to(TOKEN)) == 1


async def test_a_rejected_token_is_renewed_once_and_an_expiring_one_is_renewed_early(microsoft):
    path = f"/teams/v3/conversations/{CONVERSATION}/activities"
    recipient = f"{microsoft.url}/teams/|{CONVERSATION}"
    microsoft.reply(
        TOKEN,
        Reply(200, {**TOKEN_REPLY, "access_token": "revoked"}),
        Reply(200, {**TOKEN_REPLY, "access_token": "fresh", "expires_in": 1}),
        Reply(200, {**TOKEN_REPLY, "access_token": "renewed"}),
    )
    microsoft.reply(path, Reply(401, {"message": "Authorization has been denied"}), then=Reply(200, {"id": "1"}))
    teams_sender = sender(microsoft)
    try:
        assert await teams_sender.send(reply(recipient)) == "1"
        await asyncio.sleep(0.6)  # a token of 1 s is renewed half-way
        assert await teams_sender.send(reply(recipient, n=2)) == "1"
    finally:
        await teams_sender.aclose()
    assert [r.headers["authorization"] for r in microsoft.to(path)] == [
        "Bearer revoked",
        "Bearer fresh",
        "Bearer renewed",
    ]


async def test_a_refused_app_password_is_permanent_and_posts_nothing(microsoft):
    microsoft.reply(TOKEN, Reply(401, {"error": "invalid_client", "error_description": "AADSTS7000215"}))
    teams_sender = sender(microsoft)
    try:
        with pytest.raises(PermanentSendError, match="invalid_client"):
            await teams_sender.send(reply(f"{microsoft.url}/teams/|{CONVERSATION}|1"))
    finally:
        await teams_sender.aclose()
    assert [r.path for r in microsoft.requests] == [TOKEN]


@pytest.mark.parametrize(
    "service_url",
    [
        "https://evil.example/",
        "https://smba.trafficmanager.net.evil.example/amer/",
        "https://smba.trafficmanager.net@evil.example/amer/",
        "https://user:pw@smba.trafficmanager.net/amer/",
        "https://evilbotframework.com/",
        "https://botframework.com.evil.example/",
        "http://smba.trafficmanager.net/amer/",
        "https://smba.trafficmanager.net:8443/amer/",
        "https://smba.trafficmanager.net/amer/?next=https://evil.example/",
        "https://evil.example/#.botframework.com",
        "https://evil.example\\.botframework.com/",
        "LOCAL/elsewhere/",
        "LOCAL/teams/../elsewhere/",
        "LOCAL/teams/%2e%2e/elsewhere/",
    ],
)
async def test_a_forged_service_url_is_refused_before_any_request(microsoft, service_url):
    """A recipient can come from anywhere (POST /v1/messages takes channel teams too): our token must
    only ever go to Microsoft's connectors, so nothing at all is requested, not even the token."""
    service_url = service_url.replace("LOCAL", microsoft.url)  # the stand-in itself, outside /teams/
    teams_sender = sender(microsoft)
    try:
        with pytest.raises(PermanentSendError, match="not an allowed connector"):
            await teams_sender.send(reply(f"{service_url}|{CONVERSATION}|1700000000123"))
    finally:
        await teams_sender.aclose()
    assert microsoft.requests == []


def test_microsofts_connectors_are_allowed_and_recipients_parse():
    allowed = teams.DEFAULT_ALLOWED_SERVICE_URLS
    for url in (
        "https://smba.trafficmanager.net/amer/",
        "https://smba.trafficmanager.net/emea/",
        "https://webchat.botframework.com/",
        "https://directline.botframework.com",
        "https://SMBA.trafficmanager.net:443/apac/",
    ):
        assert service_url_allowed(url, allowed), url
    assert not service_url_allowed("https://botframework.com/", allowed), "*.domain is a subdomain only"
    assert not service_url_allowed("https://smba.trafficmanager.net", ["https://smba.trafficmanager.net/amer/*"])
    for bad in ("no-separator", "|a:1", f"{SERVICE_URL}|", f"{SERVICE_URL}|a|b|c"):
        with pytest.raises(ValueError):
            TeamsAddress.parse(bad)
    assert str(TeamsAddress(SERVICE_URL, CONVERSATION)) == f"{SERVICE_URL}|{CONVERSATION}"
