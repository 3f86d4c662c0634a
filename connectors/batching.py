"""Micro-batching: many concurrent `await submit(item)` calls, one blocking batch call.

Models (spaCy NER for PII redaction, a Triton-served classifier) cost far less per item in a
batch than one at a time, but a stage processes records one coroutine per conversation. The
batcher sits between the two: callers submit single items and await their own result; a
background task gathers what arrives within `max_wait_ms` (or until `max_batch` items) and runs
the batch function in a worker thread, so the event loop keeps consuming and delivering while
the model works.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class BatcherClosed(RuntimeError):
    """The batcher was closed before (or while) the item could be processed."""


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[In, Out]):
    """Gather concurrently submitted items into batches for a blocking `batch_fn`.

    `batch_fn(items)` must return one result per item, in the items' order. If it raises (or
    returns the wrong number of results), every caller of that batch gets the exception; later
    batches are unaffected. A batch starts when `max_batch` items are waiting or when the oldest
    waiting item has waited `max_wait_ms`, whichever comes first; items that arrive while a batch
    runs form the next one. One worker thread runs batches one after another, so `batch_fn` need
    not be thread-safe.

    Use `start()` (inside a running event loop) and `await close()`, or `async with`. `close()`
    runs what was already submitted and then stops: no caller is left waiting.
    """

    def __init__(
        self,
        batch_fn: Callable[[list[In]], Sequence[Out]],
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.name = name
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        """Sizes of the batches run so far (the last 1,000): for tests and metrics."""
        self._queue: asyncio.Queue[_Pending[In, Out] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False
        self._running_batch: list[_Pending[In, Out]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._closing

    def start(self) -> None:
        """Start the gathering task on the running event loop."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already started")
        self.loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._task = self.loop.create_task(self._run(), name=f"{self.name}-gather")

    async def submit(self, item: In) -> Out:
        """Queue one item and wait for its result (or its batch's exception)."""
        if not self.running or self._queue is None or self.loop is None:
            raise BatcherClosed(f"{self.name} is not running")
        pending: _Pending[In, Out] = _Pending(item, self.loop.create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def close(self) -> None:
        """Stop taking items, finish every batch already submitted, then stop the worker thread."""
        if self._task is None or self._queue is None:
            return
        if not self._closing:
            self._closing = True
            self._queue.put_nowait(None)  # wakes the gatherer; everything queued before it still runs
        try:
            await asyncio.wait([self._task])  # never raises, even if the gatherer was cancelled
        finally:
            self._fail_leftovers()
            if self._executor is not None:
                self._executor.shutdown(wait=False)

    async def __aenter__(self) -> MicroBatcher[In, Out]:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        assert self._queue is not None
        stop = False
        try:
            while not stop:
                first = await self._queue.get()
                if first is None:
                    break
                batch = [first]
                deadline = first.enqueued + self.max_wait_s
                while len(batch) < self.max_batch:
                    if self._queue.empty():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        try:
                            nxt = await asyncio.wait_for(self._queue.get(), remaining)
                        except TimeoutError:
                            break
                    else:
                        nxt = self._queue.get_nowait()
                    if nxt is None:  # closing: run this batch, and whatever is left after it
                        stop = True
                        break
                    batch.append(nxt)
                await self._run_batch(batch)
            # Drain after the close marker: items submitted before close() still get answers.
            leftovers: list[_Pending[In, Out]] = []
            while not self._queue.empty():
                extra = self._queue.get_nowait()
                if extra is not None:
                    leftovers.append(extra)
            for start in range(0, len(leftovers), self.max_batch):
                await self._run_batch(leftovers[start : start + self.max_batch])
        finally:
            self._fail_leftovers()

    async def _run_batch(self, batch: list[_Pending[In, Out]]) -> None:
        live = [p for p in batch if not p.future.done()]  # a caller that gave up (timeout) is skipped
        if not live:
            return
        self.batch_sizes.append(len(live))
        assert self.loop is not None and self._executor is not None
        items = [p.item for p in live]
        self._running_batch = live  # kept if this task is cancelled mid-batch, so close() can fail them
        try:
            results = await self.loop.run_in_executor(self._executor, self.batch_fn, items)
            if len(results) != len(items):
                raise ValueError(f"{self.name}: batch function returned {len(results)} results for {len(items)} items")
        except Exception as exc:
            self._running_batch = []
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self._running_batch = []
        for p, result in zip(live, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    def _fail_leftovers(self) -> None:
        """Whatever is queued or running when the gatherer ends (cancelled, crashed) fails loudly."""
        left = list(self._running_batch)
        while self._queue is not None and not self._queue.empty():
            pending = self._queue.get_nowait()
            if pending is not None:
                left.append(pending)
        for pending in left:
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed(f"{self.name} closed before this item ran"))


def batcher_on_this_loop(
    current: MicroBatcher[In, Out] | None, make: Callable[[], MicroBatcher[In, Out]]
) -> MicroBatcher[In, Out]:
    """`current` if it runs on the running event loop, else a new started one from `make`.

    An operator outlives event loops in tests (each test has its own), and a batcher is bound to
    the loop that started it.
    """
    loop = asyncio.get_running_loop()
    if current is not None and current.loop is loop and current.running:
        return current
    batcher = make()
    batcher.start()
    return batcher
