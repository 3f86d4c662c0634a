"""Provider webhooks on the real ingress and a real broker: signed the provider's way or refused.

Each request is signed exactly as the provider signs it (Twilio's own `compute_signature`, Meta's
HMAC of the raw body, Slack's v0 basestring), and `sf.ingress` is read back to prove what was, and
was not, published.
"""

from __future__ import annotations

import json
import random
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from starlette.testclient import TestClient
from twilio.request_validator import RequestValidator

from connectors.channels import meta, slack
from connectors.redis.rate_limit import RateLimit
from pipelines.devstack.embedded import EmbeddedBroker
from pipelines.runtime.app import ensure_topics
from pipelines.runtime.topology import load_topology
from pipelines.services.ingress import build_ingress
from schemas import Escalation, OutboundMessage
from tests.support.hostile import HOSTILE
from tests.support.stream import DEFAULT_TOPOLOGY, produce, read_topics, settings_for

TWILIO_TOKEN = "twilio-auth-token-for-tests"
META_SECRET = "meta-app-secret-for-tests"
META_VERIFY = "meta-verify-token-for-tests"
SLACK_SECRET = "slack-signing-secret-for-tests"
PUBLIC = "https://support.example.com"
SECRETS = {
    "twilio_auth_token": TWILIO_TOKEN,
    "meta_app_secret": META_SECRET,
    "meta_verify_token": META_VERIFY,
    "slack_signing_secret": SLACK_SECRET,
    "public_base_url": PUBLIC,
}

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def ingress(broker: EmbeddedBroker) -> Iterator[ClientFactory]:
    """Builds the real ingress against the test's broker with the given settings; closes what it opened."""
    topology = load_topology(DEFAULT_TOPOLOGY)
    ensure_topics(settings_for(broker.bootstrap), topology)
    opened: list[TestClient] = []

    def make(**settings: Any) -> TestClient:
        app = build_ingress(settings_for(broker.bootstrap, **settings), topology)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()  # runs the lifespan: the producer and the reply reader
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def ingress_records(broker: EmbeddedBroker, expected: int) -> list[dict[str, Any]]:
    """Everything on sf.ingress, read until `expected` records are there plus a grace period for extras."""
    records = read_topics(broker.bootstrap, ["sf.ingress"], until=lambda r: len(r) >= expected, timeout_s=20)
    return [json.loads(r.value) for r in records if r.value is not None]


def rejections(provider: str, reason: str) -> float:
    value = REGISTRY.get_sample_value("supportflow_webhook_rejections_total", {"provider": provider, "reason": reason})
    return value or 0.0


def twilio_post(client: TestClient, path: str, params: dict[str, str], signature: str | None = "sign") -> Any:
    headers = {}
    if signature == "sign":
        headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + path, params)
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    return client.post(path, data=params, headers=headers)


def meta_post(client: TestClient, payload: dict[str, Any] | bytes, secret: str = META_SECRET) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"content-type": "application/json", "X-Hub-Signature-256": meta.sign(secret, body)}
    return client.post(meta.PATH, content=body, headers=headers)


def slack_post(client: TestClient, payload: dict[str, Any], at: float | None = None, secret: str = SLACK_SECRET) -> Any:
    body = json.dumps(payload).encode()
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        "content-type": "application/json",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack.sign(secret, timestamp, body),
    }
    return client.post(slack.PATH, content=body, headers=headers)


SMS = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "From": "+15551234567",
    "To": "+15559876543",
    "Body": "where is my order 1234567?",
    "NumMedia": "0",
}


def meta_message(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "WABA-1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PN-1"},
                            "messages": [message],
                        },
                    }
                ],
            }
        ],
    }


SLACK_EVENT = {
    "type": "event_callback",
    "team_id": "T0001",
    "event_id": "Ev0123ABC",
    "event_time": 1700000000,
    "event": {
        "type": "message",
        "user": "U0CUSTOMER",
        "text": "my refund has not arrived",
        "channel": "D0DIRECT",
        "ts": "1700000000.000100",
        "thread_ts": "1699999999.000001",
    },
}


# --- Twilio ---------------------------------------------------------------------------------------


