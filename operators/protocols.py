"""The interfaces operators receive their collaborators through, in one place.

Operators never open connections: the runtime builds these from configuration (a Kafka-backed
faust table in production and tests, a dict in unit tests) and passes them in the context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

V = TypeVar("V")


@runtime_checkable
class StateTable(Protocol[V]):
    """Keyed state scoped to the partition of the record being processed."""

    def get(self, key: str) -> V | None: ...

    def set(self, key: str, value: V) -> None: ...


class ToolSource(Protocol):
    """Where operators find backend actions by name (`connectors.backends.registry.ToolRegistry`).

    Returns a `connectors.protocols.Tool`, or None when no connector offers that name.
    """

    async def get(self, name: str) -> Any: ...


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime: ...


class DictTable(dict[str, Any]):
    """A StateTable over a plain dict: for unit tests and one-off tools, never for the stream."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value


@dataclass
class OperatorContext:
    """What an operator may use besides its input record.

    `tables` holds the runtime's state tables by name (`sessions`, `identities`, `seen`);
    `settings` is the validated application configuration; `clock` is injectable for tests;
    `tools` is the backend actions' registry (`ToolSource`), built by the runtime from settings.
    """

    tables: Mapping[str, StateTable[Any]]
    clock: Clock
    settings: Any = None
    tools: ToolSource | None = None

    def table(self, name: str) -> StateTable[Any]:
        try:
            return self.tables[name]
        except KeyError:
            raise LookupError(f"state table {name!r} is not configured; known: {sorted(self.tables)}") from None
