"""Each channel sender against a real local HTTP server standing in for the provider's API.

tests/support/http_recorder.py is the only stand-in: a real uvicorn server on 127.0.0.1 that records
every request and answers as told, so the requests asserted here are exactly what went over
the socket (twilio-python's own client for Twilio, httpx for Slack and Meta).
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest
from twilio.base.exceptions import TwilioRestException

from connectors.channels.base import PermanentSendError
from connectors.channels.meta import MetaWhatsAppSender
from connectors.channels.slack import SlackSender, parse_slack_recipient
from connectors.channels.twilio import TwilioSender
from schemas import OutboundMessage
from tests.support.http_recorder import Recorder, Reply, serve

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "twilio-secret"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"


@pytest.fixture
def provider() -> Iterator[Recorder]:
    with serve() as recorder:
        yield recorder


def reply(channel: str, recipient: str, text: str, parts: list[str] | None = None, n: int = 1) -> OutboundMessage:
    return OutboundMessage(
        reply_id=f"r-{n}",
        in_reply_to=f"m-{n}",
        conversation_id="conv-1",
        customer_id="C000001",
        channel=channel,  # type: ignore[arg-type]
        recipient=recipient,
        text=text,
        parts=parts or [],
    )


def twilio(provider: Recorder, interval: float = 0.0) -> TwilioSender:
    return TwilioSender(
        SID,
        TOKEN,
        from_number="+15550000001",
        whatsapp_from="+15550000002",
        base_url=provider.url,
        min_interval_s=interval,
    )


def created(sid: str) -> Reply:
    return Reply(201, {"sid": sid, "status": "queued", "account_sid": SID})


def form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode(), strict_parsing=True).items()}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_twilio_sends_a_long_sms_as_its_parts_in_order_paced_per_recipient(provider):
    provider.reply(MESSAGES, created("SM1"), created("SM2"), created("SM3"))
    sender = twilio(provider, interval=0.3)
    parts = ["Your order 1000001 shipped", "on Monday and arrives", "on Thursday."]
    try:
        sid = await sender.send(reply("sms", "+15551230000", " ".join(parts), parts))
    finally:
        await sender.aclose()
    assert sid == "SM1,SM2,SM3"
    sent = provider.to(MESSAGES)
    assert [r.method for r in sent] == ["POST"] * 3
    assert [form(r.body) for r in sent] == [{"To": "+15551230000", "From": "+15550000001", "Body": p} for p in parts]
    assert {r.headers["authorization"] for r in sent} == {basic(SID, TOKEN)}
    assert {r.headers["content-type"] for r in sent} == {"application/x-www-form-urlencoded"}
    gaps = [b.at - a.at for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 0.28, gaps  # one message per interval per recipient


async def test_twilio_asks_for_status_callbacks_at_the_public_url_when_given_one(provider):
    provider.reply(MESSAGES, created("SM1"), created("SM2"))
    callback = "https://support.example.com/webhooks/twilio/status"
    sender = TwilioSender(SID, TOKEN, from_number="+15550000001", base_url=provider.url, status_callback=callback)
    try:
        assert await sender.send(reply("sms", "+15551230000", "a b", ["a", "b"])) == "SM1,SM2"
    finally:
        await sender.aclose()
    sent = provider.to(MESSAGES)
    assert [(r.method, form(r.body)) for r in sent] == [
        ("POST", {"To": "+15551230000", "From": "+15550000001", "Body": part, "StatusCallback": callback})
        for part in ("a", "b")
    ]
    assert {r.headers["authorization"] for r in sent} == {basic(SID, TOKEN)}


async def test_twilio_whatsapp_prefixes_both_numbers(provider):
    provider.reply(MESSAGES, created("SMw"))
    sender = twilio(provider)
    try:
        assert await sender.send(reply("whatsapp", "+15551230000", "Hello")) == "SMw"
    finally:
        await sender.aclose()
    [request] = provider.to(MESSAGES)
    assert form(request.body) == {"To": "whatsapp:+15551230000", "From": "whatsapp:+15550000002", "Body": "Hello"}


async def test_twilio_400_is_permanent_and_503_is_transient(provider):
    provider.reply(MESSAGES, Reply(400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}))
    provider.reply(MESSAGES, Reply(503, {"message": "busy", "status": 503}))
    sender = twilio(provider)
    try:
        with pytest.raises(PermanentSendError, match="21211"):
            await sender.send(reply("sms", "+1555", "Hi"))
        with pytest.raises(TwilioRestException) as transient:
            await sender.send(reply("sms", "+15551230000", "Hi", n=2))
        assert not isinstance(transient.value, PermanentSendError) and transient.value.status == 503
    finally:
        await sender.aclose()


async def test_twilio_retry_resumes_at_the_part_that_failed(provider):
    provider.reply(MESSAGES, created("SM1"), Reply(503, {"message": "busy"}), created("SM2"))
    sender = twilio(provider)
    message = reply("sms", "+15551230000", "a b", ["a", "b"])
    try:
        with pytest.raises(TwilioRestException):
            await sender.send(message)
        assert await sender.send(message) == "SM1,SM2"
    finally:
        await sender.aclose()
    assert [form(r.body)["Body"] for r in provider.to(MESSAGES)] == ["a", "b", "b"]


async def test_slack_posts_to_the_channel_and_thread_the_recipient_names(provider):
    provider.reply("/api/chat.postMessage", Reply(200, {"ok": True, "channel": "C0123ABC", "ts": "1700000001.000200"}))
    sender = SlackSender("xoxb-token", base_url=f"{provider.url}/api")
    try:
        ts = await sender.send(reply("slack", "C0123ABC:1700000000.000100", "Your refund is on its way."))
    finally:
        await sender.aclose()
    assert ts == "C0123ABC:1700000001.000200"
    [request] = provider.to("/api/chat.postMessage")
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer xoxb-token"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "channel": "C0123ABC",
        "text": "Your refund is on its way.",
        "thread_ts": "1700000000.000100",
    }


async def test_slack_errors_ok_false_and_4xx_are_permanent_ratelimits_are_not(provider):
    path = "/api/chat.postMessage"
    provider.reply(
        path,
        Reply(200, {"ok": False, "error": "channel_not_found"}),
        Reply(401, {"ok": False, "error": "invalid_auth"}),
        Reply(200, {"ok": False, "error": "ratelimited"}),
    )
    sender = SlackSender("xoxb-token", base_url=f"{provider.url}/api")
    try:
        with pytest.raises(PermanentSendError, match="channel_not_found"):
            await sender.send(reply("slack", "C404", "Hi"))
        with pytest.raises(PermanentSendError, match="401"):
            await sender.send(reply("slack", "C0123ABC", "Hi"))
        with pytest.raises(RuntimeError, match="ratelimited") as transient:
            await sender.send(reply("slack", "C0123ABC", "Hi"))
        assert not isinstance(transient.value, PermanentSendError)
    finally:
        await sender.aclose()
    assert "thread_ts" not in json.loads(provider.to(path)[0].body)


def test_slack_recipient_is_channel_then_optional_thread():
    assert parse_slack_recipient("C0123ABC") == ("C0123ABC", None)
    assert parse_slack_recipient("C0123ABC:1700000000.000100") == ("C0123ABC", "1700000000.000100")


async def test_meta_whatsapp_posts_each_part_to_the_phone_number_id(provider):
    path = "/v21.0/106540352242922/messages"
    provider.reply(
        path,
        Reply(200, {"messages": [{"id": "wamid.1"}]}),
        Reply(200, {"messages": [{"id": "wamid.2"}]}),
    )
    sender = MetaWhatsAppSender("meta-token", "106540352242922", base_url=f"{provider.url}/v21.0")
    try:
        ids = await sender.send(reply("whatsapp", "+15551230000", "one two", ["one", "two"]))
    finally:
        await sender.aclose()
    assert ids == "wamid.1,wamid.2"
    sent = provider.to(path)
    assert [r.method for r in sent] == ["POST", "POST"]
    assert {r.headers["authorization"] for r in sent} == {"Bearer meta-token"}
    assert [json.loads(r.body) for r in sent] == [
        {"messaging_product": "whatsapp", "to": "15551230000", "type": "text", "text": {"body": part}}
        for part in ("one", "two")
    ]


async def test_meta_400_is_permanent(provider):
    path = "/v21.0/106540352242922/messages"
    provider.reply(path, Reply(400, {"error": {"message": "(#131030) Recipient phone number not in allowed list"}}))
    sender = MetaWhatsAppSender("meta-token", "106540352242922", base_url=f"{provider.url}/v21.0")
    try:
        with pytest.raises(PermanentSendError, match="131030"):
            await sender.send(reply("whatsapp", "+15551230000", "Hi"))
    finally:
        await sender.aclose()
