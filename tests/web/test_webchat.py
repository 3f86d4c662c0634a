"""Web chat: the widget in a real headless Chromium against the running stack, and the WebSocket protocol.

The stack is the one `supportflow run` starts (embedded broker, Triton, PostgreSQL with the demo
shop, workers, the HTTP ingress serving the demo page). Chromium is Debian's, driven by
Playwright (`playwright install` cannot download browsers here).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator
from websockets.sync.client import connect

from connectors.channels.session_tokens import CUSTOMER_AUDIENCE, ISSUER, SESSION_AUDIENCE
from pipelines.devstack.stack import Stack
from pipelines.runtime.settings import Settings
from tests.support.stream import read_topics

TWILIO_TOKEN = "twilio-auth-token-for-the-web-tests"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("webchat-stack")
    with Stack(
        Settings(data_dir=data_dir, http_port=0, workspace_port=0, smtp_listen_port=0, twilio_auth_token=TWILIO_TOKEN)
    ) as running:
        yield running


def open_demo_and_ask(stack: Stack, browser: Any, text: str) -> Any:
    """The demo page in a new tab, one question typed into the widget, its answer on screen."""
    assert stack.ingress is not None
    page = browser.new_page()
    page.goto(stack.ingress.url + "/")
    page.fill("#sf-input", text)
    page.click("#sf-send")
    page.wait_for_selector(".sf-agent", timeout=30_000)
    return page


def test_the_widget_sends_shows_the_reply_and_keeps_the_history_on_reload(stack, browser, tmp_path):
    page = open_demo_and_ask(stack, browser, "how do I get a refund?")
    reply = page.inner_text(".sf-agent")
    assert "refund" in reply.lower()
    [stored] = page.evaluate("Object.values(localStorage)")
    assert jwt.decode(stored, options={"verify_signature": False})["cid"] == "C000001", (
        "the demo page is signed in as Alice through the customer token the gateway minted for it"
    )
    page.screenshot(path=str(tmp_path / "webchat-reply.png"))

    page.reload()
    page.wait_for_selector(".sf-agent", timeout=15_000)
    assert page.inner_text(".sf-customer") == "how do I get a refund?", "the history came back after a reload"
    assert page.inner_text(".sf-agent") == reply
    page.screenshot(path=str(tmp_path / "webchat-history.png"))
    assert (tmp_path / "webchat-history.png").stat().st_size > 1000
    print(f"screenshots: {tmp_path}")


def test_an_sms_reply_shows_in_the_demo_pages_outbox_panel(stack, browser, tmp_path):
    """A signed Twilio SMS webhook in; with no Twilio account configured, the reply lands in the outbox."""
    assert stack.ingress is not None
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(stack.ingress.url + "/")
    page.wait_for_function("document.getElementById('outbox-status').textContent.indexOf('empty') >= 0")

    url = f"{stack.ingress.url}/webhooks/twilio/messages"
    params = {
        "From": "+15550002222",
        "To": "+15559990000",
        "Body": "how do I get a refund?",
        "MessageSid": "SM" + "7" * 32,
    }
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    answered = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
    assert answered.status_code == 200, answered.text

    row = page.wait_for_selector('#outbox tr[data-channel="sms"]', timeout=60_000)
    cells = [cell.inner_text() for cell in row.query_selector_all("td")]
    assert cells[1:4] == ["sms", "+15550002222", "pending"]
    assert "refund" in cells[4].lower()
    page.screenshot(path=str(tmp_path / "demo-outbox.png"), full_page=True)
    assert (tmp_path / "demo-outbox.png").stat().st_size > 1000
    print(f"screenshot: {tmp_path / 'demo-outbox.png'}")


WEBCHAT_KEY = "webchat-secret-for-the-tests-0123456789"
CUSTOMER_KEY = "customer-token-secret-for-the-tests-0123"


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def session_claims(**extra: object) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": SESSION_AUDIENCE, "sub": "s" * 22, "iat": now, "exp": now + 600}
    return {**claims, **extra}


def customer_token(customer_id: str, key: str = CUSTOMER_KEY, **extra: object) -> str:
    """What a host site's backend mints: sub, aud, exp (PyJWT here; any JWT library will do)."""
    claims = {"sub": customer_id, "aud": CUSTOMER_AUDIENCE, "exp": int(time.time()) + 600, **extra}
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.fixture
def chat(stack):
    """The ingress app of the running stack with known keys, over Starlette's TestClient."""
    from pipelines.services.ingress import build_ingress

    settings = stack.settings.model_copy(
        update={"webchat_secret": SecretStr(WEBCHAT_KEY), "customer_token_secret": SecretStr(CUSTOMER_KEY)}
    )
    with TestClient(build_ingress(settings, stack.topology)) as client:
        yield client


