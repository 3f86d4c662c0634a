"""Which PostgreSQL errors blame the data written, as opposed to the server being away.

A consumer that writes to PostgreSQL retries an outage for as long as it lasts, but a record
the server refuses for what it holds (a NUL in a text, a number out of a column's range, a JSON
escape jsonb cannot hold) fails the same way every time: retrying it would halt everything
behind it. This tells the two apart, by SQLSTATE class, so the consumer can set that one
record aside (pipelines/runtime/consumer_loop.py) and go on.
"""

from __future__ import annotations

import asyncpg

__all__ = ["DATA_SQLSTATE_CLASSES", "is_data_error"]

DATA_SQLSTATE_CLASSES = frozenset({"22", "54"})
"""22 data exception (character not in repertoire: a NUL in a text; numeric value out of range;
untranslatable character: `\\u0000` in jsonb); 54 program limit exceeded (a value too large for
an index row). Connection failures (08), an unavailable server (57P0x, 53xxx) and everything
else are not the record's fault: they are retried."""


def is_data_error(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was explicitly raised from, is PostgreSQL refusing the values written.

    Only the explicit cause chain is followed (`raise ... from`): an outage raised while handling
    a data error is still an outage.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(current, asyncpg.PostgresError) and isinstance(sqlstate, str):
            if sqlstate[:2] in DATA_SQLSTATE_CLASSES:
                return True
        elif isinstance(current, asyncpg.InterfaceError) and isinstance(current, ValueError):
            # asyncpg's client-side DataError: a value the column's type cannot encode (an int beyond int4)
            return True
        current = current.__cause__
    return False
