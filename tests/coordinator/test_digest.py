"""The hash lane of a zip entry: order across lanes sharing a pool, zero padding, small
batches inline, and `below` holding the writer back while hashing falls behind (memory
stays bounded)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from coordinator.digest import HashLane, crc32_zeros


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
    rng = random.Random(7)
    pieces = [[os.urandom(rng.choice([1, 100, 4095, 70_000, 200_000])) for _ in range(100)]
              for _ in (0, 1)]
    executor = CountingExecutor(2)

    async def scenario() -> list[tuple[int, str | None]]:
        lanes = [HashLane(executor, sha256=True), HashLane(executor, sha256=False)]
        for a, b in zip(*pieces, strict=True):
            lanes[0].update(a)
            lanes[1].update(b)
            await asyncio.sleep(0)
        lanes[0].zeros(3_000_000)
        return [await lane.result() for lane in lanes]

    try:
        (crc0, sha0), (crc1, sha1) = asyncio.run(scenario())
    finally:
        executor.shutdown()
    data0 = b"".join(pieces[0]) + bytes(3_000_000)
    assert (crc0, sha0) == (zlib.crc32(data0), hashlib.sha256(data0).hexdigest())
    assert (crc1, sha1) == (zlib.crc32(b"".join(pieces[1])), None)
    assert executor.jobs > 0  # big batches went to the pool


def test_small_batches_are_hashed_on_the_loop() -> None:
    executor = CountingExecutor(1)

    async def scenario() -> int:
        lane = HashLane(executor, sha256=False, inline_limit=1000)
        for _ in range(50):
            lane.update(b"x" * 999)
            await lane.below(1)
        return (await lane.result())[0]

    try:
        assert asyncio.run(scenario()) == zlib.crc32(b"x" * 999 * 50)
    finally:
        executor.shutdown()
    assert executor.jobs == 0


def test_below_holds_the_writer_while_hashing_falls_behind() -> None:
    executor = GatedExecutor()

    async def scenario() -> None:
        lane = HashLane(executor, sha256=True, inline_limit=0)
        lane.update(bytes(100_000))
        lane.update(bytes(100_000))
        waiter = asyncio.ensure_future(lane.below(150_000))
        await asyncio.sleep(0.05)
        assert not waiter.done() and lane.backlog == 200_000  # held back: nothing hashed
        executor.gate.set()
        await asyncio.wait_for(waiter, 5)
        assert lane.backlog < 150_000
        crc, _ = await lane.result()
        assert crc == zlib.crc32(bytes(200_000))

    try:
        asyncio.run(scenario())
    finally:
        executor.gate.set()
        executor.shutdown()


def test_crc_of_zeros() -> None:
    assert crc32_zeros(3_000_000, zlib.crc32(b"abc")) == zlib.crc32(b"abc" + bytes(3_000_000))
    assert crc32_zeros(0) == 0