def say(socket, frame: dict) -> dict:
    socket.send_text(json.dumps(frame))
    return socket.receive_json()


def test_the_protocol_refuses_bad_frames(chat):
    with chat.websocket_connect("/v1/chat") as socket:
        socket.send_text("not json")
        assert socket.receive_json()["code"] == "invalid_frame"
        assert say(socket, {"type": "message", "text": "hi"}) == {
            "type": "error",
            "code": "hello_first",
            "error": "say hello first",
        }
        assert say(socket, {"type": "hello"})["type"] == "welcome"
        refused = say(socket, {"type": "message", "text": "x" * 5000})
        assert refused["code"] == "invalid_frame" and "at most 4000 characters" in refused["error"]


# Minted when the test runs, not at collection: a suite longer than a token's 10 minutes would
# otherwise see every one of them expire first.
REFUSED_SESSION_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: jwt.encode(session_claims(iat=1, exp=2), WEBCHAT_KEY, algorithm="HS256"),
    "bad_signature": lambda: jwt.encode(session_claims(), "another-key-of-at-least-32-bytes-long", algorithm="HS256"),
    "wrong_audience": lambda: jwt.encode(session_claims(aud=CUSTOMER_AUDIENCE), WEBCHAT_KEY, algorithm="HS256"),
    "bad_algorithm": lambda: b64({"alg": "none", "typ": "JWT"}) + "." + b64(session_claims()) + ".",
    "malformed": lambda: "someone-else.forged-mac",  # the old <session>.<hmac> shape, or any garbage
}
REFUSED_CUSTOMER_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: customer_token("C000002", exp=int(time.time()) - 3600),
    "bad_signature": lambda: customer_token("C000002", key=WEBCHAT_KEY),  # signed with the wrong key
    "wrong_audience": lambda: customer_token("C000002", aud="someone-else"),
    "bad_algorithm": lambda: (
        b64({"alg": "none"}) + "." + b64({"sub": "C000002", "aud": CUSTOMER_AUDIENCE, "exp": 2**40}) + "."
    ),
    "malformed": lambda: "not-a-jwt",
    "missing_claim": lambda: jwt.encode({"sub": "C000002", "aud": CUSTOMER_AUDIENCE}, CUSTOMER_KEY, algorithm="HS256"),
}


@pytest.mark.parametrize(
    ("field", "reason", "mint"),
    [("token", r, t) for r, t in REFUSED_SESSION_TOKENS.items()]
    + [("customer_token", r, t) for r, t in REFUSED_CUSTOMER_TOKENS.items()],
    ids=[f"session-{r}" for r in REFUSED_SESSION_TOKENS] + [f"customer-{r}" for r in REFUSED_CUSTOMER_TOKENS],
)
def test_each_refused_token_gets_its_own_error_frame_and_the_socket_stays_usable(chat, field, reason, mint):
    kind = "session_token" if field == "token" else "customer_token"
    with chat.websocket_connect("/v1/chat") as socket:
        refused = say(socket, {"type": "hello", field: mint()})
        assert refused["type"] == "error" and refused["code"] == f"{kind}_{reason}", refused
        assert refused["error"].startswith(f"the {kind.replace('_', ' ')}")
        assert say(socket, {"type": "message", "text": "hi"})["code"] == "hello_first", "no session was opened"
        welcome = say(socket, {"type": "hello"})
        assert welcome["type"] == "welcome" and welcome["customer_id"] is None and welcome["history"] == []


def test_a_session_token_is_no_customer_token_and_customer_id_needs_a_token(chat):
    with chat.websocket_connect("/v1/chat") as socket:
        welcome = say(socket, {"type": "hello"})
        as_customer = say(socket, {"type": "hello", "customer_token": welcome["token"]})
        assert as_customer["code"] in ("customer_token_bad_signature", "customer_token_wrong_audience")
        claimed = say(socket, {"type": "hello", "customer_id": "C000001"})
        assert claimed["code"] == "customer_id_unverified"
        other = say(socket, {"type": "hello", "customer_token": customer_token("C000002"), "customer_id": "C000001"})
        assert other["code"] == "customer_id_mismatch"
        same = say(socket, {"type": "hello", "customer_token": customer_token("C000002"), "customer_id": "C000002"})
        assert same["type"] == "welcome" and same["customer_id"] == "C000002"


def ask(socket, text: str, client_id: str) -> tuple[str, dict]:
    ack = say(socket, {"type": "message", "text": text, "client_message_id": client_id})
    assert ack["type"] == "ack", ack
    while True:
        frame = socket.receive_json()
        if frame["type"] in ("reply", "escalation"):
            return ack["message_id"], frame


