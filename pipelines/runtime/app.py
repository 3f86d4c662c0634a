"""Build the faust app from the topology: one agent per stage, Kafka-backed tables, the reaper.

faust owns consumption, changelogs and rebalancing; each agent hands its records to keyed lanes
(order per key, concurrency across keys). Which offset is committed is the worker's own
`OffsetLedger` (`offsets.py`): a record counts as finished only once its outputs and state are
delivered, and a record still in flight, failed or cancelled holds back the commit of every
later offset in its partition.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT, StreamT

from connectors.backends.registry import ToolRegistry
from connectors.kafka import AsyncProducer
from connectors.kafka.topic_table import TopicTable
from operators.protocols import KeepsSessions
from pipelines.runtime.clients import RuntimeClients
from pipelines.runtime.lanes import KeyedLanes
from pipelines.runtime.metrics import IN_FLIGHT
from pipelines.runtime.offsets import (
    OffsetLedger,
    PartitionLedger,
    Verdict,
    commit_from_ledger,
    drain_changelogs_before_commit,
    seek_epoch,
    sought_offset,
    track_seek_epochs,
)
from pipelines.runtime.reply_stream import reply_streams_for
from pipelines.runtime.settings import Settings
from pipelines.runtime.stage import StageProcessor, SystemClock
from pipelines.runtime.topology import Stage, Topology
from schemas import ConversationEvent, EventMetadata, Record, SessionContext, record_types

log = logging.getLogger(__name__)

REWIND_TIMEOUT_S = 10.0


class RecordTable:
    """A faust table seen as a StateTable: str keys, pydantic records stored as their JSON bytes.

    Keys go to the changelog as their raw UTF-8 bytes, exactly like the source topic's keys, so
    the producer's partitioner puts a key's state in the partition of the key's records (faust
    would JSON-encode a str key, and `"alice"` hashes elsewhere than `alice`). pydantic's Rust
    (de)serializer does the JSON work, and the parsed record is kept beside the bytes it came
    from, so a session read on every turn is parsed once per change.
    """

    def __init__(self, table: faust.Table, record_type: type[Record] | None) -> None:
        self.table = table
        self.record_type = record_type
        self._parsed: dict[str, tuple[Any, Record]] = {}

    def get(self, key: str) -> Any:
        value = self.table.get(key.encode("utf-8"))
        if value is None or self.record_type is None:
            return value
        cached = self._parsed.get(key)
        if cached is not None and cached[0] is value:
            return cached[1]
        record = self.record_type.model_validate_json(value)
        self._parsed[key] = (value, record)
        return record

    def set(self, key: str, value: Any) -> None:
        if self.record_type is not None and isinstance(value, Record):
            stored = value.model_dump_json().encode("utf-8")
            self.table[key.encode("utf-8")] = stored
            self._parsed[key] = (stored, value)
        else:
            self.table[key.encode("utf-8")] = value

    def items(self) -> list[tuple[str, Any]]:
        keys = [k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in list(self.table.keys())]
        return [(k, self.get(k)) for k in keys]


def changelog_topic(app_id: str, table: str) -> str:
    return f"{app_id}-{table}-changelog"


def table_partitions(topology: Topology) -> dict[str, int]:
    """A table lives beside its stage's source topic, partition for partition."""
    counts: dict[str, int] = {}
    for stage in topology.stages.values():
        for table in stage.tables:
            if topology.spec.tables[table].topic is None:  # a topic mirror has no changelog
                counts[table] = topology.spec.topics[stage.source].partitions or 1
    return counts