def test_a_signed_twilio_sms_is_published_once(ingress, broker):
    client = ingress(**SECRETS)
    response = twilio_post(client, "/webhooks/twilio/messages", SMS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text.endswith("<Response />")
    [record] = ingress_records(broker, 1)
    assert record["channel"] == "sms" and record["sender"] == "+15551234567"
    assert record["text"] == "where is my order 1234567?"
    assert record["message_id"] == f"tw-{SMS['MessageSid']}" and record["provider_message_id"] == SMS["MessageSid"]


def test_a_twilio_whatsapp_message_is_on_channel_whatsapp_and_the_default_url_is_the_requests_own(ingress, broker):
    client = ingress(**{**SECRETS, "public_base_url": None})
    params = {**SMS, "From": "whatsapp:+15551234567", "MessageSid": "SMwhatsapp1"}
    url = "http://testserver/webhooks/twilio/messages"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    assert twilio_post(client, "/webhooks/twilio/messages", params, signature).status_code == 200
    [record] = ingress_records(broker, 1)
    assert (record["channel"], record["sender"], record["message_id"]) == ("whatsapp", "+15551234567", "tw-SMwhatsapp1")
    assert record["payload"]["from"] == "whatsapp:+15551234567", "the sender needs the prefix to answer"


def test_a_resent_twilio_webhook_has_the_same_message_id(ingress, broker):
    client = ingress(**SECRETS)
    assert twilio_post(client, "/webhooks/twilio/messages", SMS).status_code == 200
    assert twilio_post(client, "/webhooks/twilio/messages", SMS).status_code == 200
    first, second = ingress_records(broker, 2)
    assert first["message_id"] == second["message_id"] == f"tw-{SMS['MessageSid']}"
    assert first["provider_message_id"] == second["provider_message_id"]


@pytest.mark.parametrize(
    ("signature", "status", "reason"),
    [(None, 401, "missing_signature"), ("bm90IHRoZSBzaWduYXR1cmU=", 403, "bad_signature")],
    ids=["missing", "wrong"],
)
def test_an_unsigned_or_wrongly_signed_twilio_webhook_is_refused(ingress, broker, signature, status, reason):
    client = ingress(**SECRETS)
    before = rejections("twilio", reason)
    response = twilio_post(client, "/webhooks/twilio/messages", SMS, signature)
    assert response.status_code == status and "X-Twilio-Signature" in response.json()["error"]
    assert rejections("twilio", reason) == before + 1
    assert ingress_records(broker, 0) == []


def test_a_twilio_signature_for_another_url_or_altered_body_is_refused(ingress, broker):
    client = ingress(**SECRETS)
    elsewhere = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + "/other", SMS)
    assert twilio_post(client, "/webhooks/twilio/messages", SMS, elsewhere).status_code == 403
    signed = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + "/webhooks/twilio/messages", SMS)
    altered = {**SMS, "Body": "refund me everything"}
    assert twilio_post(client, "/webhooks/twilio/messages", altered, signed).status_code == 403
    assert ingress_records(broker, 0) == []


CALL = {"CallSid": "CA0123", "From": "+15551230000", "To": "+15559876543", "CallStatus": "in-progress"}


def spoken(words: str, **extra: str) -> dict[str, str]:
    return {**CALL, "SpeechResult": words, "Confidence": "0.92", **extra}


def twiml(response: Any) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return ET.fromstring(response.content)


