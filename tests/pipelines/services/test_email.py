"""The email channel in the stack `supportflow run` starts: a mail in by SMTP, a threaded reply in the outbox.

The stack is the real one (embedded broker, Triton, PostgreSQL, workers, sink, senders, the email
channel's process, the ingress). With no SMTP relay configured the reply is not sent: the outbox
keeps the mail it would have been, headers and HTML included, and the gateway lists it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest

from connectors.channels.email_threading import conversation_from_headers
from pipelines.devstack.stack import Stack
from pipelines.runtime.settings import Settings

ORIGINAL_ID = "<refund-question-1@customer.example>"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("email-stack"), http_port=0, smtp_listen_port=0, workspace_port=0
    )
    with Stack(settings) as running:
        yield running


def outbox_email(url: str, recipient: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        entries = httpx.get(f"{url}/v1/outbox?limit=50", timeout=5).json()["entries"]
        found = [e for e in entries if e["channel"] == "email" and e["recipient"] == recipient]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no email reply in the outbox: {entries}"
        time.sleep(0.5)


def test_a_mail_to_the_listener_gets_a_threaded_reply_in_the_outbox(stack):
    assert stack.ingress is not None and stack.email_port, "the stack started the SMTP listener"
    mail = EmailMessage()
    mail["From"] = "Dana Reyes <dana@customer.example>"
    mail["To"] = stack.settings.support_address
    mail["Subject"] = "Refund"
    mail["Message-ID"] = ORIGINAL_ID
    mail.set_content("Hello,\n\nhow do I get a refund?\n\nThanks,\nDana\n-- \nDana Reyes\n")
    asyncio.run(aiosmtplib.send(mail, hostname="127.0.0.1", port=stack.email_port))

    entry = outbox_email(stack.ingress.url, "dana@customer.example")
    headers = entry["headers"]
    assert headers["In-Reply-To"] == ORIGINAL_ID, "threaded under the customer's mail"
    assert headers["References"] == ORIGINAL_ID
    assert headers["Subject"] == entry["subject"] == "Re: Refund"
    assert headers["From"] == stack.settings.support_address and headers["To"] == "dana@customer.example"
    assert headers["Auto-Submitted"] == "auto-replied"
    domain = stack.settings.support_address.rpartition("@")[2]
    assert conversation_from_headers(headers["Message-ID"], None, domain), "our Message-ID names the conversation"
    assert "refund" in entry["text"].lower(), "the plain text"
    assert entry["html"].startswith("<!doctype html>") and "refund" in entry["html"].lower(), "the HTML alternative"
    assert entry["status"] == "pending"
