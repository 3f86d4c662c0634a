"""Voice calls through the real stack: a signed Twilio call is answered within the call.

The stack is the one `supportflow run` starts (embedded broker, Triton, PostgreSQL with the demo
shop, workers, sink, senders, the ingress with the Twilio webhooks enabled). Each request is signed
as Twilio signs it, and each `<Redirect>` is followed as Twilio follows it, so what the test hears
is what a caller would.
"""

from __future__ import annotations

import asyncio
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition
from twilio.request_validator import RequestValidator

from pipelines.devstack.stack import Stack
from pipelines.runtime.settings import Settings
from tests.support.stream import read_topics

TOKEN = "twilio-test-auth-token"
TRANSFER_TO = "+15550009999"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("voice"),
        http_port=0,
        smtp_listen_port=0,
        workspace_port=0,
        twilio_auth_token=TOKEN,
        voice_transfer_to=TRANSFER_TO,
        voice_record_calls=True,
        voice_wait_rounds=8,  # a first turn on a busy 2-core machine may take a few rounds; never a transfer here
    )
    with Stack(settings) as running:
        yield running


def post(stack: Stack, path: str, params: dict[str, str]) -> httpx.Response:
    assert stack.ingress is not None
    url = stack.ingress.url + path
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30)


def twiml(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return ET.fromstring(response.content)


def call(caller: str, sid: str) -> dict[str, str]:
    return {"AccountSid": "AC1", "CallSid": sid, "From": caller, "To": "+15559990000", "CallStatus": "in-progress"}


def say_turn(stack: Stack, params: dict[str, str], words: str, turn: int) -> tuple[ET.Element, int]:
    """Speak `words` at `turn`; follow "one moment" redirects as Twilio does. The final TwiML and the redirects."""
    heard = {**params, "SpeechResult": words, "Confidence": "0.91"}
    root = twiml(post(stack, f"/webhooks/twilio/voice?turn={turn}", heard))
    redirects = 0
    while (redirect := root.find("Redirect")) is not None:
        assert redirect.text is not None and redirect.get("method") == "POST"
        redirects += 1
        root = twiml(post(stack, redirect.text, params))
    return root, redirects


def answers_to(stack: Stack, topic: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    def found(records: list[Any]) -> bool:
        return any(match(json.loads(r.value)) for r in records)

    records = read_topics(stack.bootstrap, [topic], until=found, timeout_s=30)
    [answer] = [json.loads(r.value) for r in records if match(json.loads(r.value))]
    return answer


async def fetch(stack: Stack, query: str, *args: Any) -> list[asyncpg.Record]:
    assert stack.settings.database_url is not None
    conn = await asyncpg.connect(stack.settings.database_url.get_secret_value())
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def test_a_caller_hears_the_real_reply_within_the_call_and_the_turn_is_kept_with_its_recording(stack):
    caller, sid = "+15550002001", "CA" + "1" * 32
    params = call(caller, sid)
    greeting = twiml(post(stack, "/webhooks/twilio/voice", params))
    assert [child.tag for child in greeting] == ["Start", "Gather", "Say"]
    recording = greeting.find("Start/Recording")
    assert recording is not None and recording.get("recordingStatusCallback", "").endswith("/webhooks/twilio/recording")

    answered, _ = say_turn(stack, params, "I want to cancel my order", turn=1)
    reply = answers_to(stack, "sf.outbound", lambda r: r["recipient"] == caller and r["channel"] == "voice")
    assert [child.tag for child in answered] == ["Gather", "Say"]
    gather = answered[0]
    assert gather.get("input") == "speech" and gather.get("action") == "/webhooks/twilio/voice?turn=2"
    assert [say.text for say in gather] == [reply["text"]], "the caller hears the pipeline's own voice reply"
    assert "order number" in reply["text"]

    # the reply was spoken, so the senders' ledger says so and the outbox does not keep it
    ledger = asyncio.run(fetch(stack, "SELECT * FROM channel_deliveries WHERE reply_id = $1", reply["reply_id"]))
    assert [(r["provider"], r["status"], r["provider_message_id"]) for r in ledger] == [
        ("twilio-call", "delivered", f"call:{sid}")
    ]
    time.sleep(3)  # the senders have seen the reply by now
    assert asyncio.run(fetch(stack, "SELECT 1 FROM channel_outbox WHERE reply_id = $1", reply["reply_id"])) == []

    recording_url = f"https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE{'1' * 32}"
    done = {"AccountSid": "AC1", "CallSid": sid, "RecordingSid": "RE" + "1" * 32, "RecordingUrl": recording_url,
            "RecordingStatus": "completed", "RecordingDuration": "17"}  # fmt: skip
    assert post(stack, "/webhooks/twilio/recording", done).status_code == 204

    assert stack.ingress is not None
    deadline = time.monotonic() + 60
    while True:  # the conversation read path: PostgreSQL through the ingress (cached a few seconds)
        got = httpx.get(f"{stack.ingress.url}/v1/conversations/{reply['conversation_id']}", timeout=10)
        snapshot = got.json() if got.status_code == 200 else {}
        if snapshot.get("recordings") and len(snapshot.get("messages", [])) >= 2:
            break
        assert time.monotonic() < deadline, got.text
        time.sleep(1)
    turn, spoken = snapshot["messages"][0], snapshot["messages"][1]
    assert (turn["role"], turn["channel"], turn["text"]) == ("customer", "voice", "I want to cancel my order")
    assert turn["channel_meta"] == {"call_sid": sid, "confidence": "0.91"}
    assert (spoken["role"], spoken["text"], spoken["in_reply_to"]) == ("agent", reply["text"], turn["message_id"])
    assert [(r["call_sid"], r["recording_url"], r["duration_s"]) for r in snapshot["recordings"]] == [
        (sid, recording_url, 17)
    ]


def test_a_caller_who_asks_for_a_human_is_dialled_through(stack):
    caller, sid = "+15550002002", "CA" + "2" * 32
    answered, _ = say_turn(stack, call(caller, sid), "I want to talk to a human", turn=1)
    escalation = answers_to(stack, "sf.escalations", lambda r: r["recipient"] == caller)
    assert escalation["channel"] == "voice" and escalation["text"] == "I want to talk to a human"
    assert [child.tag for child in answered] == ["Say", "Dial"]
    assert answered[0].text == "Let me put you through to a colleague."
    assert [(noun.tag, noun.text) for noun in answered[1]] == [("Number", TRANSFER_TO)]


def committed_past(stack: Stack, group: str, records: list[Any]) -> bool:
    """Whether `group` committed past every one of `records` (exact, unlike end offsets on tansu)."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in last], timeout=10)
    finally:
        consumer.close()
    return all(tp.offset > last[(tp.topic, tp.partition)] for tp in committed)


def test_status_callbacks_reach_postgres_and_a_late_one_never_moves_a_status_back(stack):
    delivered, failed = "SM" + "a" * 32, "SM" + "b" * 32
    base = {"AccountSid": "AC1", "From": "+15559990000", "To": "+15550002003", "ApiVersion": "2010-04-01"}
    callbacks = [
        {"MessageSid": delivered, "MessageStatus": "delivered"},
        {"MessageSid": delivered, "MessageStatus": "sent"},  # late
        {"MessageSid": failed, "MessageStatus": "failed", "ErrorCode": "30003"},
        {"MessageSid": failed, "MessageStatus": "sending"},  # late
    ]
    for fields in callbacks:
        assert post(stack, "/webhooks/twilio/status", {**base, **fields}).status_code == 204
    published = read_topics(stack.bootstrap, ["sf.delivery"], until=lambda r: len(r) >= 4, timeout_s=30)
    ours = [r for r in published if json.loads(r.value)["message_sid"] in (delivered, failed)]
    assert len(ours) == 4
    deadline = time.monotonic() + 60
    while not committed_past(stack, f"{stack.topology.spec.app_id}-sink-postgres", ours):
        assert time.monotonic() < deadline, "the sink did not store the statuses"
        time.sleep(0.5)
    rows = asyncio.run(fetch(stack, "SELECT * FROM delivery_statuses WHERE message_sid = ANY($1)", [delivered, failed]))
    assert {r["message_sid"]: (r["status"], r["error_code"], r["recipient"]) for r in rows} == {
        delivered: ("delivered", None, "+15550002003"),
        failed: ("failed", 30003, "+15550002003"),
    }
