"""A small client for the HTTP ingress, used by `chat`, `demo` and tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Answer:
    message_id: str
    status: str  # replied | escalated | pending
    text: str
    detail: dict[str, Any]
    latency_ms: float


class IngressClient:
    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def send(self, text: str, sender: str, channel: str = "webchat", customer_id: str | None = None) -> str:
        body: dict[str, Any] = {"channel": channel, "sender": sender, "text": text}
        if customer_id:
            body["customer_id"] = customer_id
        response = self._http.post("/v1/messages", json=body)
        if response.status_code != 202:
            raise ValueError(f"ingress refused the message ({response.status_code}): {response.json().get('error')}")
        return str(response.json()["message_id"])

    def answer(self, message_id: str, wait_s: float = 15.0) -> Answer:
        started = time.perf_counter()
        deadline = time.monotonic() + wait_s
        data: dict[str, Any] = {"status": "pending"}
        while time.monotonic() < deadline:
            remaining = max(0.1, min(10.0, deadline - time.monotonic()))
            data = self._http.get(
                f"/v1/messages/{message_id}", params={"wait": remaining}, timeout=remaining + 5
            ).json()
            if data["status"] != "pending":
                break
        answer = data.get("answer") or {}
        if data["status"] == "escalated":
            text = f"[handed to a human agent: {answer.get('reason')}]"
        else:
            text = answer.get("text", "")
        return Answer(message_id, data["status"], text, answer, (time.perf_counter() - started) * 1000.0)

    def ask(
        self, text: str, sender: str, channel: str = "webchat", customer_id: str | None = None, wait_s: float = 15.0
    ) -> Answer:
        """Send and wait for the answer; `latency_ms` covers the whole round trip."""
        started = time.perf_counter()
        answer = self.answer(self.send(text, sender, channel, customer_id), wait_s)
        return Answer(
            answer.message_id, answer.status, answer.text, answer.detail, (time.perf_counter() - started) * 1000
        )

    def close(self) -> None:
        self._http.close()
