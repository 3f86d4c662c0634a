"""The base every record shares: a schema version and strict validation."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A record that travels between operators or across a topic.

    Records reject unknown fields so a producer's typo becomes a dead letter with a
    reason instead of silently lost data. `schema_version` lets a consumer refuse (or
    migrate) records written by a newer producer.
    """

    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=False)

    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = 1

    def partition_key(self) -> str | None:
        """The Kafka key this record is published under; None lets the partitioner choose."""
        return None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")

    @classmethod
    def from_null_value(cls, key: str) -> Record | None:
        """What a null value under `key` (a compacted topic's tombstone) stands for; None: nothing (the
        stream dead-letters it, as any value that is not a record of the topic)."""
        return None