def verbs(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def follow(client: TestClient, root: ET.Element, params: dict[str, str] = CALL) -> Any:
    """Do what Twilio does with a <Redirect>: POST the call's parameters there, signed."""
    redirect = root.find("Redirect")
    assert redirect is not None and redirect.get("method") == "POST", ET.tostring(root)
    assert redirect.text is not None
    return twilio_post(client, redirect.text, params)


def records_on(broker: EmbeddedBroker, topic: str, expected: int) -> list[Any]:
    return read_topics(broker.bootstrap, [topic], until=lambda r: len(r) >= expected, timeout_s=20)


def voice_reply(message_id: str, text: str) -> OutboundMessage:
    return OutboundMessage(
        reply_id=f"r-{message_id}",
        in_reply_to=message_id,
        conversation_id="conv-caller",
        customer_id="caller",
        channel="voice",
        recipient=CALL["From"],
        text=text,
        parts=[text],
    )


def test_twilio_voice_greets_then_publishes_the_turn_and_holds_the_call_while_no_answer_comes(ingress, broker):
    client = ingress(**SECRETS, voice_answer_wait_s=0.3)
    greeting = twilio_post(client, "/webhooks/twilio/voice", {**CALL, "CallStatus": "ringing"})
    assert greeting.status_code == 200 and greeting.headers["content-type"].startswith("application/xml")
    assert greeting.text.endswith(
        '<Response><Gather action="/webhooks/twilio/voice?turn=1" input="speech" method="POST">'
        "<Say>How can I help?</Say></Gather><Say>Thank you for calling. Goodbye.</Say></Response>"
    )
    assert ingress_records(broker, 0) == [], "a greeting publishes nothing"

    turn = spoken("I want to cancel my order", RecordingUrl="https://api.twilio.com/recordings/RE1")
    held = twiml(twilio_post(client, "/webhooks/twilio/voice?turn=1", turn))
    [record] = ingress_records(broker, 1)
    assert (record["channel"], record["sender"], record["text"]) == ("voice", "+15551230000", turn["SpeechResult"])
    assert record["payload"]["call_sid"] == "CA0123" and record["payload"]["confidence"] == "0.92"
    assert record["payload"]["recording_url"] == "https://api.twilio.com/recordings/RE1"
    assert record["message_id"].startswith("tw-CA0123-")
    assert verbs(held) == ["Say", "Redirect"] and held[0].text == "One moment, please."
    assert held[1].text == f"/webhooks/twilio/voice/wait?message_id={record['message_id']}&turn=1&round=1"


def test_a_held_call_hears_the_reply_that_arrives_while_it_waits(ingress, broker):
    client = ingress(**SECRETS, voice_answer_wait_s=2.0, voice_wait_rounds=3)
    held = twiml(twilio_post(client, "/webhooks/twilio/voice?turn=1", spoken("cancel order 1000002")))
    [record] = ingress_records(broker, 1)
    reply = voice_reply(record["message_id"], "Order 1000002 is cancelled. Anything else?")
    records = [(reply.partition_key(), reply.to_bytes())]
    later = threading.Timer(0.5, produce, (broker.bootstrap, "sf.outbound", records))
    later.start()
    try:
        answered = twiml(follow(client, held))
    finally:
        later.join()
    assert verbs(answered) == ["Gather", "Say"]
    gather = answered[0]
    assert (gather.get("input"), gather.get("action"), gather.get("method")) == (
        "speech",
        "/webhooks/twilio/voice?turn=2",
        "POST",
    )
    assert [say.text for say in gather] == ["Order 1000002 is cancelled. Anything else?"]
    assert answered[1].text == "Thank you for calling. Goodbye."
    again = twiml(follow(client, held))  # Twilio resending the redirect hears the same answer at once
    assert ET.tostring(again) == ET.tostring(answered)
    assert len(ingress_records(broker, 1)) == 1, "waiting publishes nothing more"


@pytest.mark.parametrize(
    ("transfer_to", "expected"),
    [
        (None, ("Enqueue", None, "support")),
        ("+15550009999", ("Dial", "Number", "+15550009999")),
        ("sip:agents@pbx.example.com", ("Dial", "Sip", "sip:agents@pbx.example.com")),
    ],
    ids=["queue", "number", "sip"],
)
def test_a_call_still_unanswered_after_the_last_round_is_transferred(ingress, broker, transfer_to, expected):
    client = ingress(**SECRETS, voice_answer_wait_s=0.2, voice_wait_rounds=1, voice_transfer_to=transfer_to)
    held = twiml(twilio_post(client, "/webhooks/twilio/voice?turn=1", spoken("are you there?")))
    assert held.find("Redirect") is not None and "round=1" in (held.find("Redirect").text or "")
    transferred = twiml(follow(client, held))
    verb, noun, target = expected
    assert verbs(transferred) == ["Say", verb]
    assert transferred[0].text == "Sorry this is taking long. Let me put you through to a colleague."
    element = transferred[1] if noun is None else transferred[1].find(noun)
    assert element is not None and element.text == target


def test_an_escalated_turn_is_dialled_through_to_a_person_even_after_a_queue_notice(ingress, broker):
    client = ingress(**SECRETS, voice_answer_wait_s=0.3, voice_transfer_to="+15550009999")
    held = twiml(twilio_post(client, "/webhooks/twilio/voice?turn=1", spoken("a human please")))
    [record] = ingress_records(broker, 1)
    escalation = Escalation(
        escalation_id="x-1", message_id=record["message_id"], conversation_id="conv-caller", customer_id="caller",
        session_id="s-1", channel="voice", recipient=CALL["From"], text="a human please",
        reason="customer_requested_human",
    )  # fmt: skip
    produce(broker.bootstrap, "sf.escalations", [(escalation.partition_key(), escalation.to_bytes())])
    # the workspace router's notice to the customer answers the same message, after the hand-over
    notice = voice_reply(record["message_id"], "You are number 2 in line.")
    produce(broker.bootstrap, "sf.outbound", [(notice.partition_key(), notice.to_bytes())])
    time.sleep(1)  # the ingress has read both
    answered = twiml(follow(client, held))
    assert verbs(answered) == ["Say", "Dial"] and answered[0].text == "Let me put you through to a colleague."
    assert [(n.tag, n.text) for n in answered[1]] == [("Number", "+15550009999")]


def test_the_same_words_at_a_later_turn_are_a_new_message_and_a_resent_turn_is_not(ingress, broker):
    client = ingress(**SECRETS, voice_answer_wait_s=0.1, voice_wait_rounds=0)
    for path in ("/webhooks/twilio/voice?turn=1", "/webhooks/twilio/voice?turn=1", "/webhooks/twilio/voice?turn=2"):
        assert twilio_post(client, path, spoken("yes")).status_code == 200
    first, resent, later = ingress_records(broker, 3)
    assert first["message_id"] == resent["message_id"] != later["message_id"]
    assert (first["payload"]["turn"], later["payload"]["turn"]) == (1, 2)


def test_a_call_asks_for_its_recording_when_calls_are_recorded(ingress, broker):
    client = ingress(**SECRETS, voice_record_calls=True)
    greeting = twiml(twilio_post(client, "/webhooks/twilio/voice", CALL))
    assert verbs(greeting) == ["Start", "Gather", "Say"]
    recording = greeting.find("Start/Recording")
    assert recording is not None and recording.get("recordingStatusCallback") == f"{PUBLIC}/webhooks/twilio/recording"
    again = twiml(twilio_post(client, "/webhooks/twilio/voice?turn=2", CALL))
    assert verbs(again) == ["Gather", "Say"], "a silent turn asks again without starting another recording"
    assert again[0].get("action") == "/webhooks/twilio/voice?turn=2"


@pytest.mark.parametrize("path", ["/webhooks/twilio/voice", "/webhooks/twilio/voice/wait?message_id=tw-CA0123-x"])
def test_a_wrongly_signed_voice_webhook_is_refused_and_publishes_nothing(ingress, broker, path):
    client = ingress(**SECRETS)
    assert twilio_post(client, path, spoken("refund me"), signature=None).status_code == 401
    assert twilio_post(client, path, spoken("refund me"), signature="bm90IHRoZSBzaWduYXR1cmU=").status_code == 403
    other_url = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + "/webhooks/twilio/messages", spoken("x"))
    assert twilio_post(client, path, spoken("x"), signature=other_url).status_code == 403
    assert ingress_records(broker, 0) == []


