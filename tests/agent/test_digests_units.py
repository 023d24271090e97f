"""The digest cache and passes as plain objects (agent/digests.py, agent/checksum.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import zlib
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from agent.checksum import Checksums
from agent.digests import ChecksumCache, DigestMetrics, Digests, RangeKey, SpanDigest
from agent.paths import open_regular_file


def key(n: int) -> RangeKey:
    return RangeKey(1, n, 100, 5, 0, 100)


def test_the_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = ChecksumCache(max_entries=2)
    cache.store(key(1), Digests(1, None))
    cache.store(key(2), Digests(2, None))
    assert cache.get(key(1)) == Digests(1, None)  # now 2 is the least recently used
    cache.store(key(3), Digests(3, None))
    assert len(cache) == 2
    assert cache.get(key(2)) is None
    assert cache.get(key(1)) is not None and cache.get(key(3)) is not None


def test_a_crc_only_pass_keeps_a_known_sha_and_other_bytes_replace_it() -> None:
    cache = ChecksumCache()
    cache.store(key(1), Digests(7, "ab" * 32))
    assert cache.store(key(1), Digests(7, None)) == Digests(7, "ab" * 32)
    assert cache.store(key(1), Digests(8, None)) == Digests(8, None)  # rewritten in place


def test_pieces_out_of_order_store_nothing() -> None:
    cache = ChecksumCache()
    digest = SpanDigest(RangeKey(1, 1, 10, 1, 0, 10), cache)
    digest.update(b"01234", 0)
    digest.update(b"56789", 6)  # a gap: not the bytes of the range
    assert digest.finish(10) is None and len(cache) == 0
    whole = SpanDigest(RangeKey(1, 1, 10, 1, 0, 10), cache)
    whole.update(b"01234", 0)
    whole.update(b"56789", 5)
    assert whole.finish(10) == Digests(zlib.crc32(b"0123456789"),
                                       hashlib.sha256(b"0123456789").hexdigest())


class ChangingExecutor(Executor):
    """Runs jobs inline, first calling *before* once: a writer racing the pass."""

    def __init__(self, before: Callable[[], None]) -> None:
        self.before: Callable[[], None] | None = before

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.before is not None:
            self.before, before = None, self.before
            before()
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_bytes_read_while_the_file_changed_are_not_cached(tmp_path: Path) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(b"x" * 1000)
    checksums = Checksums(ChecksumCache(), DigestMetrics(CollectorRegistry()))
    opened = open_regular_file({"r": str(tmp_path)}, "r", "growing.log")
    try:
        executor = ChangingExecutor(lambda: path.write_bytes(b"x" * 1000 + b"more"))

        async def twice() -> None:
            found = await checksums.digests(opened, 0, 1000, sha256=False, executor=executor)
            assert found.crc32 == zlib.crc32(b"x" * 1000)
            assert checksums.cache.get(RangeKey.of(opened, 0, 1000)) is None

        asyncio.run(twice())
    finally:
        os.close(opened.fd)
