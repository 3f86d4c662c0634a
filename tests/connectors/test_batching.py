"""MicroBatcher: concurrent submits share a batch, results keep their order, errors reach callers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from connectors.batching import BatcherClosed, MicroBatcher


def doubled(items: list[int]) -> list[int]:
    return [2 * i for i in items]


async def test_concurrent_submits_are_batched_and_each_caller_gets_its_own_result():
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        calls.append(list(items))
        return doubled(items)

    async with MicroBatcher(fn, max_batch=16, max_wait_ms=50) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
    assert results == [2 * i for i in range(40)]
    assert max(len(c) for c in calls) == 16, calls  # full batches, not one call per item
    assert sorted(i for c in calls for i in c) == list(range(40))
    assert list(batcher.batch_sizes) == [len(c) for c in calls]


async def test_results_follow_the_order_of_the_items_inside_a_batch():
    def reverse_sorted_work(items: list[str]) -> list[str]:
        # work in another order than asked, answer in the items' order
        done = {item: item.upper() for item in sorted(items, reverse=True)}
        return [done[item] for item in items]

    async with MicroBatcher(reverse_sorted_work, max_batch=8, max_wait_ms=50) as batcher:
        words = ["delta", "alpha", "charlie", "bravo", "echo"]
        results = await asyncio.gather(*(batcher.submit(w) for w in words))
    assert results == [w.upper() for w in words]
    assert list(batcher.batch_sizes) == [5]


async def test_a_lone_item_waits_at_most_max_wait_ms():
    async with MicroBatcher(doubled, max_batch=64, max_wait_ms=20) as batcher:
        started = time.perf_counter()
        assert await batcher.submit(21) == 42
        elapsed = time.perf_counter() - started
    assert 0.015 <= elapsed < 0.5


async def test_items_arriving_during_a_slow_batch_form_the_next_batch():
    release = threading.Event()
    calls: list[list[int]] = []

    def slow(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(5)
        return doubled(items)

    async with MicroBatcher(slow, max_batch=32, max_wait_ms=1) as batcher:
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)  # the first batch is running in the worker thread now
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 11)]
        await asyncio.sleep(0.05)
        assert not first.done(), "the event loop stays free while the batch function blocks"
        release.set()
        assert await first == 0 and await asyncio.gather(*rest) == [2 * i for i in range(1, 11)]
    assert calls == [[0], list(range(1, 11))]


async def test_an_exception_reaches_every_caller_of_its_batch_and_later_batches_still_run():
    def failing(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("model exploded")
        return doubled(items)

    async with MicroBatcher(failing, max_batch=4, max_wait_ms=50) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in (1, 13, 3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and str(r) == "model exploded" for r in results), results
        assert await batcher.submit(5) == 10


async def test_a_wrong_number_of_results_is_an_error_not_a_misaligned_answer():
    async with MicroBatcher(lambda items: items[:-1], max_batch=4, max_wait_ms=20) as batcher:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError) and "2 results for 3 items" in str(r) for r in results), results


async def test_close_answers_everything_already_submitted():
    def slowish(items: list[int]) -> list[int]:
        time.sleep(0.02)
        return doubled(items)

    batcher = MicroBatcher(slowish, max_batch=4, max_wait_ms=1000)
    batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(10)]
    await asyncio.sleep(0)  # let every submit enqueue
    await batcher.close()  # long max_wait: without draining these would sit in the queue
    assert all(f.done() for f in pending)
    assert [f.result() for f in pending] == [2 * i for i in range(10)]
    assert max(batcher.batch_sizes) <= 4
    with pytest.raises(BatcherClosed):
        await batcher.submit(99)


async def test_a_cancelled_gatherer_fails_its_callers_instead_of_leaving_them_waiting():
    release = threading.Event()

    def blocked(items: list[int]) -> list[int]:
        release.wait(5)
        return doubled(items)

    batcher = MicroBatcher(blocked, max_batch=2, max_wait_ms=1)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    assert batcher._task is not None
    batcher._task.cancel()
    await batcher.close()
    release.set()
    for future in (running, queued):
        with pytest.raises(BatcherClosed):
            await future


async def test_a_caller_that_gives_up_does_not_break_the_batch():
    async with MicroBatcher(doubled, max_batch=8, max_wait_ms=30) as batcher:
        impatient = asyncio.ensure_future(batcher.submit(1))
        patient = asyncio.ensure_future(batcher.submit(2))
        await asyncio.sleep(0)
        impatient.cancel()
        assert await patient == 4
    assert list(batcher.batch_sizes) == [1]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(doubled, max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(doubled, max_wait_ms=-1)
