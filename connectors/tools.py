"""The registry of backend tools the agent may call: the commerce backend and a tenant's REST tools.

Built once per worker from settings and handed to operators in their context. Connections open
on first use, on the event loop that uses them (an asyncpg pool for the commerce backend in
PostgreSQL, one httpx client for the REST tools), and are reused by every call after that. With
no database configured the commerce tools are simply absent: `get` answers None and the
`execute` operator reports the action as failed, so the turn goes to a human.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors.protocols import Tool

log = logging.getLogger(__name__)

__all__ = ["ToolRegistry"]


class ToolRegistry:
    """Tools by name; `tools` fixes them (tests), else they come from `database_url` and `rest_tools_file`."""

    def __init__(
        self,
        tools: Mapping[str, Tool] | None = None,
        database_url: str | None = None,
        rest_tools_file: Path | None = None,
        pool_size: int = 5,
    ) -> None:
        self._tools: dict[str, Tool] = dict(tools or {})
        self._fixed = tools is not None
        self.database_url = database_url
        self.rest_tools_file = rest_tools_file
        self.pool_size = pool_size
        self._pool: Any = None
        self._rest: Any = None
        self._lock: asyncio.Lock | None = None  # created on the loop that first uses it
        self._loaded = False

    @classmethod
    def from_settings(cls, settings: Any) -> ToolRegistry:
        url = getattr(settings, "database_url", None)
        return cls(
            database_url=url.get_secret_value() if url is not None else None,
            rest_tools_file=getattr(settings, "rest_tools_file", None),
            pool_size=min(5, getattr(settings, "database_pool_size", 5)),
        )

    async def get(self, name: str) -> Tool | None:
        await self._load()
        return self._tools.get(name)

    async def names(self) -> list[str]:
        await self._load()
        return sorted(self._tools)

    async def _load(self) -> None:
        if self._loaded or self._fixed:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._loaded:
                return
            if self.database_url:
                try:
                    import asyncpg

                    from connectors.commerce import commerce_tools

                    self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=self.pool_size)
                    self._tools.update(commerce_tools(self._pool))
                except Exception:
                    log.exception("the commerce backend is unreachable; its tools are unavailable for now")
                    await self._close_pool()
                    return  # not marked loaded: the next call tries again
            if self.rest_tools_file is not None:
                from connectors.rest_tools import load_rest_tools

                self._rest = load_rest_tools(Path(self.rest_tools_file))
                self._tools.update(self._rest.tools)
            self._loaded = True

    async def _close_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def close(self) -> None:
        await self._close_pool()
        if self._rest is not None:
            rest, self._rest = self._rest, None
            await rest.aclose()
