"""The webhook deliverer end to end: events recorded on sf.webhooks of a real tansu broker, delivered to
tests/support/http_recorder.py (a real local HTTP server, the only stand-in: the tenant's receiver),
in process and as the `supportflow senders` process SIGKILLed mid-retry.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from connectors.backends.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify_signature
from pipelines.devstack.embedded import free_port
from pipelines.runtime.settings import PROJECT_DIR
from schemas import DeadLetter
from tests.support.http_recorder import Reply, serve
from tests.support.stream import read_topics
from tests.support.webhooks import (
    SECRET,
    cancel_orders,
    counted,
    create_webhook_topics,
    deliverer,
    until,
    webhook_settings,
)

ATTEMPTS = "supportflow_webhook_attempts_total"
DELIVERIES = "supportflow_webhook_deliveries_total"


async def test_a_delivery_to_a_receiver_that_is_down_arrives_once_it_is_up_with_one_delivery_id(broker, tmp_path):
    port = free_port()  # nothing listens there yet: the receiver is down
    s = webhook_settings(broker.bootstrap, f"http://127.0.0.1:{port}/hooks", tmp_path)
    create_webhook_topics(s)
    refused, delivered = counted(ATTEMPTS, result="connect_error"), counted(DELIVERIES, outcome="delivered")
    async with deliverer(s):
        await cancel_orders(s, ("1000001", "k-down-1"))
        await until(lambda: counted(ATTEMPTS, result="connect_error") >= refused + 2, "two refused attempts")
        with serve(port=port) as receiver:
            receiver.fail("/hooks", times=1, status=503)  # up, but busy once more
            await until(lambda: counted(DELIVERIES, outcome="delivered") == delivered + 1, "the delivery")
            seen = receiver.to("/hooks")
    assert len(seen) == 2, "a 503, then the 200 that ends the retries"
    assert {r.headers[DELIVERY_HEADER.lower()] for r in seen} == {"k-down-1"}, "one delivery id on every attempt"
    assert len({r.body for r in seen}) == 1, "the same bytes on every attempt"
    assert all(verify_signature(SECRET, r.headers[SIGNATURE_HEADER.lower()], r.body) for r in seen)
    sent = json.loads(seen[0].body)
    assert sent["type"] == "order.cancelled" and sent["data"]["result"]["status"] == "cancelled"


async def test_a_permanent_4xx_is_dead_lettered_with_its_reason_and_later_deliveries_go_on(broker, tmp_path):
    with serve() as receiver:
        receiver.reply("/hooks", Reply(410, {"error": "unsubscribed"}), then=Reply(200, {}))
        s = webhook_settings(broker.bootstrap, f"{receiver.url}/hooks", tmp_path)
        create_webhook_topics(s)
        async with deliverer(s):
            # one customer's events, so one partition: the second waits behind the first
            await cancel_orders(s, ("1000001", "k-refused"), ("1000002", "k-after"))
            await until(lambda: len(receiver.to("/hooks")) >= 2, "the later delivery")
            # one lane per customer: "k-after" went out only once "k-refused" was finished (dead-lettered)
            letters = read_topics(broker.bootstrap, ["sf.dlq"], until=lambda rs: len(rs) >= 1, timeout_s=30)
        seen = [r.headers[DELIVERY_HEADER.lower()] for r in receiver.to("/hooks")]
    assert seen == ["k-refused", "k-after"], "refused once, not retried; the next one delivered"
    [letter] = [DeadLetter.model_validate_json(r.value) for r in letters]
    assert letter.stage == "webhooks" and letter.key == "k-refused"
    assert letter.error == f"HTTP 410 after 1 attempt(s) to {receiver.url}/hooks"
    record = json.loads(letter.original)
    assert record["reason"] == "HTTP 410" and record["last_status"] == 410
    assert record["event"]["id"] == "k-refused" and record["event"]["data"]["arguments"] == {"order_number": "1000001"}
    assert SECRET not in letter.original


def process_env(bootstrap: str, url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """A child's environment: the user's without SUPPORTFLOW_*, then one webhook subscriber at `url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    env.update(
        {
            "PYTHONPATH": str(PROJECT_DIR),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true",
            "SUPPORTFLOW_DATA_DIR": str(tmp_path),
            "SUPPORTFLOW_WEBHOOKS": json.dumps([{"url": url, "secret": SECRET, "events": ["*"]}]),
            "SUPPORTFLOW_WEBHOOK_RETRY_INITIAL_S": "0.05",
            **extra,
        }
    )
    return env


def start_senders(tmp_path: Path, env: dict[str, str], run: int) -> tuple[subprocess.Popen[bytes], Path, Path]:
    ready, log = tmp_path / f"senders-{run}.ready", tmp_path / f"senders-{run}.log"
    argv = [sys.executable, "-m", "pipelines.cli", "senders", "--ready-file", str(ready)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, ready, log


async def test_a_delivery_pending_when_the_deliverer_is_sigkilled_arrives_after_the_restart(
    broker, postgres_dsn, tmp_path
):
    port = free_port()  # the receiver is down while the first deliverer retries
    url = f"http://127.0.0.1:{port}/hooks"
    s = webhook_settings(broker.bootstrap, url, tmp_path)
    create_webhook_topics(s)
    env = process_env(broker.bootstrap, url, tmp_path, DATABASE_URL=postgres_dsn)
    await cancel_orders(s, ("1000001", "k-killed"))
    first, _, log = start_senders(tmp_path, env, 1)
    second: subprocess.Popen[bytes] | None = None
    try:
        retrying = "webhook k-killed to " + url
        await until(lambda: retrying in log.read_text(), f"the deliverer retrying: {log}", timeout_s=90)
        first.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
        with serve(port=port) as receiver:
            second, ready, log = start_senders(tmp_path, env, 2)
            await until(lambda: bool(receiver.to("/hooks")), f"the delivery after the restart: {log}", timeout_s=90)
            await until(ready.exists, "the restarted senders' ready file")
            second.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait, 60) == 0, log.read_text()
            seen = receiver.to("/hooks")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert {r.headers[DELIVERY_HEADER.lower()] for r in seen} == {"k-killed"}, "the same delivery id after the kill"
    assert all(verify_signature(SECRET, r.headers[SIGNATURE_HEADER.lower()], r.body) for r in seen)


CANCEL_TOOL = """
tools:
  - name: acme.cancel
    description: cancel an order
    method: POST
    url: {url}/cancellations
    writes: true
    arguments:
      order: {{type: string, required: true}}
    body:
      order: order
    response:
      status: status
"""


async def test_the_webhook_of_a_write_survives_the_worker_killed_right_after_the_write(broker, postgres_dsn, tmp_path):
    """The issue's case: on main the announcement lived only in the worker's memory, retrying."""
    port = free_port()  # the receiver is down when the worker makes the write
    url = f"http://127.0.0.1:{port}/hooks"
    create_webhook_topics(webhook_settings(broker.bootstrap, url, tmp_path))
    with serve() as backend:
        backend.reply("/cancellations", then=Reply(200, {"status": "cancelled"}))
        tools = tmp_path / "tools.yaml"
        tools.write_text(CANCEL_TOOL.format(url=backend.url))
        env = process_env(broker.bootstrap, url, tmp_path, SUPPORTFLOW_REST_TOOLS_FILE=str(tools))
        call = ["acme.cancel", "C000001", "k-worker", '{"order": "1"}']
        argv = [sys.executable, "-m", "tests.support.tool_worker", *call]
        worker = subprocess.Popen(argv, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert worker.stdout is not None
            said = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 60)
            assert said == b"called\n", said + worker.stdout.read()
        finally:
            worker.kill()  # SIGKILL, right after the write
            worker.wait()
        assert len(backend.to("/cancellations")) == 1
    senders: subprocess.Popen[bytes] | None = None
    with serve(port=port) as receiver:
        try:
            env = process_env(broker.bootstrap, url, tmp_path, DATABASE_URL=postgres_dsn)
            senders, _, log = start_senders(tmp_path, env, 1)
            await until(lambda: bool(receiver.to("/hooks")), f"the delivery: {log}", timeout_s=90)
            seen = receiver.to("/hooks")
        finally:
            if senders is not None:
                senders.kill()
                senders.wait()
    assert {r.headers[DELIVERY_HEADER.lower()] for r in seen} == {"k-worker"}
    sent = json.loads(seen[0].body)
    assert sent["type"] == "acme.cancel" and sent["data"]["result"] == {"status": "cancelled"}