def test_a_wait_redirect_must_be_one_of_ours_for_this_call(ingress, broker):
    client = ingress(**SECRETS, voice_answer_wait_s=0.1)
    for path in (
        "/webhooks/twilio/voice/wait?message_id=tw-CAother-abc&turn=1&round=1",  # another call's turn
        "/webhooks/twilio/voice/wait?message_id=tw-CA0123-abc&turn=1",  # no round
        "/webhooks/twilio/voice/wait?turn=1&round=1",
    ):
        refused = twilio_post(client, path, CALL)
        assert refused.status_code == 400 and "message_id" in refused.json()["error"], path
    assert ingress_records(broker, 0) == []


# --- Twilio status callbacks ---------------------------------------------------------------------------


STATUS = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "SmsSid": "SM0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123",
    "From": "+15559876543",
    "To": "+15551234567",
    "ApiVersion": "2010-04-01",
}


def test_a_signed_delivery_status_is_published_keyed_by_its_message_sid(ingress, broker):
    client = ingress(**SECRETS)
    failed = {**STATUS, "MessageStatus": "undelivered", "SmsStatus": "undelivered", "ErrorCode": "30005"}
    assert twilio_post(client, "/webhooks/twilio/status", failed).status_code == 204
    sent = {**STATUS, "MessageStatus": "sent", "ErrorCode": ""}
    assert twilio_post(client, "/webhooks/twilio/status", sent).status_code == 204
    first, second = records_on(broker, "sf.delivery", 2)
    assert first.key == second.key == STATUS["MessageSid"].encode()
    record = json.loads(first.value)
    assert {k: record[k] for k in ("message_sid", "provider", "status", "error_code", "recipient")} == {
        "message_sid": STATUS["MessageSid"],
        "provider": "twilio",
        "status": "undelivered",
        "error_code": 30005,
        "recipient": "+15551234567",
    }
    assert (json.loads(second.value)["status"], json.loads(second.value)["error_code"]) == ("sent", None)
    assert ingress_records(broker, 0) == [], "a status is not a customer message"