def _use_fetch_max_wait(milliseconds: int) -> None:
    """faust fixes aiokafka's fetch wait at 1500 ms; tansu holds a multi-partition fetch that long.

    aiokafka reads `_fetch_max_wait_ms` when its fetcher starts, so setting it on the freshly
    built consumer is enough. Against Apache Kafka a fetch returns as soon as data arrives and
    this only bounds idle polling.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_supportflow_wait_ms", None) == milliseconds:
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = milliseconds
        return consumer

    create_worker_consumer._supportflow_wait_ms = milliseconds  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def consumer_group(topology: Topology, stages: list[str]) -> str:
    """The faust app id (and so the consumer group) of a worker running `stages`.

    Workers running stages with tables use the topology's app id, which also names the tables'
    changelogs. A worker running only table-less stages (the `analytics` redaction stage) gets a
    group of its own, so it can run as a separate, lower-priority process without taking
    partitions of topics it does not read.
    """
    if set(stages) == set(topology.stages) or any(topology.stages[s].tables for s in stages):
        return topology.spec.app_id
    return f"{topology.spec.app_id}-{'+'.join(sorted(stages))}"


class SupportflowApp(faust.App):
    """The faust app plus the topic mirrors its stages read, and the ledger its commits come from."""

    topic_mirrors: list[TopicTable]
    offset_ledger: OffsetLedger


def build_app(settings: Settings, topology: Topology, stage_names: list[str] | None = None) -> SupportflowApp:
    """A faust app running the named stages (all by default) against `settings`' Kafka."""
    assert settings.kafka_bootstrap_servers, "the broker address is known before workers start"
    topology = topology.with_partitions_at_most(settings.max_partitions)
    spec = topology.spec
    _use_fetch_max_wait(settings.fetch_max_wait_ms)
    commit_from_ledger()
    track_seek_epochs()
    drain_changelogs_before_commit()
    wanted = stage_names or list(topology.stages)
    unknown = sorted(set(wanted) - set(topology.stages))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; the topology has {', '.join(topology.stages)}")
    datadir = Path(tempfile.mkdtemp(prefix="supportflow-worker-"))
    app = SupportflowApp(
        consumer_group(topology, wanted),
        broker=[f"kafka://{s.strip()}" for s in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        table_standby_replicas=0,
        topic_allow_declare=True,
        topic_disable_leader=True,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        producer_max_batch_size=1 if settings.exact_offsets else 16384,
        producer_linger=0.0 if settings.exact_offsets else 0.002,
        stream_wait_empty=True,
        broker_credentials=_credentials(settings),
    )
    app.topic_mirrors = []
    ledger = app.offset_ledger = OffsetLedger(topology.stages[name].source for name in wanted)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app: faust.App, revoked: set[Any], **_: Any) -> None:
        # faust has waited for the records in flight and committed the ledger's positions by now;
        # a partition assigned again commits nothing until faust has seeked it to the committed offset
        ledger.revoke(revoked)

    partitions = table_partitions(topology)

    raw_tables: dict[str, RecordTable | TopicTable] = {}
    for name in {t for s in wanted for t in topology.stages[s].tables}:
        record_name = spec.tables[name].record
        mirrored = spec.tables[name].topic
        if mirrored is not None:
            assert record_name is not None, "the topology checker requires a mirror's record type"
            mirror = TopicTable(
                settings.kafka_client_config(), mirrored, record_types()[record_name], settings.fetch_max_wait_ms
            )
            raw_tables[name] = mirror
            app.topic_mirrors.append(mirror)
            _install_topic_table(app, mirror)
            continue
        faust_table = app.Table(
            name,
            default=None,
            partitions=partitions[name],
            key_type=bytes,  # raw: see RecordTable
            value_type=bytes if record_name else None,
            use_partitioner=True,
        )
        raw_tables[name] = RecordTable(faust_table, record_types()[record_name] if record_name else None)

    sources = {
        topology.stages[name].source: app.topic(
            topology.stages[name].source,
            partitions=spec.topics[topology.stages[name].source].partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        for name in wanted
    }

    # Stage outputs go through librdkafka with batching: it partitions keys like faust (murmur2),
    # so they stay co-partitioned with the tables, and it costs the broker far fewer requests.
    # faust's own producer is left with the changelogs, where tansu needs one record per batch.
    outputs = AsyncProducer(settings.kafka_client_config(), **{"linger.ms": 1})
    send = outputs.send

    @app.on_before_shutdown.connect
    async def flush_outputs(app: faust.App, **_: Any) -> None:
        outputs.close()

    tools = ToolRegistry.from_settings(settings)
    clients = RuntimeClients(settings, reply_streams=reply_streams_for(settings, topology))

    @app.on_before_shutdown.connect
    async def close_tools(app: faust.App, **_: Any) -> None:
        await tools.close()
        await clients.close()

    for stage_name in wanted:
        stage = topology.stages[stage_name]
        processor = StageProcessor(
            stage=stage,
            source_type=topology.source_type(stage),
            topic_for=topology.topic_for,
            dead_letter_topic=spec.dead_letter_topic,
            tables={t: raw_tables[t] for t in stage.tables},
            send=send,
            clients=clients,
            tools=tools,
        )
        processor.warm_up()  # fail at start, with the operator's own error, not on the first record
        lanes = KeyedLanes(stage.max_in_flight)
        _install_stage(app, sources[stage.source], stage, processor, lanes)
        if "sessions" in stage.tables:
            _install_session_reaper(app, raw_tables["sessions"], lanes, send, topology, settings)
    return app


def _install_topic_table(app: faust.App, table: TopicTable) -> None:
    @app.on_before_shutdown.connect
    async def close_mirror(app: faust.App, **_: Any) -> None:
        table.close()


def _credentials(settings: Settings) -> Any:
    if not settings.kafka_sasl_mechanism:
        return None
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username or "", password=password, mechanism=settings.kafka_sasl_mechanism
    )


def _install_stage(
    app: SupportflowApp, topic: faust.TopicT, stage: Stage, processor: StageProcessor, lanes: KeyedLanes
) -> None:
    in_flight = IN_FLIGHT.labels(stage.name)
    ledger = app.offset_ledger

    async def consume(stream: StreamT) -> None:
        manual = stream.noack()
        async for event in manual.events():
            message = event.message
            # taken here, in offset order, before any later record of the partition can finish
            epoch = getattr(message, "fetch_epoch", 0)
            sought = sought_offset(app.consumer, message.tp, epoch)
            verdict, partition = ledger.admit(message.tp, message.offset, epoch, sought)
            if verdict is not Verdict.TAKE:
                await manual.ack(event)  # faust's own count of unfinished records; commits come from the ledger
                if verdict is Verdict.REWIND:
                    await _rewind(app, message.tp, partition)
                continue
            await lanes.submit(_lane_key(event), _job(app, manual, event, processor, partition))
            in_flight.set(lanes.in_flight)

    consume.__name__ = f"stage_{stage.name}"
    app.agent(topic, name=f"supportflow.stage.{stage.name}")(consume)


