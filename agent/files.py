"""``GET``/``HEAD /files/{root}/{path}``: one file, streamed in ``chunk_size`` pieces.

The verb method reads like a script; every policy is a named hook. Blocking work (resolving
and opening the path, each read) runs in an executor; the event loop only writes. Pieces are
paced to the client (`PacePolicy`): up to ``chunk_size`` and read one ahead while the client
keeps up; about 50 ms of its pace (at least 64 KiB) and nothing ahead while it is the
bottleneck, so slow downloads hold little memory. The span to send is fixed when the
response starts, so a file that grows is sent up to its size at that moment; one that shrinks
ends the response early (the connection is closed, so the client sees the short body) and is
logged.

Two hooks for the coordinator (docs/agent-protocol.md): a range download (206) digests the
bytes it reads, in the read thread, for the checksum cache (`agent.digests.SpanDigest`); and
``?compress=deflate`` hands the span to `agent.deflate`, which sends it as deflate frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import mimetypes
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Executor

from tornado.iostream import StreamClosedError

from agent.bandwidth import TokenBucket
from agent.deflate import frame_request, send_frames
from agent.digests import SpanDigest
from agent.paths import OpenFile, open_regular_file
from agent.ranges import Conditions, Plan, Validators, plan_response
from agent.state import AgentState
from common.etag import make_etag
from common.web import BaseHandler, error_body

log = logging.getLogger(__name__)

UNSENT_LOWAT = 128 * 1024  # unsent bytes the kernel may queue per download (limit_unsent)


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and an RFC 6266 / RFC 8187 ``filename*``."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)
    if fallback == name:
        return f'attachment; filename="{name}"'
    encoded = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def content_type(name: str) -> str:
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding or not guessed:  # a .gz is sent as bytes, not re-labelled as its contents
        return "application/gzip" if encoding == "gzip" else "application/octet-stream"
    return guessed


class FileHandler(BaseHandler):
    route = "files"
    protected = True

    @property
    def state(self) -> AgentState:
        state: AgentState = self.settings["agent_state"]
        return state

    async def get(self, root: str, path: str) -> None:
        await self.serve(root, path, include_body=True)

    async def head(self, root: str, path: str) -> None:
        await self.serve(root, path, include_body=False)

    async def serve(self, root: str, path: str, *, include_body: bool) -> None:
        self.state.check_accepting()
        frames = frame_request(self)  # ?compress=deflate: agent.deflate answers instead
        opened = await self.open_file(root, path)
        try:
            plan = plan_response(
                self.request.method or "GET", self.conditions(), *self.describe(opened)
            )
            self.set_file_headers(opened)
            if plan.status in (200, 206) and frames is not None:
                await send_frames(self, opened, plan, frames, body=include_body)
            elif plan.status in (200, 206):
                self.set_span_headers(plan, opened)
                if include_body:
                    await self.send_span(opened, plan)
            else:
                self.answer_without_body(plan, opened.size)
        finally:
            os.close(opened.fd)

    # -- hooks ---------------------------------------------------------------------------

    async def open_file(self, root: str, path: str) -> OpenFile:
        loop = asyncio.get_running_loop()
        executor: Executor | None = self.settings.get("file_executor")
        return await loop.run_in_executor(
            executor, open_regular_file, self.settings["real_roots"], root, path
        )

    def conditions(self) -> Conditions:
        headers = self.request.headers
        return Conditions(
            range=headers.get("Range"),
            if_range=headers.get("If-Range"),
            if_match=headers.get("If-Match"),
            if_none_match=headers.get("If-None-Match"),
            if_modified_since=headers.get("If-Modified-Since"),
            if_unmodified_since=headers.get("If-Unmodified-Since"),
        )

    def describe(self, opened: OpenFile) -> tuple[Validators, int]:
        etag = make_etag(opened.inode, opened.size, opened.mtime_ns)
        return Validators(etag=etag, mtime=int(opened.mtime)), opened.size

    def set_file_headers(self, opened: OpenFile) -> None:
        """Headers every answer about this file carries, 304 included (RFC 9110 §15.4.5)."""
        validators, _ = self.describe(opened)
        self.set_header("ETag", validators.etag)
        self.set_header("Last-Modified", email.utils.formatdate(opened.mtime, usegmt=True))
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Cache-Control", "no-cache")

    def set_span_headers(self, plan: Plan, opened: OpenFile) -> None:
        self.set_status(plan.status)
        self.set_header("Content-Type", content_type(opened.name))
        self.set_header("Content-Disposition", content_disposition(opened.name))
        self.set_header("Content-Length", str(plan.length))
        if plan.status == 206:
            self.set_header("Content-Range", f"bytes {plan.start}-{plan.stop - 1}/{opened.size}")

    def answer_without_body(self, plan: Plan, size: int) -> None:
        if plan.status == 304:
            self.set_status(304)
            return
        if plan.status == 416:
            # Written here, not raised: the error renderer drops Content-Range (RFC 9110 §15.5.17).
            self.set_header("Content-Range", f"bytes */{size}")
            message = f"the requested range is outside the file's {size} bytes"
            self.write_json(error_body("range_not_satisfiable", message), 416)
            return
        self.write_json(
            error_body("precondition_failed", "a precondition did not hold"), plan.status
        )

    async def send_span(self, opened: OpenFile, plan: Plan) -> None:
        """Stream ``[plan.start, plan.stop)`` of the file, holding a download slot."""
        self.state.acquire()
        self.limit_unsent()
        digest = self.send_pass(opened, plan)
        sender = SpanSender(
            opened.fd,
            plan.start,
            plan.stop,
            chunk_size=self.settings["chunk_size"],
            bucket=self.settings.get("bandwidth"),
            executor=self.settings.get("file_executor"),
            observer=digest,
        )
        try:
            await sender.send(self)
        finally:
            self.state.release()
            self.count_bytes(sender.sent)
            if digest is not None:
                digest.finish(sender.sent)
        if sender.shrunk:
            self.file_shrank(sender.sent, plan.length)

    def send_pass(self, opened: OpenFile, plan: Plan) -> SpanDigest | None:
        """Digests of a range download (206) for the checksum cache (agent.digests)."""
        checksums = self.settings.get("checksums")
        if checksums is None or plan.status != 206:
            return None
        digest: SpanDigest = checksums.send_pass(opened, plan.start, plan.stop)
        return digest

    def limit_unsent(self, lowat: int = UNSENT_LOWAT) -> None:
        """Let the kernel queue only about *lowat* unsent bytes on this connection.

        ``TCP_NOTSENT_LOWAT`` (Linux, macOS): without it the kernel takes megabytes of a slow
        client's download at once, so ``flush()`` returns as if the client were fast and the
        pace policy hands out big pieces; with it ``flush()`` waits for the client itself.
        Where the option is missing the download still works, only paced less well.
        """
        option = getattr(socket, "TCP_NOTSENT_LOWAT", None)
        stream = getattr(self.request.connection, "stream", None)
        sock = getattr(stream, "socket", None)
        if option is None or not isinstance(sock, socket.socket):
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, lowat)

    def file_shrank(self, sent: int, promised: int) -> None:
        """End a response whose file got shorter: the promised length cannot be kept."""
        log.warning(
            "%s shrank while being sent: %d of %d bytes sent; closing the connection",
            self.request.path,
            sent,
            promised,
        )
        if self.request.connection is not None:
            self.request.connection.close()  # type: ignore[attr-defined]

    def count_bytes(self, sent: int) -> None:
        self.state.bytes_served += sent
        metrics = self.settings.get("agent_metrics")
        if metrics is not None:
            metrics.bytes_served.inc(sent)


class PacePolicy:
    """How big the next read is and whether to read it ahead, from the client's pace.

    After every piece `taken` is told how long the client took it (write + ``flush()``).
    Pieces are sized to about `horizon` seconds of the client's pace, between `min_piece` and
    `max_piece` (the configured ``chunk_size``); they start at `min_piece` and at most double
    per piece, so a client proves its pace before it is given big pieces, and they shrink at
    once when the client slows down. The next piece is read ahead only while the client takes
    full-size pieces within `horizon`: a fast client then overlaps read and send, while any
    slower one holds one piece and no more (for it the kernel's queue of unsent bytes, see
    `FileHandler.limit_unsent`, lasts longer than a read).
    """

    def __init__(self, max_piece: int, *, min_piece: int = 64 * 1024, horizon: float = 0.05):
        self.max_piece = max(1, max_piece)
        self.min_piece = max(1, min(min_piece, self.max_piece))
        self.horizon = horizon
        self.size = self.min_piece
        self.read_ahead = False

    def taken(self, n: int, seconds: float) -> None:
        """The client took *n* bytes in *seconds*: set `size` and `read_ahead` for the next."""
        if n <= 0:
            return
        per_horizon = n * self.horizon / max(seconds, 1e-6)  # bytes it takes in one horizon
        self.read_ahead = n >= self.max_piece and per_horizon >= n
        if per_horizon >= 2 * self.size:
            self.size = min(2 * self.size, self.max_piece)
        elif per_horizon < self.size:
            whole = int(per_horizon) // self.min_piece * self.min_piece
            self.size = max(self.min_piece, whole)


class SpanSender:
    """Reads ``[start, stop)`` of *fd* and writes it to a handler, paced by a `PacePolicy`.

    Stops quietly when the client leaves (`StreamClosedError`: the client's choice, not an
    error) and when the file ends before *stop* (`shrunk`). Waits for its read in flight
    before returning, so the caller may close *fd* at once.
    """

    def __init__(
        self,
        fd: int,
        start: int,
        stop: int,
        *,
        chunk_size: int,
        bucket: TokenBucket | None = None,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer: SpanDigest | None = None,
    ) -> None:
        self.fd, self.offset, self.stop = fd, start, stop
        piece = bucket.piece_size(chunk_size) if bucket is not None else chunk_size
        self.policy = PacePolicy(piece)
        self.bucket = bucket
        self.executor = executor
        self.clock = clock
        self.observer = observer  # sees each piece in the read thread (the send pass)
        self.sent = 0
        self.shrunk = False
        self.client_left = False

    def _read_next(self) -> tuple[asyncio.Future[bytes], int] | None:
        size = min(self.policy.size, self.stop - self.offset)
        if size <= 0:
            return None
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, self._pread, size, self.offset
        )
        self.offset += size
        return future, size

    def _pread(self, size: int, offset: int) -> bytes:
        chunk = os.pread(self.fd, size, offset)
        if self.observer is not None:
            self.observer.update(chunk, offset)
        return chunk

    async def send(self, handler: BaseHandler) -> int:
        """Send the span; the number of bytes written."""
        pending = self._read_next()
        try:
            while pending is not None:
                chunk = await pending[0]
                # A short read means the file got shorter than it was at the start.
                self.shrunk = len(chunk) < pending[1]
                ahead = not self.shrunk and self.policy.read_ahead
                pending = self._read_next() if ahead else None
                await self._write(handler, chunk)
                del chunk  # not held while the next piece is read
                if pending is None and not self.shrunk:
                    pending = self._read_next()
        except StreamClosedError:
            self.client_left = True
        finally:
            if pending is not None:
                await asyncio.wait([pending[0]])
        return self.sent

    async def _write(self, handler: BaseHandler, chunk: bytes) -> None:
        if not chunk:
            return
        if self.bucket is not None:
            await self.bucket.consume(len(chunk))
        started = self.clock()
        handler.write(chunk)
        await handler.flush()
        self.sent += len(chunk)
        self.policy.taken(len(chunk), self.clock() - started)