def test_status_callbacks_that_are_unsigned_or_malformed_publish_nothing(ingress, broker):
    client = ingress(**SECRETS)
    ok = {**STATUS, "MessageStatus": "delivered"}
    assert twilio_post(client, "/webhooks/twilio/status", ok, signature=None).status_code == 401
    assert twilio_post(client, "/webhooks/twilio/status", ok, signature="bm90IGl0").status_code == 403
    bogus = twilio_post(client, "/webhooks/twilio/status", {**STATUS, "MessageStatus": "teleported"})
    assert bogus.status_code == 400 and "MessageStatus" in bogus.json()["error"]
    no_sid = twilio_post(client, "/webhooks/twilio/status", {"MessageStatus": "sent", "ErrorCode": "x"})
    assert no_sid.status_code == 400
    assert "MessageSid" in no_sid.json()["error"] and "ErrorCode" in no_sid.json()["error"]
    assert records_on(broker, "sf.delivery", 0) == []


def test_a_signed_recording_callback_is_published_keyed_by_its_call(ingress, broker):
    client = ingress(**SECRETS)
    done = {
        "AccountSid": "AC0123",
        "CallSid": "CA0123",
        "RecordingSid": "RE0123",
        "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC0123/Recordings/RE0123",
        "RecordingStatus": "completed",
        "RecordingDuration": "42",
        "RecordingChannels": "1",
        "RecordingSource": "StartCallRecordingTwiML",
    }
    assert twilio_post(client, "/webhooks/twilio/recording", done).status_code == 204
    not_a_url = twilio_post(client, "/webhooks/twilio/recording", {**done, "RecordingUrl": "javascript:alert(1)"})
    assert not_a_url.status_code == 400 and "RecordingUrl" in not_a_url.json()["error"]
    assert twilio_post(client, "/webhooks/twilio/recording", done, signature="bm90IGl0").status_code == 403
    [published] = records_on(broker, "sf.recordings", 1)
    record = json.loads(published.value)
    assert published.key == b"CA0123"
    assert (record["call_sid"], record["recording_sid"], record["status"], record["duration_s"]) == (
        "CA0123",
        "RE0123",
        "completed",
        42,
    )
    assert record["recording_url"] == done["RecordingUrl"]


# --- Meta WhatsApp Cloud API ------------------------------------------------------------------------


def test_meta_handshake_echoes_the_challenge_only_for_our_token(ingress, broker):
    client = ingress(**SECRETS)
    query = {"hub.mode": "subscribe", "hub.verify_token": META_VERIFY, "hub.challenge": "1158201444"}
    ok = client.get(meta.PATH, params=query)
    assert ok.status_code == 200 and ok.text == "1158201444" and ok.headers["content-type"].startswith("text/plain")
    wrong = client.get(meta.PATH, params={**query, "hub.verify_token": "guess"})
    assert wrong.status_code == 403 and "hub.verify_token" in wrong.json()["error"]
    assert client.get(meta.PATH, params={**query, "hub.mode": "unsubscribe"}).status_code == 403
    assert ingress_records(broker, 0) == []


