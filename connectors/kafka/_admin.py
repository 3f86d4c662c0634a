"""Topic administration: wait for the cluster, create the topology's topics with their partition counts."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
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


@dataclass(frozen=True)
class GroupLag:
    """How far one consumer group is behind: records between its committed offsets and the ends."""

    group: str
    lag: int
    partitions: int
    topics: tuple[str, ...]


def consumer_group_lag(conf: dict[str, Any], timeout_s: float = 5.0) -> list[GroupLag]:
    """Every consumer group the cluster knows, with its lag summed over the partitions of the topics it
    committed on (a partition with no commit yet counts from its low watermark).

    On tansu the end offset can trail a multi-record batch (see ENVIRONMENT), so the figure is a
    view for people, not a number to test against.
    """
    admin = AdminClient({**conf, "logger": log})
    listed = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout=timeout_s)
    reader = Consumer({**conf, "group.id": "supportflow-lag-probe", "enable.auto.commit": False, "logger": log})
    try:
        partitions_of = {name: list(t.partitions) for name, t in reader.list_topics(timeout=timeout_s).topics.items()}
        lags = []
        for group in sorted({g.group_id for g in listed.valid}):
            request = [ConsumerGroupTopicPartitions(group)]
            answer = admin.list_consumer_group_offsets(request, request_timeout=timeout_s)[group].result(timeout_s)
            committed = {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or []}
            topics = sorted({topic for topic, _ in committed if topic in partitions_of})
            lag = count = 0
            for topic in topics:
                for partition in partitions_of[topic]:
                    low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                    done = committed.get((topic, partition), -1)
                    lag += max(high - (done if done >= 0 else low), 0)
                    count += 1
            lags.append(GroupLag(group, lag, count, tuple(topics)))
        return lags
    finally:
        reader.close()
