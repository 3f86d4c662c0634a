"""Prometheus metrics of the stream workers, the sinks and the ingress."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RECORDS = Counter(
    "supportflow_records_total",
    "Records a stage finished, by outcome (emitted, dropped, dead_lettered).",
    ["stage", "outcome"],
)
OPERATOR_SECONDS = Histogram(
    "supportflow_operator_seconds",
    "Time spent in one operator's run per record.",
    ["operator"],
    buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "supportflow_stage_seconds",
    "Time from a record's arrival in a stage to its outputs being delivered.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge("supportflow_in_flight", "Records queued or running in a stage's lanes.", ["stage"])
DELIVERY_RETRIES = Counter(
    "supportflow_delivery_retries_total", "Output deliveries retried after a Kafka error.", ["stage"]
)
SINK_RECORDS = Counter("supportflow_sink_records_total", "Records a sink wrote, by source topic.", ["sink", "topic"])
SINK_BATCH_SECONDS = Histogram(
    "supportflow_sink_batch_seconds", "Time to write one batch to a sink's store.", ["sink"], buckets=LATENCY_BUCKETS
)
SINK_WRITE_FAILURES = Counter(
    "supportflow_sink_write_failures_total", "Batch writes that failed and were retried.", ["sink"]
)
SINK_DEAD_LETTERS = Counter(
    "supportflow_sink_dead_letters_total",
    "Records a consumer loop set aside on the dead-letter topic: refused by its sink, or failing alone on their data.",
    ["sink"],
)

WORKSPACE_ASSIGNMENT_SECONDS = Histogram(
    "supportflow_workspace_assignment_seconds",
    "Time from an escalation's creation to its first assignment to a human agent.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
WORKSPACE_QUEUE_DEPTH = Gauge("supportflow_workspace_queue_depth", "Escalations waiting for a human agent.")
WORKSPACE_COMMANDS = Counter(
    "supportflow_workspace_commands_total",
    "Workspace commands the router handled, by kind and outcome.",
    ["kind", "outcome"],
)
