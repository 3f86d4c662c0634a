"""Topic administration: wait for the cluster, create the topology's topics with their partition counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger("connectors.kafka")


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] | None = None


def wait_for_broker(conf: dict[str, Any], timeout_s: float = 30.0) -> None:
    """Block until the cluster answers a metadata request, or raise with the last error."""
    admin = AdminClient({**conf, "logger": log})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"Kafka at {conf.get('bootstrap.servers')} did not answer within {timeout_s:.0f}s: {last}")


def create_topics(conf: dict[str, Any], topics: Iterable[TopicPlan], timeout_s: float = 30.0) -> list[str]:
    """Create missing topics with their partition counts; report existing ones with other counts.

    Brokers may auto-create an unknown topic with a default partition count on first use, which
    would silently break co-partitioning with the state tables; so topics are made up front.
    """
    admin = AdminClient({**conf, "logger": log})
    existing = admin.list_topics(timeout=timeout_s).topics
    wanted = list(topics)
    created: list[str] = []
    new = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication_factor, config=t.config or {})
        for t in wanted
        if t.name not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    for plan in wanted:
        found = len(existing[plan.name].partitions) if plan.name in existing else plan.partitions
        if found != plan.partitions:
            raise RuntimeError(f"topic {plan.name} has {found} partitions; the topology says {plan.partitions}")
    return created
