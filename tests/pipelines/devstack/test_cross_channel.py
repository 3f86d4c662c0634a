"""One customer, two channels: a task started in the web chat widget's protocol continues by SMS.

The stack is the one `supportflow run` starts (embedded broker, Triton, PostgreSQL with the demo
shop, workers, senders, the ingress with the Twilio webhook enabled). Alice's profile says her
phone is +15550001111, so an SMS from it is Alice, in the same session.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import asyncpg
import httpx
import jwt
import pytest
import websockets
from twilio.request_validator import RequestValidator

from connectors.channels.session_tokens import CUSTOMER_AUDIENCE
from pipelines.devstack.stack import Stack
from pipelines.runtime.settings import Settings
from pipelines.services.profiles import publish_profiles
from schemas import ContactAddress, CustomerProfile
from tests.support.stream import read_topics

TOKEN = "twilio-test-auth-token"
PHONE = "+15550001111"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("cross-channel"),
        http_port=0,
        workspace_port=0,
        smtp_listen_port=0,
        twilio_auth_token=TOKEN,
    )
    with Stack(settings) as running:
        alice = CustomerProfile(customer_id="C000001", display_name="Alice Martin",
                                contacts=[ContactAddress(channel="sms", address=PHONE)])  # fmt: skip
        publish_profiles(running.settings.kafka_client_config(), "sf.profiles", [alice], exact_offsets=True)
        time.sleep(2)  # the workers' profile mirrors pick it up
        yield running


async def web_chat(url: str, customer_token: str, text: str) -> str:
    async with websockets.connect(url.replace("http", "ws") + "/v1/chat") as socket:
        await socket.send(json.dumps({"type": "hello", "customer_token": customer_token}))
        assert json.loads(await socket.recv())["type"] == "welcome"
        await socket.send(json.dumps({"type": "message", "text": text, "client_message_id": "x1"}))
        while True:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 60))
            if frame["type"] in ("reply", "escalation"):
                return frame.get("text", frame["type"])


def test_a_task_started_in_web_chat_continues_by_sms(stack):
    assert stack.ingress is not None
    # the host site's backend signs Alice in: a customer token (sub, aud, exp) with the shared key
    assert stack.settings.customer_token_secret is not None
    key = stack.settings.customer_token_secret.get_secret_value()
    claims = {"sub": "C000001", "aud": CUSTOMER_AUDIENCE, "exp": int(time.time()) + 300}
    asked = asyncio.run(
        web_chat(stack.ingress.url, jwt.encode(claims, key, algorithm="HS256"), "I want to cancel my order")
    )
    assert "order number" in asked

    url = f"{stack.ingress.url}/webhooks/twilio/messages"
    params = {"From": PHONE, "To": "+15559990000", "Body": "it's 1000002", "MessageSid": "SM" + "0" * 31 + "1"}
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    answered = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)
    assert answered.status_code == 200 and "<Response" in answered.text

    def sms_reply(records: list) -> bool:
        return any(json.loads(r.value)["channel"] == "sms" for r in records)

    records = read_topics(stack.bootstrap, ["sf.outbound"], until=sms_reply, timeout_s=60)
    [reply] = [json.loads(r.value) for r in records if json.loads(r.value)["channel"] == "sms"]
    assert reply["recipient"] == PHONE and reply["customer_id"] == "C000001"
    assert "email address or the ZIP code" in reply["text"] and "1000002" in reply["text"], (
        "the SMS answered the web chat's question: the task and its context carried over"
    )

    async def outbox() -> list[asyncpg.Record]:
        assert stack.settings.database_url is not None
        conn = await asyncpg.connect(stack.settings.database_url.get_secret_value())
        try:
            for _ in range(40):
                rows = await conn.fetch("SELECT channel, recipient FROM channel_outbox WHERE channel = 'sms'")
                if rows:
                    return rows
                await asyncio.sleep(0.25)
            return []
        finally:
            await conn.close()

    assert [(r["channel"], r["recipient"]) for r in asyncio.run(outbox())] == [("sms", PHONE)], (
        "with no Twilio credentials the senders put the SMS reply in the outbox"
    )


def test_a_provider_resending_a_webhook_while_the_first_copy_is_processing_gets_one_answer(stack):
    """Twilio resends a webhook it thinks failed; copies racing the first through the stream are one message."""
    assert stack.ingress is not None
    url = f"{stack.ingress.url}/webhooks/twilio/messages"
    phone = "+15550002222"
    params = {"From": phone, "To": "+15559990000", "Body": "where is my order?", "MessageSid": "SM" + "7" * 32}
    signature = RequestValidator(TOKEN).compute_signature(url, params)

    async def resend_concurrently(copies: int) -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            answers = await asyncio.gather(
                *(client.post(url, data=params, headers={"X-Twilio-Signature": signature}) for _ in range(copies))
            )
        return [a.status_code for a in answers]

    assert asyncio.run(resend_concurrently(6)) == [200] * 6

    def answered(records: list) -> bool:
        return any(json.loads(r.value)["recipient"] == phone for r in records)

    read_topics(stack.bootstrap, ["sf.outbound"], until=answered, timeout_s=60)
    assert asyncio.run(resend_concurrently(2)) == [200] * 2, "a late resend, after the answer went out"
    time.sleep(3)  # room for a second answer to show up, if the stream were to produce one
    replies = [json.loads(r.value) for r in read_topics(stack.bootstrap, ["sf.outbound"], until=answered, timeout_s=5)]
    to_phone = [r for r in replies if r["recipient"] == phone]
    assert len(to_phone) == 1, f"one answer, however often the provider resent: {to_phone}"

    async def outbox_rows() -> int:
        assert stack.settings.database_url is not None
        conn = await asyncpg.connect(stack.settings.database_url.get_secret_value())
        try:
            await asyncio.sleep(2)
            return await conn.fetchval("SELECT count(*) FROM channel_outbox WHERE recipient = $1", phone)
        finally:
            await conn.close()

    assert asyncio.run(outbox_rows()) == 1, "the sender delivered it once"