def test_signed_meta_text_and_interactive_replies_are_published_and_statuses_ignored(ingress, broker):
    client = ingress(**SECRETS)
    text = {"from": "15551234567", "id": "wamid.TEXT1", "timestamp": "1700000000", "type": "text"}
    text["text"] = {"body": "hello, where is my parcel?"}
    button = {"from": "15551234567", "id": "wamid.BTN1", "type": "interactive"}
    button["interactive"] = {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes, cancel it"}}
    row = {"from": "15557654321", "id": "wamid.LIST1", "type": "interactive"}
    row["interactive"] = {"type": "list_reply", "list_reply": {"id": "r2", "title": "Track my order"}}
    for message in (text, button, row):
        assert meta_post(client, meta_message(message)).status_code == 200
    status = meta_message({})
    value = status["entry"][0]["changes"][0]["value"]
    value.pop("messages")
    value["statuses"] = [{"id": "wamid.OUT1", "status": "delivered", "recipient_id": "15551234567"}]
    assert meta_post(client, status).status_code == 200

    records = ingress_records(broker, 3)
    # two senders are two partition keys, so only each sender's own order is kept
    got = sorted((r["channel"], r["sender"], r["text"], r["message_id"], r["provider_message_id"]) for r in records)
    assert got == sorted(
        [
            ("whatsapp", "15551234567", "hello, where is my parcel?", "meta-wamid.TEXT1", "wamid.TEXT1"),
            ("whatsapp", "15551234567", "Yes, cancel it", "meta-wamid.BTN1", "wamid.BTN1"),
            ("whatsapp", "15557654321", "Track my order", "meta-wamid.LIST1", "wamid.LIST1"),
        ]
    )
    assert {r["payload"]["phone_number_id"] for r in records} == {"PN-1"}


def test_meta_webhooks_with_a_wrong_or_missing_signature_are_refused(ingress, broker):
    client = ingress(**SECRETS)
    payload = meta_message({"from": "15551234567", "id": "wamid.X", "type": "text", "text": {"body": "hi"}})
    assert meta_post(client, payload, secret="not-the-app-secret").status_code == 403
    body = json.dumps(payload).encode()
    missing = client.post(meta.PATH, content=body, headers={"content-type": "application/json"})
    assert missing.status_code == 401 and "X-Hub-Signature-256" in missing.json()["error"]
    signed_other = {"content-type": "application/json", "X-Hub-Signature-256": meta.sign(META_SECRET, body + b" ")}
    assert client.post(meta.PATH, content=body, headers=signed_other).status_code == 403
    assert ingress_records(broker, 0) == []


# --- Slack --------------------------------------------------------------------------------------------


def test_a_signed_slack_message_event_is_published_with_its_thread(ingress, broker):
    client = ingress(**SECRETS)
    assert slack_post(client, SLACK_EVENT).status_code == 200
    own = {**SLACK_EVENT, "event_id": "Ev-bot", "event": {**SLACK_EVENT["event"], "bot_id": "B1"}}
    edit = {**SLACK_EVENT, "event_id": "Ev-edit", "event": {**SLACK_EVENT["event"], "subtype": "message_changed"}}
    assert slack_post(client, own).status_code == 200 and slack_post(client, edit).status_code == 200
    [record] = ingress_records(broker, 1)
    assert (record["channel"], record["sender"], record["text"]) == ("slack", "U0CUSTOMER", "my refund has not arrived")
    assert (record["message_id"], record["provider_message_id"]) == ("slack-Ev0123ABC", "Ev0123ABC")
    assert record["payload"]["channel_id"] == "D0DIRECT" and record["payload"]["thread_ts"] == "1699999999.000001"
    assert record["reply_to"] == "D0DIRECT:1699999999.000001", "the answer goes in the customer's thread"


def test_slack_url_verification_answers_the_challenge(ingress, broker):
    client = ingress(**SECRETS)
    response = slack_post(client, {"type": "url_verification", "token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV"})
    assert response.status_code == 200 and response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV"}
    assert ingress_records(broker, 0) == []


def test_slack_refuses_stale_wrong_and_missing_signatures(ingress, broker):
    client = ingress(**SECRETS)
    before = rejections("slack", "stale_timestamp")
    stale = slack_post(client, SLACK_EVENT, at=time.time() - 301)
    assert stale.status_code == 403 and "X-Slack-Request-Timestamp" in stale.json()["error"]
    assert rejections("slack", "stale_timestamp") == before + 1
    assert slack_post(client, SLACK_EVENT, at=time.time() + 600).status_code == 403, "nor from the future"
    assert slack_post(client, SLACK_EVENT, secret="another-app").status_code == 403
    missing = client.post(slack.PATH, content=json.dumps(SLACK_EVENT).encode())
    assert missing.status_code == 401
    assert ingress_records(broker, 0) == []


# --- configuration and fuzz -------------------------------------------------------------------------


def test_unconfigured_providers_answer_503_and_publish_nothing(ingress, broker):
    client = ingress()
    twilio = twilio_post(client, "/webhooks/twilio/messages", SMS)
    assert twilio.status_code == 503
    assert twilio.json()["error"] == "twilio webhooks are not configured: set SUPPORTFLOW_TWILIO_AUTH_TOKEN"
    assert twilio_post(client, "/webhooks/twilio/voice", {"CallSid": "CA1", "From": "+1"}).status_code == 503
    for path in ("/webhooks/twilio/voice/wait", "/webhooks/twilio/status", "/webhooks/twilio/recording"):
        assert twilio_post(client, path, {"CallSid": "CA1", "MessageSid": "SM1"}).status_code == 503
    meta_response = meta_post(client, meta_message({"from": "1", "id": "w", "type": "text", "text": {"body": "x"}}))
    assert meta_response.status_code == 503 and "SUPPORTFLOW_META_APP_SECRET" in meta_response.json()["error"]
    handshake = client.get(meta.PATH, params={"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"})
    assert handshake.status_code == 503 and "SUPPORTFLOW_META_VERIFY_TOKEN" in handshake.json()["error"]
    slack_response = slack_post(client, SLACK_EVENT)
    assert slack_response.status_code == 503 and "SUPPORTFLOW_SLACK_SIGNING_SECRET" in slack_response.json()["error"]
    assert ingress_records(broker, 0) == []


def _random_text(rng: random.Random, size: int) -> str:
    alphabet = 'abcXYZ019=&%+:._-/ {}[]",\\\n\té漢\x00'
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(size)))