async def _rewind(app: SupportflowApp, tp: Any, partition: PartitionLedger) -> None:
    """Seek `tp` back to the first record that did not reach the stream, so it is read and processed."""
    offset = partition.next_offset
    assert offset is not None, "a rewind has an offset to go back to"
    try:
        await asyncio.wait_for(app.consumer.seek(tp, offset), REWIND_TIMEOUT_S)
    except TimeoutError as exc:
        # the commit is held at `offset`: a fresh worker (the supervisor starts one) reads from there
        log.error("seeking %s back to %d timed out; stopping the worker", tp, offset)
        await app.crash(exc)
        return
    except Exception:  # revoked meanwhile: its next owner reads from the committed offset, which is no later
        log.warning("could not seek %s back to %d", tp, offset, exc_info=True)
        return
    partition.rewound(seek_epoch(app.consumer, tp))


def _lane_key(event: EventT) -> str:
    key = event.key
    if key:
        return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
    return f"partition:{event.message.partition}"


def _job(app: faust.App, stream: StreamT, event: EventT, processor: StageProcessor, partition: PartitionLedger) -> Any:
    """Process one record; mark it done only if it was (its outputs delivered, or dead-lettered).

    A record whose processing is cancelled (shutdown, revoke) is not done, so it is not
    committed and its partition's next owner processes it again. `process` dead-letters
    whatever the record itself causes, so an error escaping it is the worker's (the broker
    refusing every retry is not one: that retries forever): the worker stops, unfinished, and
    the supervisor starts a fresh one, rather than skip the record or stall its partition.
    """

    async def job() -> None:
        message = event.message
        try:
            await processor.process(message.value, message.key, message.topic, message.partition, message.offset)
        except Exception as exc:
            log.exception(
                "record %s/%s@%s failed outside its stage; stopping the worker",
                message.topic,
                message.partition,
                message.offset,
            )
            await app.crash(exc)
            return
        partition.done(message.offset)
        await stream.ack(event)

    return job


def _install_session_reaper(
    app: faust.App, sessions: RecordTable, lanes: KeyedLanes, send: Any, topology: Topology, settings: Settings
) -> None:
    """Close sessions idle past their stage's limit and emit a session_closed event for each."""
    idle_limit = timedelta(minutes=30)
    for stage in topology.stages.values():
        for node in stage.root.walk():
            if isinstance(node.operator, KeepsSessions):
                idle_limit = node.operator.session_idle_limit
    events_topic = topology.topic_for(ConversationEvent)
    clock = SystemClock()

    @app.timer(settings.session_reaper_interval_s)
    async def reap_idle_sessions() -> None:
        now = clock.now()
        for customer_id, session in sessions.items():
            if not isinstance(session, SessionContext) or session.closed or lanes.busy(customer_id):
                continue
            if now - session.last_activity_at <= idle_limit:
                continue
            event = ConversationEvent(
                event_id=f"e-closed-{session.session_id}",
                event_type="session_closed",
                timestamp=now,
                conversation_id=session.conversation_id,
                session_id=session.session_id,
                customer_id=customer_id,
                channel=session.last_channel or "",
                metadata=EventMetadata(
                    latency_ms=0.0,
                    model_used="",
                ),
            )
            if events_topic:
                await send(events_topic, customer_id, event.to_bytes())
            session.closed = True
            sessions.set(customer_id, session)


def topic_plans(topology: Topology) -> list[Any]:
    """Every topic the topology needs, changelogs included, with partition counts."""
    from connectors.kafka import TopicPlan

    spec = topology.spec
    plans = [
        TopicPlan(
            name,
            t.partitions or 1,
            t.replication_factor,
            _topic_config(t),
        )
        for name, t in spec.topics.items()
    ]
    plans += [
        TopicPlan(changelog_topic(spec.app_id, table), count, 1, {"cleanup.policy": "compact"})
        for table, count in table_partitions(topology).items()
    ]
    return plans


def _topic_config(topic: Any) -> dict[str, str] | None:
    config: dict[str, str] = {}
    if topic.retention_ms:
        config["retention.ms"] = str(topic.retention_ms)
    if topic.compacted:
        config["cleanup.policy"] = "compact"
    return config or None


def ensure_topics(settings: Settings, topology: Topology) -> list[str]:
    """Create the topology's topics before any worker starts; return the ones created."""
    from connectors.kafka import create_topics, wait_for_broker

    conf = settings.kafka_client_config()
    wait_for_broker(conf)
    return create_topics(conf, topic_plans(topology.with_partitions_at_most(settings.max_partitions)))
