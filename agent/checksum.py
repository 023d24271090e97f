"""``GET /checksum/{root}/{path}?start=S&end=E[&sha256=1]``: CRC-32 (and SHA-256) of a range.

Protected and path-checked like ``/files`` (the same token, `agent.paths.open_regular_file`).
The coordinator asks for a planned range's CRC-32 before the entry starts and, with
``sha256=1``, for its SHA-256 when the entry has been sent; both usually come from the
`ChecksumCache` (the send pass of the download stored them), else from a pass of their own in
the file executor, at most `PASSES` at a time. See docs/agent-protocol.md.

Answers: 200 JSON ``{path, start, end, size, etag, mtime, crc32, sha256}`` with the file's
``ETag``; 400 naming a bad parameter; 412 when ``If-Match`` does not match the current ETag;
416 when ``end`` lies beyond the file's current size (it shrank under the plan).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor

from agent.digests import (
    ChecksumCache,
    DigestMetrics,
    Digests,
    FileShrank,
    RangeKey,
    SpanDigest,
    digest_range,
    unchanged,
)
from agent.paths import OpenFile, open_regular_file
from agent.query import flag_argument, integer_argument
from agent.ranges import strong_match
from agent.state import AgentState
from common.errors import BadRequest, PreconditionFailed, RangeNotSatisfiable
from common.etag import make_etag
from common.web import BaseHandler

PASSES = 2  # checksum passes running at once (the machine's cores, not the downloads)


class Checksums:
    """The digest cache, its counters and the limit on passes: one per app."""

    def __init__(self, cache: ChecksumCache, metrics: DigestMetrics) -> None:
        self.cache = cache
        self.metrics = metrics
        self.passes = asyncio.Semaphore(PASSES)

    def send_pass(self, opened: OpenFile, start: int, end: int, source: str = "send") -> SpanDigest:
        """An observer that digests a download of ``[start, end)`` into the cache."""
        return SpanDigest(RangeKey.of(opened, start, end), self.cache, self.metrics, source)

    async def digests(
        self,
        opened: OpenFile,
        start: int,
        end: int,
        *,
        sha256: bool,
        executor: Executor | None,
    ) -> Digests:
        """From the cache when it has what is asked, else a pass (`FileShrank` if short)."""
        key = RangeKey.of(opened, start, end)
        cached = self.cache.get(key)
        if cached is not None and (cached.sha256 is not None or not sha256):
            self.metrics.cache.labels("hit").inc()
            return cached
        self.metrics.cache.labels("miss").inc()
        loop = asyncio.get_running_loop()
        async with self.passes:
            found = await loop.run_in_executor(
                executor, lambda: digest_range(opened.fd, start, end, sha256=sha256)
            )
            self.metrics.digested.labels("checksum").inc(end - start)
            # Bytes read while the file was being changed match no version of it: answer
            # them (a later pass will disagree), but keep them from the cache.
            if not await loop.run_in_executor(executor, unchanged, opened):
                return found
        return self.cache.store(key, found)


class ChecksumHandler(BaseHandler):
    route = "checksum"
    protected = True

    async def get(self, root: str, path: str) -> None:
        state: AgentState = self.settings["agent_state"]
        state.check_accepting()
        start = integer_argument(self, "start") or 0
        end = integer_argument(self, "end")
        want_sha = flag_argument(self, "sha256")
        if end is not None and end < start:
            raise BadRequest(f"end ({end}) is less than start ({start})", parameter="end")
        executor: Executor | None = self.settings.get("file_executor")
        loop = asyncio.get_running_loop()
        opened = await loop.run_in_executor(
            executor, open_regular_file, self.settings["real_roots"], root, path
        )
        try:
            etag = make_etag(opened.inode, opened.size, opened.mtime_ns)
            self.check_if_match(etag)
            end = opened.size if end is None else end
            if end > opened.size:
                raise RangeNotSatisfiable(f"end ({end}) is beyond the file's {opened.size} bytes")
            if start > end:
                raise RangeNotSatisfiable(f"start ({start}) is beyond the file's {end} bytes")
            digests = await self.digests(opened, start, end, want_sha, executor)
        finally:
            os.close(opened.fd)
        self.set_header("ETag", etag)
        self.write_json(
            {
                "path": path,
                "start": start,
                "end": end,
                "size": opened.size,
                "etag": etag,
                "mtime": opened.mtime,
                "crc32": digests.crc32,
                "sha256": digests.sha256,
            }
        )

    def check_if_match(self, etag: str) -> None:
        """RFC 9110 §13.1.1: a strong comparison; 412 when no listed tag is the current one."""
        header = self.request.headers.get("If-Match")
        if header is not None and not strong_match(header, etag):
            raise PreconditionFailed(f"the file's ETag is now {etag}")

    async def digests(
        self, opened: OpenFile, start: int, end: int, sha256: bool, executor: Executor | None
    ) -> Digests:
        checksums: Checksums = self.settings["checksums"]
        try:
            return await checksums.digests(
                opened, start, end, sha256=sha256, executor=executor
            )
        except FileShrank:
            raise RangeNotSatisfiable(
                f"the file got shorter than {end} bytes while it was read"
            ) from None
