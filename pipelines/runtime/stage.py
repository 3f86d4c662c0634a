"""Run one record through a stage's chain: decode, operators, deliver, then state, then ack.

The order is what makes delivery at-least-once without doubles: outputs are delivered (and
awaited) before the record's state writes are applied and before its offset may be committed.
A crash anywhere replays the record; derived ids make the replay's outputs identical, and the
session table (written last) recognises a turn that was already fully answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_not_exception_type, wait_exponential

from connectors.inbound_body import BodyRefused, JsonLimits, parse_json
from connectors.kafka import DeliveryRejected
from operators.protocols import Clients, OperatorContext, StateTable
from pipelines.runtime.metrics import DELIVERY_RETRIES, OPERATOR_SECONDS, RECORDS, STAGE_SECONDS
from pipelines.runtime.topology import Node, Stage
from schemas import DeadLetter, Emitted, RawInbound, Record

log = logging.getLogger(__name__)

Send = Callable[[str, str | None, bytes], Awaitable[Any]]

# sf.ingress is a boundary: an outside Kafka client can write to it, so its records are read by the
# ingress's own strict parser (duplicate keys, NaN, huge numbers, deep nesting, control characters
# refused) rather than pydantic's lenient one; the bytes limit is Kafka's default message size
RAW_RECORD_LIMITS = JsonLimits(max_bytes=1_048_576, max_depth=64)


def decode_record(record_type: type[Record], value: bytes) -> Record:
    """`value` as a `record_type`; ValidationError or BodyRefused (a dead letter's reason) when it is not one."""
    if record_type is RawInbound:
        return RawInbound.model_validate(parse_json(value, RAW_RECORD_LIMITS))
    return record_type.model_validate_json(value)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OperatorFailed(Exception):
    def __init__(self, operator: str, error: BaseException) -> None:
        super().__init__(f"{operator}: {type(error).__name__}: {error}")
        self.operator, self.error = operator, error


class StagedTable:
    """A record's view of a state table: reads see its own writes; writes apply on commit."""

    def __init__(self, backing: StateTable[Any]) -> None:
        self._backing = backing
        self._writes: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self._writes[key] if key in self._writes else self._backing.get(key)

    def set(self, key: str, value: Any) -> None:
        self._writes[key] = value

    def commit(self) -> None:
        for key, value in self._writes.items():
            self._backing.set(key, value)
        self._writes.clear()


async def run_chain(root: Node, record: Record, ctx: OperatorContext, timeout_s: float = 30.0) -> list[Record]:
    """Walk the operators from `root`; return the records the chain ends with (none if dropped).

    Each operator gets `timeout_s`: a hung call would otherwise hold its conversation's lane,
    and every later offset of its partition, forever.
    """
    node: Node | None = root
    current: Record = record
    while node is not None:
        operator = node.operator
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                output = await operator.run(current, ctx)
        except TimeoutError:
            raise OperatorFailed(operator.name, TimeoutError(f"no result within {timeout_s:g}s")) from None
        except Exception as exc:
            raise OperatorFailed(operator.name, exc) from exc
        finally:
            OPERATOR_SECONDS.labels(operator.name).observe(time.perf_counter() - started)
        if output is None:
            return []
        if node.branches:
            label = operator.choose_branch(output)
            if label not in node.branches:
                raise OperatorFailed(operator.name, ValueError(f"chose unknown branch {label!r}"))
            node = node.branches[label]
        else:
            node = node.next
        current = output
    return list(current.records) if isinstance(current, Emitted) else [current]


class StageProcessor:
    """Processes one stage's records; knows nothing of faust beyond a `send` and the tables."""

    def __init__(
        self,
        stage: Stage,
        source_type: type[Record],
        topic_for: Callable[[type[Record]], str | None],
        dead_letter_topic: str,
        tables: Mapping[str, StateTable[Any]],
        send: Send,
        clients: Clients | None = None,
        clock: Any = None,
        tools: Any = None,
    ) -> None:
        self.stage = stage
        self.tools = tools
        self.source_type = source_type
        self.topic_for = topic_for
        self.dead_letter_topic = dead_letter_topic
        self.tables = tables
        self.send = send
        self.clients = clients
        self.clock = clock or SystemClock()

    def warm_up(self) -> None:
        ctx = OperatorContext(tables=self.tables, clock=self.clock, tools=self.tools, clients=self.clients)
        for node in self.stage.root.walk():
            node.operator.warm_up(ctx)

    async def process(self, value: bytes | None, key: bytes | None, topic: str, partition: int, offset: int) -> str:
        """Handle one source record end to end; return its outcome for metrics and tests."""
        started = time.perf_counter()
        # a null value (a compacted topic's tombstone) is a record only where the record type says what it means
        tombstone = self.source_type.from_null_value(key.decode("utf-8", "replace")) if value is None and key else None
        try:
            record = tombstone or decode_record(self.source_type, value or b"")
        except (ValidationError, BodyRefused) as exc:
            await self.dead_letter(value, key, topic, partition, offset, "decode", exc)
            return "dead_lettered"
        staged = {name: StagedTable(table) for name, table in self.tables.items()}
        ctx = OperatorContext(tables=staged, clock=self.clock, tools=self.tools, clients=self.clients)
        try:
            outputs = await run_chain(self.stage.root, record, ctx, self.stage.operator_timeout_s)
        except OperatorFailed as failed:
            log.warning(
                "stage %s: record %s/%s@%s dead-lettered: %s", self.stage.name, topic, partition, offset, failed
            )
            await self.dead_letter(value, key, topic, partition, offset, failed.operator, failed.error)
            return "dead_lettered"
        try:
            await self.deliver(outputs)
        except DeliveryRejected as rejected:
            log.warning(
                "stage %s: output of %s/%s@%s rejected: %s", self.stage.name, topic, partition, offset, rejected
            )
            await self.dead_letter(value, key, topic, partition, offset, "deliver", rejected)
            return "dead_lettered"
        for table in staged.values():
            table.commit()
        outcome = "emitted" if outputs else "dropped"
        RECORDS.labels(self.stage.name, outcome).inc()
        STAGE_SECONDS.labels(self.stage.name).observe(time.perf_counter() - started)
        return outcome

    async def deliver(self, outputs: list[Record]) -> None:
        """Send every output and wait until the broker has them all; retry Kafka errors with backoff.

        A record's outputs go to different topics, so they are sent together; order within a
        topic and key holds because the lane sends the next record's outputs only after these.
        """
        sends = []
        for record in outputs:
            topic = self.topic_for(type(record))
            if topic is None:
                raise RuntimeError(f"no topic carries {type(record).__name__}; `topology check` should have said so")
            sends.append(self._send_with_retry(topic, record.partition_key(), record.to_bytes()))
        await asyncio.gather(*sends)

    async def _send_with_retry(self, topic: str, key: str | None, value: bytes) -> None:
        """Retry until the broker has it; only a record the cluster will never take is given up on."""

        def report(state: RetryCallState) -> None:  # the broker is away: keep the record, never drop it
            DELIVERY_RETRIES.labels(self.stage.name).inc()
            log.warning(
                "stage %s: delivery to %s failed (%s); retrying in %.1fs",
                self.stage.name,
                topic,
                state.outcome.exception() if state.outcome else None,
                state.next_action.sleep if state.next_action else 0.0,
            )

        async for attempt in AsyncRetrying(
            retry=retry_if_not_exception_type(DeliveryRejected),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=5.0),
            before_sleep=report,
            reraise=True,
        ):
            with attempt:
                await self.send(topic, key, value)

    async def dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        operator: str,
        error: BaseException,
    ) -> None:
        original = value or b""
        text_key = key.decode("utf-8", "replace") if key else None
        letter = DeadLetter(
            dead_letter_id="d-" + hashlib.sha256(f"{topic}:{partition}:{offset}:{operator}".encode()).hexdigest()[:24],
            stage=self.stage.name,
            operator=operator,
            error_type=type(error).__name__,
            error=_describe(error),
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=text_key,
            original=original.decode("utf-8", "replace"),
            original_b64=base64.b64encode(original).decode("ascii"),
        )
        try:
            await self._send_with_retry(self.dead_letter_topic, text_key, letter.to_bytes())
        except DeliveryRejected:
            # Too large even as a dead letter: keep the reason and where the original still is.
            slim = letter.model_copy(
                update={
                    "original": "",
                    "original_b64": "",
                    "error": f"{letter.error} (original {len(original)} bytes left out; "
                    f"it stays at {topic}/{partition}@{offset})",
                }
            )
            await self._send_with_retry(self.dead_letter_topic, text_key, slim.to_bytes())
        RECORDS.labels(self.stage.name, "dead_lettered").inc()


def _describe(error: BaseException) -> str:
    """One readable line per problem; pydantic's own wording names the field and the fault."""
    if isinstance(error, ValidationError):
        parts = []
        for err in error.errors(include_url=False):
            loc = ".".join(str(p) for p in err["loc"]) or "record"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    return str(error) or type(error).__name__