def _random_header(rng: random.Random) -> str:
    return "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(80)))


def test_random_requests_never_get_a_5xx_and_publish_nothing(ingress, broker):
    """Fuzz (a seeded stdlib generator: hypothesis is not installed here): 50 requests per endpoint.

    Half carry a correct signature over a random body, so the adapters see arbitrary shapes too.
    """
    client = ingress(**SECRETS)
    rng = random.Random(20240607)
    statuses: list[int] = []
    for i in range(50):
        signed = i % 2 == 0
        raw = (
            _random_text(rng, 400).encode("utf-8")
            if rng.random() < 0.7
            else bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        )
        json_body = (
            json.dumps(
                rng.choice([{}, [], None, {"object": "whatsapp_business_account", "entry": _random_text(rng, 9)}])
            ).encode()
            if rng.random() < 0.3
            else raw
        )
        noise = {_random_header(rng)[:20].strip() or "x": _random_header(rng)}
        params = {_random_text(rng, 12): _random_text(rng, 30) for _ in range(rng.randrange(5))}
        for path in (
            "/webhooks/twilio/messages",
            "/webhooks/twilio/voice",
            "/webhooks/twilio/voice/wait?message_id=tw-x-1&turn=1&round=1",
            "/webhooks/twilio/status",
            "/webhooks/twilio/recording",
        ):
            signature = (
                RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC + path, params)
                if signed
                else _random_header(rng)
            )
            response = client.post(path, data=params, headers={"X-Twilio-Signature": signature, **noise})
            statuses.append(response.status_code)
            statuses.append(
                client.post(path, content=raw, headers={"X-Twilio-Signature": _random_header(rng)}).status_code
            )
        meta_signature = meta.sign(META_SECRET, json_body) if signed else _random_header(rng)
        statuses.append(
            client.post(meta.PATH, content=json_body, headers={"X-Hub-Signature-256": meta_signature}).status_code
        )
        query = {_random_text(rng, 10): _random_text(rng, 10), "hub.mode": rng.choice(["subscribe", "x", ""])}
        statuses.append(client.get(meta.PATH, params=query).status_code)
        timestamp = str(int(time.time())) if signed else _random_header(rng)[:12]
        slack_signature = slack.sign(SLACK_SECRET, timestamp, json_body) if signed else _random_header(rng)
        slack_headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": slack_signature, **noise}
        statuses.append(client.post(slack.PATH, content=json_body, headers=slack_headers).status_code)
    assert all(status < 500 for status in statuses), sorted(set(statuses))
    assert ingress_records(broker, 0) == []
    assert records_on(broker, "sf.delivery", 0) == [] and records_on(broker, "sf.recordings", 0) == []


