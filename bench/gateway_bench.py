"""Gateway load: requests/s and latency of the REST and webhook endpoints, and WebSocket sessions held.

    .venv/bin/python bench/gateway_bench.py [--seconds 15] [--concurrency 64] [--sessions 1000]

Starts an embedded tansu and one `supportflow ingress` process (the gateway as deployed: its own
process, publishing to the broker; no workers, so only the gateway is measured) and drives it
from this process with httpx (HTTP/1.1 keep-alive connections) and the `websockets` client:

- REST: `POST /v1/messages` on the `api` channel with an API key (`messages:write`): validated, rate-limited per
  sender, published; answered 202;
- webhook: `POST /webhooks/twilio/messages` signed the way Twilio signs (when that route exists);
- WebSocket: `--sessions` web chat sessions opened (`hello` → `welcome`) and held together, then
  one message sent on each (→ `ack`), with the gateway process's resident memory.
Every sender is distinct, so the per-sender rate limits never refuse a request. Results go to
`bench/gateway_results.json`. Load generator and gateway share the machine's 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from connectors._process import free_port, spawn, stop  # noqa: E402
from pipelines.devstack.embedded import EmbeddedBroker  # noqa: E402
from pipelines.evaluation.bench import wait_for_ingress  # noqa: E402
from pipelines.evaluation.provenance import source_state  # noqa: E402
from pipelines.runtime.app import ensure_topics  # noqa: E402
from pipelines.runtime.settings import Settings  # noqa: E402
from pipelines.runtime.topology import load_topology  # noqa: E402

TWILIO_TOKEN = secrets.token_hex(16)
API_KEY = secrets.token_urlsafe(32)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)


async def hammer(base: str, seconds: float, concurrency: int, make_request: Any) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                n = next(counter)
                started = time.perf_counter()
                response = await make_request(client, n)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "statuses": statuses,
        "concurrency": concurrency,
        "seconds": round(elapsed, 1),
    }


async def rest(client: httpx.AsyncClient, n: int) -> httpx.Response:
    body = {"channel": "api", "sender": f"bench-{n}", "text": "where is my order 1234567?"}
    return await client.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {API_KEY}"})


def twilio_request(base: str) -> Any:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TWILIO_TOKEN)
    url = f"{base}/webhooks/twilio/messages"

    async def send(client: httpx.AsyncClient, n: int) -> httpx.Response:
        params = {
            "From": f"+1555{n:07d}",
            "To": "+15550000000",
            "Body": "where is my order?",
            "MessageSid": f"SM{n:032d}",
        }
        signature = validator.compute_signature(url, params)
        return await client.post("/webhooks/twilio/messages", data=params, headers={"X-Twilio-Signature": signature})

    return send


async def hold_sessions(ws_url: str, sessions: int, pid: int) -> dict[str, Any]:
    import websockets

    opened: list[Any] = []
    started = time.perf_counter()
    failures = 0

    async def open_one() -> None:
        nonlocal failures
        try:
            socket = await websockets.connect(ws_url, open_timeout=30, max_queue=16)
            await socket.send(json.dumps({"type": "hello"}))
            welcome = json.loads(await socket.recv())
            assert welcome["type"] == "welcome"
            opened.append(socket)
        except Exception:
            failures += 1

    for start in range(0, sessions, 100):  # in waves: a burst of thousands of handshakes is not the test
        await asyncio.gather(*(open_one() for _ in range(min(100, sessions - start))))
    open_s = time.perf_counter() - started
    rss_mb = _rss_mb(pid)
    latencies: list[float] = []

    async def round_trip(i: int, socket: Any) -> None:
        t0 = time.perf_counter()
        await socket.send(json.dumps({"type": "message", "text": "hello", "client_message_id": f"b{i}"}))
        while json.loads(await socket.recv())["type"] != "ack":
            pass
        latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(round_trip(i, s) for i, s in enumerate(opened)))
    send_s = time.perf_counter() - t0
    await asyncio.gather(*(s.close() for s in opened))
    return {
        "sessions_wanted": sessions,
        "sessions_held": len(opened),
        "failures": failures,
        "open_all_s": round(open_s, 2),
        "gateway_rss_mb_while_held": rss_mb,
        "one_message_each_s": round(send_s, 2),
        "ack_p50_ms": pct(latencies, 50) if latencies else None,
        "ack_p99_ms": pct(latencies, 99) if latencies else None,
    }


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def gateway_env(bootstrap: str, port: int) -> dict[str, str]:
    """A gateway as deployed: API keys, a Twilio token and a web chat secret from the environment; the per-address
    allowance raised, since every request here comes from 127.0.0.1 (a real gateway sees thousands of addresses);
    the per-channel-and-sender limits kept; the embedded broker's partition cap, as `ensure_topics` made them."""
    limits = {name: limit.model_dump() for name, limit in Settings().rate_limits.items()}
    limits["source"] = {"requests": 10_000_000, "per_seconds": 60}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTFLOW_")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        SUPPORTFLOW_KAFKA_EXACT_OFFSETS="true",
        SUPPORTFLOW_HTTP_PORT=str(port),
        SUPPORTFLOW_API_KEYS=json.dumps([{"key": API_KEY, "scopes": ["messages:write"]}]),
        SUPPORTFLOW_TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        SUPPORTFLOW_WEBCHAT_SECRET=secrets.token_urlsafe(32),
        SUPPORTFLOW_RATE_LIMITS=json.dumps(limits),
        SUPPORTFLOW_LOG_LEVEL="WARNING",
    )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "bench" / "gateway_results.json")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap, kafka_exact_offsets=True)
        ensure_topics(settings, load_topology(settings.topology_file))
        port = free_port()
        gateway = spawn([sys.executable, "-m", "pipelines.cli", "ingress"], Path(tmp) / "ingress.log",
                        env=gateway_env(broker.bootstrap, port))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_ingress(base, gateway, Path(tmp) / "ingress.log", timeout_s=60)
            results["rest_post_messages"] = asyncio.run(hammer(base, args.seconds, args.concurrency, rest))
            probe = httpx.post(f"{base}/webhooks/twilio/messages", data={}, timeout=5)
            if probe.status_code != 404:
                results["twilio_webhook"] = asyncio.run(
                    hammer(base, args.seconds, args.concurrency, twilio_request(base))
                )
            results["websocket_sessions"] = asyncio.run(
                hold_sessions(f"ws://127.0.0.1:{port}/v1/chat", args.sessions, gateway.pid)
            )
        finally:
            stop(gateway)
    results["measured_on"] = {**source_state(), "command": "python bench/gateway_bench.py " + " ".join(sys.argv[1:])}
    results["setup"] = {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "gateway": "one `supportflow ingress` process (uvicorn, one event loop), embedded tansu",
        "load_generator": "this process: httpx.AsyncClient keep-alive / websockets client, same machine",
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    refused = {
        name: part["statuses"]
        for name, part in results.items()
        if isinstance(part, dict) and any(not 200 <= int(code) < 300 for code in part.get("statuses", {}))
    }
    if refused:
        raise SystemExit(f"the gateway refused requests, so these figures measure refusals: {refused}")


if __name__ == "__main__":
    main()
