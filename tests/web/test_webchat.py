"""Web chat: the widget in a real headless Chromium against the running stack, and the WebSocket protocol.

The stack is the one `supportflow run` starts (embedded broker, Triton, PostgreSQL with the demo
shop, workers, the HTTP ingress serving the demo page). Chromium is Debian's, driven by
Playwright (`playwright install` cannot download browsers here).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pipelines.settings import Settings
from pipelines.stack import Stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("webchat-stack")
    with Stack(Settings(data_dir=data_dir, http_port=0)) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[object]:
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (make test installs it)")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_the_widget_sends_shows_the_reply_and_keeps_the_history_on_reload(stack, browser, tmp_path):
    assert stack.ingress is not None
    page = browser.new_page()
    page.goto(stack.ingress.url + "/")
    page.fill("#sf-input", "how do I get a refund?")
    page.click("#sf-send")
    page.wait_for_selector(".sf-agent", timeout=30_000)
    reply = page.inner_text(".sf-agent")
    assert "refund" in reply.lower()
    page.screenshot(path=str(tmp_path / "webchat-reply.png"))

    page.reload()
    page.wait_for_selector(".sf-agent", timeout=15_000)
    assert page.inner_text(".sf-customer") == "how do I get a refund?", "the history came back after a reload"
    assert page.inner_text(".sf-agent") == reply
    page.screenshot(path=str(tmp_path / "webchat-history.png"))
    assert (tmp_path / "webchat-history.png").stat().st_size > 1000
    print(f"screenshots: {tmp_path}")


def test_the_protocol_refuses_bad_frames_and_foreign_tokens(stack):
    from pipelines.ingress import build_ingress

    app = build_ingress(stack.settings, stack.topology)
    with TestClient(app) as client, client.websocket_connect("/v1/chat") as socket:
        socket.send_text("not json")
        assert socket.receive_json()["type"] == "error"
        socket.send_text(json.dumps({"type": "message", "text": "hi"}))
        assert socket.receive_json() == {"type": "error", "error": "say hello first"}
        socket.send_text(json.dumps({"type": "hello", "token": "someone-else.forged-mac"}))
        welcome = socket.receive_json()
        assert welcome["type"] == "welcome" and welcome["history"] == []
        assert welcome["token"] != "someone-else.forged-mac", "a token this ingress did not sign starts a new session"
        socket.send_text(json.dumps({"type": "message", "text": "x" * 5000}))
        assert "at most 4000 characters" in socket.receive_json()["error"]
