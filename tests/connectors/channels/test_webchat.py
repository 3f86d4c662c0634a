"""Hostile frames on the web chat socket: each gets an error frame, the socket stays usable, nothing is published.

The real ingress app (Starlette's TestClient over its ASGI interface) against a real tansu broker;
`sf.ingress` is read back to prove what was, and was not, published. The widget's own behaviour
is tested in a browser (tests/web/test_webchat.py).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient

from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.ingress import build_ingress
from tests.support.hostile import HOSTILE
from tests.support.stream import read_topics


def app_for(bootstrap: str) -> Any:
    settings = Settings(kafka_bootstrap_servers=bootstrap, kafka_exact_offsets=True)
    topology = load_topology(settings.topology_file)
    ensure_topics(settings, topology)
    return build_ingress(settings, topology)


def frame(text: bytes) -> bytes:
    return b'{"type": "message", "text": ' + text + b', "client_message_id": "hostile"}'


def test_hostile_frames_get_an_error_frame_and_the_socket_stays_usable(broker):
    """Including `"a\\u0000b"`, which was acked and published, and then stopped the conversation store's sink."""
    with TestClient(app_for(broker.bootstrap)) as client, client.websocket_connect("/v1/chat") as socket:
        socket.send_text(json.dumps({"type": "hello"}))
        assert socket.receive_json()["type"] == "welcome"
        answers = {}
        for case in HOSTILE:
            body = case.body(frame)
            try:
                socket.send_text(body.decode("utf-8"))
            except UnicodeDecodeError:  # a text frame is UTF-8 by the protocol: invalid bytes come as a binary one
                socket.send_bytes(body)
            answer = socket.receive_json()
            answers[case.name] = (answer["type"], answer.get("code"), case.says in answer.get("error", ""))
        assert answers == {case.name: ("error", "invalid_frame", True) for case in HOSTILE}

        socket.send_bytes(json.dumps({"type": "message", "text": "a binary frame is read too"}).encode())
        assert socket.receive_json()["type"] == "ack", "a binary frame no longer takes the socket down"
        assert socket.receive_json()["type"] == "typing"
        socket.send_text(json.dumps({"type": "message", "text": "where is my order 1234567?"}))
        assert socket.receive_json()["type"] == "ack"

    records = read_topics(broker.bootstrap, ["sf.ingress"], until=lambda rs: len(rs) >= 2, timeout_s=20)
    texts = [json.loads(r.value)["text"] for r in records if r.value]
    assert texts == ["a binary frame is read too", "where is my order 1234567?"], "nothing refused was published"
