"""Keyed lanes: strict order within a key, concurrency across keys, bounded work in flight."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]


class KeyedLanes:
    """Run jobs for one key one after another, while jobs for other keys run alongside.

    A slow conversation occupies only its own lane. `submit` waits when `max_in_flight` jobs are
    queued or running, which pushes back on the consumer instead of buffering without bound.
    Jobs are expected to handle their own errors; one that raises is logged and its lane goes on.
    """

    def __init__(self, max_in_flight: int) -> None:
        self._slots = asyncio.Semaphore(max_in_flight)
        self._lanes: dict[str, deque[Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._queued = 0

    def busy(self, key: str) -> bool:
        return key in self._lanes

    @property
    def in_flight(self) -> int:
        """Jobs queued or running."""
        return self._queued

    async def submit(self, key: str, job: Job) -> None:
        await self._slots.acquire()
        self._queued += 1
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(job)
            return
        lane = deque([job])
        self._lanes[key] = lane
        self._idle.clear()
        task = asyncio.create_task(self._drain(key, lane), name=f"lane:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key: str, lane: deque[Job]) -> None:
        try:
            while lane:
                try:
                    await lane[0]()
                except Exception:
                    log.exception("job for key %r failed", key)
                finally:
                    lane.popleft()
                    self._queued -= 1
                    self._slots.release()
        finally:
            del self._lanes[key]
            if not self._lanes:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
