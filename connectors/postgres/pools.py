"""What the asyncpg pools of supportflow's stores share."""

from __future__ import annotations

from typing import Any

__all__ = ["keep_no_session_state"]


async def keep_no_session_state(_conn: Any) -> None:
    """A pool's `reset` for code that keeps no session state: none, beyond the rollback asyncpg always does.

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release: one more round trip per query or tool call, the largest single source of the agent worker's
    socket writes in `bench --profile`, and work for the server. Pass it only to a pool whose users take
    transaction-scoped locks and settings (`pg_advisory_xact_lock`, `SET LOCAL`), never SET, LISTEN or leave
    a cursor open; a transaction left open is still rolled back by asyncpg before this runs.
    """
