"""Keyed lanes: order within a key, concurrency across keys, bounded in-flight work."""

from __future__ import annotations

import asyncio

from pipelines.runtime.lanes import KeyedLanes


async def test_jobs_of_one_key_run_in_submission_order():
    lanes = KeyedLanes(max_in_flight=100)
    done: list[int] = []

    def job(i: int):
        async def run() -> None:
            await asyncio.sleep(0.001 * (10 - i))  # later jobs are faster: order must still hold
            done.append(i)

        return run

    for i in range(10):
        await lanes.submit("alice", job(i))
    await lanes.wait_idle()
    assert done == list(range(10))


async def test_a_slow_key_does_not_stall_other_keys():
    lanes = KeyedLanes(max_in_flight=100)
    finished: list[str] = []
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()
        finished.append("slow")

    def fast(name: str):
        async def run() -> None:
            finished.append(name)

        return run

    await lanes.submit("slow-customer", slow)
    for i in range(5):
        await lanes.submit(f"customer-{i}", fast(f"fast-{i}"))
    await asyncio.sleep(0.05)
    assert finished == [f"fast-{i}" for i in range(5)]
    assert lanes.busy("slow-customer")
    release.set()
    await lanes.wait_idle()
    assert finished[-1] == "slow" and not lanes.busy("slow-customer")


async def test_submit_waits_when_the_in_flight_limit_is_reached():
    lanes = KeyedLanes(max_in_flight=2)
    release = asyncio.Event()

    async def blocked() -> None:
        await release.wait()

    await lanes.submit("a", blocked)
    await lanes.submit("b", blocked)
    third = asyncio.create_task(lanes.submit("c", blocked))
    await asyncio.sleep(0.05)
    assert not third.done(), "a third job was admitted past the limit"
    release.set()
    await asyncio.wait_for(third, 1)
    await lanes.wait_idle()


async def test_a_failing_job_does_not_stop_its_lane():
    lanes = KeyedLanes(max_in_flight=10)
    done: list[str] = []

    async def boom() -> None:
        raise RuntimeError("boom")

    async def after() -> None:
        done.append("after")

    await lanes.submit("k", boom)
    await lanes.submit("k", after)
    await lanes.wait_idle()
    assert done == ["after"]