def _signed(provider: str, body: bytes) -> dict[str, str]:
    if provider == "meta":
        return {"content-type": "application/json", "X-Hub-Signature-256": meta.sign(META_SECRET, body)}
    timestamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack.sign(SLACK_SECRET, timestamp, body),
    }


@pytest.mark.parametrize("provider", ["meta", "slack"])
def test_signed_hostile_json_gets_a_clear_4xx_and_publishes_nothing(ingress, broker, provider):
    """Signed the provider's way, so only the one strict parser stands between the body and sf.ingress."""
    client = ingress(**SECRETS)
    good = (
        meta_message({"from": "15551230000", "id": "wamid.H1", "type": "text", "text": {"body": "__HOSTILE__"}})
        if provider == "meta"
        else {**SLACK_EVENT, "event": {**SLACK_EVENT["event"], "text": "__HOSTILE__"}}
    )
    template = json.dumps(good).encode()
    path = meta.PATH if provider == "meta" else slack.PATH
    answers = {}
    for case in HOSTILE:
        body = case.body(lambda text: template.replace(b'"__HOSTILE__"', text))
        response = client.post(path, content=body, headers=_signed(provider, body))
        answers[case.name] = (response.status_code, case.says in response.json()["error"])
    assert answers == {case.name: (case.status, True) for case in HOSTILE}
    assert client.get("/healthz").status_code == 200
    assert ingress_records(broker, 0) == []


def test_a_signed_twilio_form_with_control_characters_is_422_and_publishes_nothing(ingress, broker):
    client = ingress(**SECRETS)
    for field, value in [("Body", "where is\x00 my order"), ("From", "+1555\x1b[2J")]:
        response = twilio_post(client, "/webhooks/twilio/messages", {**SMS, field: value})
        assert response.status_code == 422, response.text
        assert f"the field '{field}' holds U+00" in response.json()["error"]
    # a turn number of 5,000 digits is no turn (int() would raise past 4,300): the call goes on
    huge_turn = twilio_post(client, "/webhooks/twilio/voice?turn=" + "9" * 5000, spoken("hello"))
    assert huge_turn.status_code == 200, huge_turn.text
    assert [r["text"] for r in ingress_records(broker, 1)] == ["hello"], "only the voice turn was published"


def test_a_rate_limited_caller_is_asked_to_repeat_in_twiml_and_nothing_is_published(ingress, broker):
    client = ingress(**SECRETS, voice_answer_wait_s=0.2, rate_limits={"voice": RateLimit(requests=1, per_seconds=3600)})
    first = twiml(twilio_post(client, "/webhooks/twilio/voice?turn=1", spoken("where is my order")))
    assert verbs(first) == ["Say", "Redirect"], "the first turn is taken and held"
    again = twilio_post(client, "/webhooks/twilio/voice?turn=2", spoken("hello? anyone there?"))
    assert again.status_code == 200 and again.headers["content-type"].startswith("application/xml")
    answer = twiml(again)
    assert verbs(answer) == ["Gather", "Say"] and answer[0].get("action") == "/webhooks/twilio/voice?turn=2"
    assert [say.text for say in answer[0]] == ["Sorry, I could not take that in. Please say it again in a moment."]
    assert len(ingress_records(broker, 1)) == 1, "the refused turn is not published"
