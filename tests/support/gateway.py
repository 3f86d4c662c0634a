"""The ingress app on a real broker for the gateway's tests, and what it published on `sf.ingress`."""

from __future__ import annotations

import json

from starlette.applications import Starlette

from pipelines.runtime.app import ensure_topics
from pipelines.runtime.settings import Settings
from pipelines.runtime.topology import load_topology
from pipelines.services.ingress import build_ingress
from tests.support.stream import read_topics


def app_for(bootstrap: str, **extra: object) -> Starlette:
    s = Settings(kafka_bootstrap_servers=bootstrap, kafka_exact_offsets=True, **extra)
    topology = load_topology(s.topology_file)
    ensure_topics(s, topology)
    return build_ingress(s, topology)


def published(bootstrap: str) -> list[dict]:
    records = read_topics(bootstrap, ["sf.ingress"], until=lambda rs: False, timeout_s=2)
    return [json.loads(r.value) for r in records]