def test_a_customer_token_binds_the_session_and_history_is_the_sessions_own(chat, stack):
    with chat.websocket_connect("/v1/chat") as socket:
        bob = say(socket, {"type": "hello", "customer_token": customer_token("C000002")})
        assert bob["type"] == "welcome" and bob["customer_id"] == "C000002"
        message_id, answer = ask(socket, "how do I get a refund?", "bob-1")
        assert answer["in_reply_to"] == message_id

    records = read_topics(stack.bootstrap, ["sf.ingress"], until=lambda rs: any(message_id in str(r.value) for r in rs))
    [raw] = [json.loads(r.value) for r in records if json.loads(r.value)["message_id"] == message_id]
    assert raw["customer_id"] == "C000002" and raw["sender"] == f"web-{bob['session']}"

    claims = jwt.decode(bob["token"], WEBCHAT_KEY, algorithms=["HS256"], audience=SESSION_AUDIENCE)
    assert (claims["iss"], claims["sub"], claims["cid"]) == (ISSUER, bob["session"], "C000002")
    assert claims["exp"] - claims["iat"] == stack.settings.webchat_session_ttl_s

    with chat.websocket_connect("/v1/chat") as socket:
        again = say(socket, {"type": "hello", "token": bob["token"]})  # a reload: the session, still Bob's
        assert (again["session"], again["customer_id"]) == (bob["session"], "C000002")
        assert [i["id"] for i in again["history"]] == [message_id, answer["id"]]

        new_bob = say(socket, {"type": "hello", "customer_token": customer_token("C000002")})
        assert new_bob["session"] != bob["session"] and new_bob["history"] == [], "another session of Bob's"
        guest = say(socket, {"type": "hello"})
        assert guest["customer_id"] is None and guest["history"] == []
        carol = say(socket, {"type": "hello", "token": bob["token"], "customer_token": customer_token("C000003")})
        assert carol["customer_id"] == "C000003" and carol["session"] != bob["session"], "Bob's session is not Carol's"
        assert carol["history"] == []
        guest_with_bobs_token = say(socket, {"type": "hello", "token": bob["token"], "customer_id": "C000003"})
        assert guest_with_bobs_token["code"] == "customer_id_mismatch"


def test_after_sign_out_a_reload_restores_neither_the_customer_nor_the_history(stack, browser, tmp_path):
    """A shared device: Alice chats, signs out; the next person reloads and gets a guest chat, and
    Alice's old session token, if someone kept it, is refused by the server."""
    page = open_demo_and_ask(stack, browser, "how do I get a refund?")
    [alices] = page.evaluate("Object.values(localStorage)")
    assert jwt.decode(alices, options={"verify_signature": False})["cid"] == "C000001"

    page.click("#sign-out")
    page.wait_for_selector("#sign-in:not([hidden])", timeout=10_000)
    assert page.query_selector_all(".sf-msg") == [], "the conversation left the screen"
    assert alices not in page.evaluate("Object.values(localStorage)")

    page.reload()
    page.wait_for_selector("#sf-chat[data-session]", timeout=15_000)
    assert page.get_attribute("#sf-chat", "data-session") == "guest"
    assert page.query_selector_all(".sf-msg") == [], "no history came back"
    [stored] = page.evaluate("Object.values(localStorage)")
    assert "cid" not in jwt.decode(stored, options={"verify_signature": False}), "no customer on this device"
    page.screenshot(path=str(tmp_path / "webchat-after-sign-out.png"))

    with connect(stack.ingress.url.replace("http://", "ws://") + "/v1/chat", open_timeout=10) as socket:
        socket.send(json.dumps({"type": "hello", "token": alices}))
        refused = json.loads(socket.recv(timeout=10))
    assert refused["code"] == "session_token_revoked", refused


def test_logout_revokes_the_session_and_needs_one(chat):
    with chat.websocket_connect("/v1/chat") as socket:
        assert say(socket, {"type": "logout"})["code"] == "hello_first"
        bob = say(socket, {"type": "hello", "customer_token": customer_token("C000002")})
        assert say(socket, {"type": "logout"}) == {"type": "logged_out"}
        assert say(socket, {"type": "message", "text": "hi"})["code"] == "hello_first", "the socket has no session"
        assert say(socket, {"type": "hello", "token": bob["token"]})["code"] == "session_token_revoked"
        fresh = say(socket, {"type": "hello"})
        assert fresh["type"] == "welcome" and fresh["customer_id"] is None and fresh["history"] == []
