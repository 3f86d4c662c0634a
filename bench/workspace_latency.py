"""The live queue's update latency in the browser: from producing an escalation to its row in the page.

    .venv/bin/python bench/workspace_latency.py [--samples 300] [--gap-ms 100] [--out bench/workspace_latency.json]

Starts an embedded tansu and one `supportflow workspace` process (the web app and the escalation
router, as `supportflow run` starts it), signs a supervisor in with Debian's headless Chromium
(Playwright), and then, one escalation at a time: notes the wall-clock time, produces the
Escalation record to `sf.escalations` (as `escalate` does), and waits for its row in the page.
The page stamps each new row the moment it enters the DOM (a MutationObserver reading
`performance.timeOrigin + performance.now()`), so the figure is: produce → broker → router
(consume, apply, publish the state row and wait for the broker's ack) → WebSocket frame →
the page's render. Each entry is then resolved through the HTTP API, so the queue stays short
and every sample sees the same page. Everything shares the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from connectors._process import free_port, spawn, stop  # noqa: E402
from connectors.kafka import make_producer  # noqa: E402
from pipelines.devstack.embedded import EmbeddedBroker  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.handover.auth import hash_password  # noqa: E402
from pipelines.runtime.app import ensure_topics  # noqa: E402
from pipelines.runtime.settings import Settings  # noqa: E402
from pipelines.runtime.topology import load_topology  # noqa: E402
from schemas import CustomerProfile, Escalation, NluResult, Sentiment, utcnow  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip
PASSWORD = "bench-supervisor-password"

# Stamps the first time each queue row appears, in epoch milliseconds.
OBSERVER = """
() => {
  window.__seen = {};
  const stamp = () => {
    const now = performance.timeOrigin + performance.now();
    for (const row of document.querySelectorAll('.queue-row[data-escalation-id]')) {
      const id = row.getAttribute('data-escalation-id');
      if (!(id in window.__seen)) window.__seen[id] = now;
    }
  };
  new MutationObserver(stamp).observe(document.getElementById('queue-pane'), {childList: true, subtree: true});
}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)


def escalation(n: int) -> Escalation:
    customer = f"bench-customer-{n}"
    return Escalation(
        escalation_id=f"x-bench-{n:05d}",
        message_id=f"m-bench-{n:05d}",
        conversation_id=f"conv-{customer}",
        customer_id=customer,
        session_id=f"{customer}-s1",
        channel="webchat",
        recipient=f"web-{customer}",
        text="I want to talk to a person please",
        reason="customer_requested_human",
        nlu=NluResult(
            intent="contact_human_agent",
            confidence=0.97,
            sentiment=Sentiment(label="neutral", score=0.0),
            model_used="bench",
        ),
        profile=CustomerProfile(customer_id=customer, display_name=f"Customer {n}"),
        created_at=utcnow(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300, help="escalations to time")
    parser.add_argument("--warmup", type=int, default=10, help="escalations sent first and not counted")
    parser.add_argument("--gap-ms", type=float, default=100.0, help="pause between one sample's end and the next")
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "workspace_latency.json")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="sf-workspace-bench-"))
    agents = tmp / "agents.yaml"
    agents.write_text(yaml.safe_dump({"agents": [
        {"agent_id": "sam", "display_name": "Sam", "role": "supervisor", "queues": ["general"],
         "password_hash": hash_password(PASSWORD)},
    ]}))  # fmt: skip
    with EmbeddedBroker(log_file=tmp / "tansu.log") as broker:
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap, kafka_exact_offsets=True)
        ensure_topics(settings, load_topology(settings.topology_file))
        port = free_port()
        ready = tmp / "workspace.ready"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "SUPPORTFLOW_KAFKA_EXACT_OFFSETS": "true",
            "SUPPORTFLOW_DATA_DIR": str(tmp / "data"),
            "SUPPORTFLOW_WORKSPACE_AGENTS_FILE": str(agents),
            "SUPPORTFLOW_LOG_LEVEL": "WARNING",
        })  # fmt: skip
        argv = [sys.executable, "-m", "pipelines.cli", "workspace", "--port", str(port), "--ready-file", str(ready)]
        process = spawn(argv, tmp / "workspace.log", env={**env, "PYTHONPATH": str(PROJECT_DIR)})
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the workspace did not start; see {tmp / 'workspace.log'}")
                time.sleep(0.1)
            result = measure(f"http://127.0.0.1:{port}", broker.bootstrap, args, sync_playwright)
        finally:
            stop(process)
    result["measured_on"] = {
        **source_state(),
        "command": "python bench/workspace_latency.py " + " ".join(sys.argv[1:]),
    }
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "load_average_1m": round(os.getloadavg()[0], 2)}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples_ms"}, indent=2))
    print(f"written to {args.out}")


def measure(url: str, bootstrap: str, args: argparse.Namespace, sync_playwright: Any) -> dict[str, Any]:
    producer = make_producer({"bootstrap.servers": bootstrap}, exact_offsets=True, **{"linger.ms": 0})
    api = httpx.Client(base_url=url, timeout=15)
    assert api.post("/workspace/api/login", json={"agent_id": "sam", "password": PASSWORD}).is_success
    latencies: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(url + "/workspace")
        page.fill("#login-agent", "sam")
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_selector("#live:not([hidden])")
        page.evaluate(OBSERVER)
        for n in range(args.warmup + args.samples):
            record = escalation(n)
            sent_ms = time.time() * 1000
            producer.produce("sf.escalations", key=record.partition_key(), value=record.to_bytes())
            producer.flush(10)
            seen = None
            deadline = time.monotonic() + 15
            while seen is None and time.monotonic() < deadline:
                seen = page.evaluate("(id) => window.__seen[id] ?? null", record.escalation_id)
                if seen is None:
                    page.wait_for_timeout(5)
            if seen is None:
                raise SystemExit(f"{record.escalation_id} never appeared in the page")
            if n >= args.warmup:
                latencies.append(seen - sent_ms)
            resolve = {"action_id": f"bench-resolve-{n:05d}", "resolution_code": "resolved"}
            api.post(f"/workspace/api/entries/{record.escalation_id}/resolve", json=resolve).raise_for_status()
            page.wait_for_timeout(args.gap_ms)
        browser.close()
    return {
        "figure": "the live queue's update latency in the browser: produce an escalation -> its row in the page",
        "samples": len(latencies),
        "p50_ms": pct(latencies, 50),
        "p90_ms": pct(latencies, 90),
        "p99_ms": pct(latencies, 99),
        "max_ms": round(max(latencies), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "min_ms": round(min(latencies), 1),
        "setup": "embedded tansu, one `supportflow workspace` process, headless Debian chromium via Playwright; "
        "one escalation at a time, each resolved before the next; a supervisor's page",
        "samples_ms": [round(x, 1) for x in latencies],
    }


if __name__ == "__main__":
    main()
