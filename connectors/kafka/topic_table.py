"""A read-only table materialized from a whole topic, kept current by a background reader.

For reference data that every worker needs whatever partitions it owns, such as customer
profiles: a worker reads the topic from the beginning before it reports ready, then follows
it, so operators look a key up in memory and never query a database per message. The topic is
the truth (compacted: the latest record per key wins); this is a view of it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.kafka import consumer_config
from schemas import Record

log = logging.getLogger(__name__)

__all__ = ["ReadOnlyTable", "TopicTable"]


class ReadOnlyTable(Exception):
    """Raised when an operator writes to a table that mirrors a topic."""


class TopicTable:
    """Key → latest record of `topic`, plus every key a record lists in `index_keys()`.

    A record that declares `index_keys()` (a profile lists its contact addresses) is found
    under those keys too; a later record of the same key drops the index keys it no longer has.
    """

    def __init__(
        self, conf: dict[str, Any], topic: str, record_type: type[Record], fetch_max_wait_ms: int = 10
    ) -> None:
        self.topic = topic
        self.record_type = record_type
        self._conf = consumer_config(conf, f"supportflow-table-{topic}", fetch_max_wait_ms=fetch_max_wait_ms)
        self._records: dict[str, Record] = {}
        self._index: dict[str, str] = {}
        self._index_of: dict[str, list[str]] = {}
        self._caught_up = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.invalid_records = 0

    def get(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is not None:
            return record
        owner = self._index.get(key)
        return self._records.get(owner) if owner is not None else None

    def set(self, key: str, value: Any) -> None:
        raise ReadOnlyTable(f"table over {self.topic} is read-only: publish a record to the topic to change it")

    def __len__(self) -> int:
        return len(self._records)

    def start(self, timeout_s: float = 60.0) -> TopicTable:
        """Read the topic up to its current end (blocking), then follow it in a thread."""
        self._thread = threading.Thread(target=self._run, name=f"table-{self.topic}", daemon=True)
        self._thread.start()
        if not self._caught_up.wait(timeout_s):
            raise TimeoutError(f"reading {self.topic} to its end took more than {timeout_s:.0f}s")
        log.info("table over %s loaded: %d records", self.topic, len(self._records))
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_for(self, key: str, timeout_s: float = 10.0) -> Record | None:
        """For tools and tests: the record under `key` once it has arrived."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = self.get(key)
            if record is not None:
                return record
            time.sleep(0.02)
        return None

    def _run(self) -> None:
        consumer = Consumer(self._conf)
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            assignment = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
            ends = {p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1] for p in partitions}
            consumer.assign(assignment)
            behind = {p for p, end in ends.items() if end > 0}
            if not behind:
                self._caught_up.set()
            while not self._closed.is_set():
                # a fetch's worth per call: at start-up the whole topic is read, one record per poll() was
                # a Python round trip each
                for msg in consumer.consume(num_messages=500, timeout=0.1):
                    if msg.error():
                        continue
                    self._apply(msg.key(), msg.value())
                    if msg.partition() in behind and msg.offset() + 1 >= ends[msg.partition()]:
                        behind.discard(msg.partition())
                        if not behind:
                            self._caught_up.set()
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        for old in self._index_of.pop(name, []):
            if self._index.get(old) == name:
                del self._index[old]
        if value is None:  # a tombstone deletes the key
            self._records.pop(name, None)
            return
        try:
            record = self.record_type.model_validate_json(value)
        except ValueError as exc:
            self.invalid_records += 1
            log.warning(
                "skipping an invalid %s record under key %r in %s: %s", self.record_type.__name__, name, self.topic, exc
            )
            return
        self._records[name] = record
        index_keys = getattr(record, "index_keys", None)
        if callable(index_keys):
            keys = list(index_keys())
            for index_key in keys:
                self._index[index_key] = name
            self._index_of[name] = keys
