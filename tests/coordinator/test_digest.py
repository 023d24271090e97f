"""The SHA-256 lane of a zip entry: order, zero padding, cancellation, and that an entry
holds its bytes until both the zip and the lane are done with them (memory stays bounded
when hashing falls behind)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from coordinator.archive import BufferGauge, EntryData
from coordinator.digest import DigestLane
from coordinator.status import FileStatus


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the jobs handed to it."""

    def __init__(self, workers: int = 2) -> None:
        super().__init__(workers)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


class GatedExecutor(ThreadPoolExecutor):
    """One thread that waits for `gate` before each job: hashing that falls behind."""

    def __init__(self) -> None:
        super().__init__(1)
        self.gate = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def gated() -> Any:
            self.gate.wait(10)
            return fn(*args, **kwargs)

        return super().submit(gated)


def test_lanes_sharing_a_pool_each_hash_in_arrival_order() -> None:
    """Two lanes fed interleaved pieces of random sizes (inline and in the pool), then zero
    padding, get the digests of their own bytes in order; `on_hashed` counts data only."""
    rng = random.Random(7)
    pieces = [[os.urandom(rng.choice([1, 100, 4095, 4096, 70_000])) for _ in range(200)]
              for _ in (0, 1)]
    executor = CountingExecutor(2)
    hashed = [0, 0]
    done: list[int] = []

    def counter(i: int) -> Callable[[int], None]:
        return lambda n: hashed.__setitem__(i, hashed[i] + n)

    async def go() -> list[DigestLane]:
        lanes = [DigestLane(executor, counter(i), lambda i=i: done.append(i),
                            inline_limit=4096) for i in (0, 1)]
        for step in range(200):
            for lane, own in zip(lanes, pieces, strict=True):
                lane.update(own[step])
            await asyncio.sleep(0.0005 if step % 2 else 0)  # jobs end, batches form
        for lane in lanes:
            lane.zeros(3_000_001)
            lane.close()
        await asyncio.wait_for(asyncio.gather(*(lane.done.wait() for lane in lanes)), 10)
        return lanes

    try:
        lanes = asyncio.run(go())
    finally:
        executor.shutdown()
    for lane, own in zip(lanes, pieces, strict=True):
        assert lane.digest == hashlib.sha256(b"".join(own) + bytes(3_000_001)).hexdigest()
    assert sorted(done) == [0, 1]
    assert executor.jobs > 20  # the big pieces went to the pool
    assert hashed == [sum(map(len, own)) for own in pieces]


def test_small_pieces_are_hashed_inline_and_cancel_ends_without_a_digest() -> None:
    executor = CountingExecutor(1)
    ended: list[bool] = []

    async def go() -> tuple[DigestLane, DigestLane]:
        small = DigestLane(executor, lambda n: None, lambda: ended.append(True),
                           inline_limit=1000)
        for _ in range(50):
            small.update(b"x" * 999)
        small.close()
        cancelled = DigestLane(executor, lambda n: None, lambda: ended.append(False),
                               inline_limit=1000)
        cancelled.update(b"y" * 5000)  # a job in the pool
        cancelled.cancel()
        cancelled.cancel()
        await asyncio.sleep(0.05)
        return small, cancelled

    try:
        small, cancelled = asyncio.run(go())
    finally:
        executor.shutdown()
    assert small.digest == hashlib.sha256(b"x" * 999 * 50).hexdigest()
    assert cancelled.digest is None and cancelled.done.is_set()
    assert executor.jobs == 1  # only the cancelled lane's big piece
    assert ended == [True, False]  # each lane's on_done exactly once


def test_an_entry_holds_its_bytes_until_the_digest_lane_has_them() -> None:
    """The zip takes every chunk at once but hashing is stalled: the producer is still
    stopped at the limit (nothing piles up behind the lane), and resumes once hashing
    goes on; the recorded SHA-256 is that of the bytes."""
    executor = GatedExecutor()
    gauge = BufferGauge()
    status = FileStatus("f.log", "n1/logs/f.log", 40_000)
    data = os.urandom(40_000)

    async def go() -> None:
        entry = EntryData(status, sized=True, limit=8_000, gauge=gauge, executor=executor,
                          hash_inline_limit=1_000)
        waits = 0
        for start in range(0, len(data), 4_000):
            waiter = entry.feed(data[start:start + 4_000])
            while entry.step_bytes > 0:
                next(entry)  # the zip takes what is there at once
            entry.settle()
            if waiter is not None:
                waits += 1
                assert gauge.current <= 8_000 + 4_000
                if not executor.gate.is_set():
                    await asyncio.sleep(0.05)
                    assert entry.blocked  # still waiting: the lane has not hashed
                    executor.gate.set()
                await asyncio.wait_for(waiter, 5)
        entry.finish()
        assert list(entry) == []
        entry.settle()
        await asyncio.wait_for(entry.digested(), 5)
        assert waits >= 1
        assert gauge.peak <= 8_000 + 4_000

    try:
        asyncio.run(go())
    finally:
        executor.gate.set()
        executor.shutdown()
    assert status.sha256 == hashlib.sha256(data).hexdigest()
    assert gauge.current == 0


class FailingExecutor(ThreadPoolExecutor):
    """Every job raises in its worker thread."""

    def __init__(self) -> None:
        super().__init__(1)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        def fail() -> Any:
            raise MemoryError("no memory for hashing")

        return super().submit(fail)


def test_a_failed_hash_job_neither_blocks_the_agent_nor_the_archive() -> None:
    """Should a hashing job ever fail, the entry goes on without a digest (logged) instead of
    waiting for one forever; a shut-down executor is hashed inline instead."""
    executor = FailingExecutor()
    status = FileStatus("f.log", "n1/logs/f.log", 50_000)
    data = os.urandom(50_000)

    async def go() -> None:
        entry = EntryData(status, sized=True, limit=8_000, executor=executor,
                          hash_inline_limit=1_000)
        for start in range(0, len(data), 5_000):
            waiter = entry.feed(data[start:start + 5_000])
            while entry.step_bytes > 0:
                next(entry)
            entry.settle()
            if waiter is not None:
                await asyncio.wait_for(waiter, 5)
        entry.finish()
        assert list(entry) == []
        entry.settle()
        await asyncio.wait_for(entry.digested(), 5)

        stopped = ThreadPoolExecutor(1)
        stopped.shutdown()
        lane = DigestLane(stopped, lambda n: None, lambda: None, inline_limit=10)
        lane.update(b"z" * 100)
        lane.close()
        await asyncio.wait_for(lane.done.wait(), 5)
        assert lane.digest == hashlib.sha256(b"z" * 100).hexdigest()

    try:
        asyncio.run(go())
    finally:
        executor.shutdown()
    assert status.sha256 is None  # no digest rather than a wrong one
    assert status.bytes == 50_000
