"""``GET``/``HEAD /files/{root}/{path}``: one file, by ``sendfile`` or in ``chunk_size`` pieces.

The verb method reads like a script; every policy is a named hook. A plain download over TCP
(200, nothing needs to see its bytes) goes by ``os.sendfile`` (`agent.sendfile`): no byte
passes through Python and no budget buffer is held. Everything else — a range answered 206
(its send pass hashes the bytes), deflate frames, TLS — is read piece by piece, as follows.
Blocking work (resolving and opening the path, each read) runs in an executor; the event loop
only writes. Pieces are
paced to the client (`PacePolicy`): up to ``chunk_size`` and read one ahead while the client
keeps up; about 50 ms of its pace (at least 64 KiB) and nothing ahead while it is the
bottleneck, so slow downloads hold little memory. Every piece is read into a buffer of the
agent's read budget (`agent.budget`), which bounds the bytes read and not yet sent across all
downloads and adapts piece sizes to how many run. The span to send is fixed when the
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
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Protocol, cast

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from agent.bandwidth import TokenBucket
from agent.budget import Buffer, ReadBudget, Share
from agent.deflate import frame_request, send_frames
from agent.digests import SpanDigest
from agent.paths import OpenFile, open_regular_file
from agent.ranges import Conditions, Plan, Validators, plan_response
from agent.sendfile import SLICE, SendfileSpan, SendfileUnsupported
from agent.state import AgentState
from common.download_headers import (
    FILE_RESPONSE_HEADERS,
    attachment_disposition,
    content_type_for_name,
)
from common.etag import make_etag
from common.web import BaseHandler, error_body

log = logging.getLogger(__name__)

UNSENT_LOWAT = 128 * 1024  # unsent bytes the kernel may queue per download (limit_unsent)


class FileHandler(BaseHandler):
    route = "files"
    protected = True
    sendfile_span: SendfileSpan | None = None  # the body being sent by sendfile, if it is

    def set_default_headers(self) -> None:
        # Also called when an error replaces the answer: 4xx/5xx of this route carry them too.
        super().set_default_headers()
        for name, value in FILE_RESPONSE_HEADERS.items():
            self.set_header(name, value)

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
        self.set_header("Content-Type", content_type_for_name(opened.name))
        self.set_header("Content-Disposition", attachment_disposition(opened.name))
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
        """Stream ``[plan.start, plan.stop)`` of the file, holding a download slot.

        By ``sendfile`` when nothing has to see the bytes (`sendfile_socket`), else read
        piece by piece through the read budget (`SpanSender`).
        """
        self.state.acquire()
        digest = self.send_pass(opened, plan)
        sender: SpanSender | SendfileSpan | None = None
        try:
            if digest is None and self.sendfile_socket() is not None:
                sender = await self.send_by_sendfile(opened, plan)
            if sender is None:
                self.limit_unsent()
                sender = SpanSender(
                    opened.fd,
                    plan.start,
                    plan.stop,
                    budget=self.settings["read_budget"],
                    bucket=self.settings.get("bandwidth"),
                    executor=self.settings.get("file_executor"),
                    observer=digest,
                )
                await sender.send(self)
        finally:
            self.state.release()
            sent = sender.sent if sender is not None else 0
            self.count_bytes(sent, sendfile=isinstance(sender, SendfileSpan))
            if digest is not None:
                digest.finish(sent)
        assert sender is not None  # the try block ran to its end
        if sender.shrunk:
            self.file_shrank(sender.sent, plan.length)
        elif self.sendfile_span is not None:
            self.end_sendfile_response()

    def sendfile_socket(self) -> socket.socket | None:
        """The connection's socket if the body may go by ``sendfile``: plain TCP, not TLS."""
        if not hasattr(os, "sendfile"):
            return None
        stream = getattr(self.request.connection, "stream", None)
        if not isinstance(stream, IOStream) or isinstance(stream, SSLIOStream):
            return None
        sock = stream.socket
        if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
            return None
        return sock

    async def send_by_sendfile(self, opened: OpenFile, plan: Plan) -> SendfileSpan | None:
        """Send the span by ``sendfile`` (`agent.sendfile`); None if this file cannot be.

        The socket's descriptor is duplicated for the send and the writability wait, and the
        duplicate closed before this returns, whatever happened.
        """
        sock = self.sendfile_socket()
        assert sock is not None and self.request.connection is not None
        if self.keep_alive_server() is None:
            self.set_header("Connection", "close")  # end_sendfile_response closes it
        bucket: TokenBucket | None = self.settings.get("bandwidth")
        out_fd = os.dup(sock.fileno())
        stream = self.request.connection.stream  # type: ignore[attr-defined]
        span = SendfileSpan(
            opened.fd,
            plan.start,
            plan.stop,
            out_fd=out_fd,
            closed=stream.closed,
            bucket=bucket,
            slice_size=bucket.piece_size(self.settings["chunk_size"]) if bucket else SLICE,
            executor=self.settings.get("file_executor"),
        )
        self.sendfile_span = span
        try:
            await span.send(self.flush)
        except SendfileUnsupported as exc:
            log.info("%s: sendfile refused (%s); reading it instead", self.request.path, exc)
            self.sendfile_span = None  # nothing of the body went out: the copying path sends
            return None  # all of it, and Tornado ends that response itself
        finally:
            os.close(out_fd)
        return span

    def keep_alive_server(self) -> HTTPServer | None:
        """The server to hand the connection back to after a sendfile body; None: close it.

        Tornado keeps a connection open after a response when the request allows it
        (HTTP/1.1 without ``Connection: close``, HTTP/1.0 with ``keep-alive``) and the server
        does (``no_keep_alive``); the same rules here. No server in the settings (an app run
        without `agent.server`): close.
        """
        server: HTTPServer | None = self.settings.get("http_server")
        if server is None or server.conn_params.no_keep_alive or self.state.draining:
            return None
        tokens = {t.strip().lower() for t in self.request.headers.get("Connection", "").split(",")}
        if self.request.version == "HTTP/1.1":
            return None if "close" in tokens else server
        return server if self.request.version == "HTTP/1.0" and "keep-alive" in tokens else None

    def end_sendfile_response(self) -> None:
        """End a response whose body went by ``sendfile``, keeping the connection if allowed.

        Tornado did not write the body, so it cannot end the response itself (it counts what
        it writes against ``Content-Length`` and would call the body missing). The handler
        takes the stream back (`RequestHandler.detach`, which ends Tornado's processing of
        this request), logs the request and runs `on_finish` as ``finish()`` would, and hands
        the stream to the server (`HTTPServer.handle_stream`), which reads the next request
        on it — pipelined bytes already read stay in the stream's buffer. Otherwise the
        connection is closed.
        """
        connection = self.request.connection
        span = self.sendfile_span
        server = self.keep_alive_server()
        stream = getattr(connection, "stream", None)
        complete = span is not None and not span.client_left and not span.shrunk
        if not complete or server is None or stream is None or stream.closed():
            if connection is not None:
                connection.close()  # type: ignore[attr-defined]
            return
        try:
            address = stream.socket.getpeername()
        except OSError:  # the client is gone already
            connection.close()  # type: ignore[union-attr]
            return
        stream = self.detach()
        self.application.log_request(self)
        self.on_finish()
        server.handle_stream(stream, address)

    def on_connection_close(self) -> None:
        """The client left, or the server closes the connection (shutdown): stop waiting."""
        if self.sendfile_span is not None:
            self.sendfile_span.wake()
        super().on_connection_close()

    def write_piece(self, piece: memoryview) -> Awaitable[None]:
        """Hand one piece of the body to the connection; resolves once the kernel has all of it.

        Not ``self.write(chunk)`` + ``flush()``: `RequestHandler.write` takes only `bytes`, a new
        object for every piece — the heap the read budget is there to bound. The connection
        takes a view of the budget's reused buffer without copying it, counts it against
        ``Content-Length``, and its future resolves when the last byte is in the socket, the
        moment ``flush()`` would resolve. The headers went first, with ``flush()``.
        """
        assert self.request.connection is not None
        # typed `bytes`; HTTP1Connection hands it to IOStream.write, which takes a memoryview
        return self.request.connection.write(cast(bytes, piece))

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

    def count_bytes(self, sent: int, *, sendfile: bool = False) -> None:
        self.state.bytes_served += sent
        metrics = self.settings.get("agent_metrics")
        if metrics is not None:
            metrics.bytes_served.inc(sent)
            if sendfile:
                metrics.sendfile_bytes.inc(sent)


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


class PieceWriter(Protocol):
    """Where `SpanSender` writes: `FileHandler` (tests use their own)."""

    def flush(self) -> Awaitable[None]: ...

    def write_piece(self, piece: memoryview) -> Awaitable[None]: ...


class PieceRead:
    """A piece being read: the budget's buffer it goes into, its length, the read in flight."""

    __slots__ = ("buffer", "done", "length")

    def __init__(self, buffer: Buffer, length: int, done: asyncio.Future[int]) -> None:
        self.buffer, self.length, self.done = buffer, length, done

    @property
    def finished(self) -> bool:
        """The read no longer touches the buffer (a cancelled one may still, in its thread)."""
        return self.done.done() and not self.done.cancelled()


class SpanSender:
    """Reads ``[start, stop)`` of *fd* and writes it to a `PieceWriter`, paced by a `PacePolicy`.

    Each piece is read (``preadv``, in *executor*) into a buffer borrowed from the agent's
    `ReadBudget` and given back once the kernel has the piece; *observer* (if given, the send
    pass's `agent.digests.SpanDigest`) sees every piece's bytes, in order, in the read thread
    right after the read — the one place the body passes by, off the event loop. Stops quietly
    when the client leaves (`StreamClosedError`: the client's choice, not an error) and when
    the file ends before *stop* (`shrunk`). Waits for its reads in flight before returning, so
    the caller may close *fd* at once; returns every buffer to the budget, whatever happened.
    """

    def __init__(
        self,
        fd: int,
        start: int,
        stop: int,
        *,
        budget: ReadBudget,
        bucket: TokenBucket | None = None,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        observer: SpanDigest | None = None,
    ) -> None:
        self.fd, self.offset, self.stop = fd, start, stop
        self.budget = budget
        self.policy = PacePolicy(budget.max_piece, min_piece=budget.floor)
        self.bucket = bucket
        self.executor = executor
        self.clock = clock
        self.observer = observer  # sees each piece in the read thread (the send pass)
        self.sent = 0
        self.shrunk = False
        self.client_left = False
        self._reads: list[PieceRead] = []  # in flight or not yet sent

    async def send(self, out: PieceWriter) -> int:
        """Send the span; the number of bytes written."""
        share = self.budget.share()
        try:
            pending = self._read_next(share)
            if pending is not None:
                await pending.done  # a first read that fails still gets an error answer
            await out.flush()  # the headers
            while pending is not None:
                got = await pending.done
                # A short read means the file got shorter than it was at the start.
                self.shrunk = got < pending.length
                ahead = None
                if self.policy.read_ahead and not self.shrunk:
                    ahead = self._read_next(share)
                await self._write(out, pending.buffer.view(got))
                self._done_with(share, pending)
                if ahead is None and not self.shrunk:
                    ahead = self._read_next(share)
                pending = ahead
        except StreamClosedError:
            self.client_left = True
        finally:
            await self._settle(share)
        return self.sent

    def _read_next(self, share: Share) -> PieceRead | None:
        """Start reading the next piece, as big as the pace and the budget allow; None at the
        end of the span, or when the budget has no room for a read ahead."""
        left = self.stop - self.offset
        if left <= 0:
            return None
        buffer = share.borrow(min(self.policy.size, left))
        if buffer is None:
            return None
        length = min(buffer.size, left)
        done = asyncio.get_running_loop().run_in_executor(
            self.executor, self._pread_into, buffer.view(length), self.offset
        )
        self.offset += length
        read = PieceRead(buffer, length, done)
        self._reads.append(read)
        return read

    def _pread_into(self, view: memoryview, offset: int) -> int:
        """Read into *view* at *offset* (in the executor), then show the bytes to the observer.

        Reads are issued one at a time, each after the previous finished, so the observer sees
        the pieces in order."""
        got = os.preadv(self.fd, [view], offset)
        if self.observer is not None:
            self.observer.update(view[:got], offset)
        return got

    async def _write(self, out: PieceWriter, piece: memoryview) -> None:
        with piece:  # released after, even if a traceback keeps this frame: the buffer's
            if not piece:  # mapping can then go as soon as it is dropped
                return
            if self.bucket is not None:
                await self.bucket.consume(len(piece))
            started = self.clock()
            await out.write_piece(piece)
            self.sent += len(piece)
            self.policy.taken(len(piece), self.clock() - started)

    def _done_with(self, share: Share, read: PieceRead) -> None:
        self._reads.remove(read)
        share.give_back(read.buffer)

    async def _settle(self, share: Share) -> None:
        """Wait for the reads still in flight, then give every buffer back and close *share*."""
        try:
            running = [read.done for read in self._reads if not read.done.done()]
            if running:
                await asyncio.wait(running)
            for read in self._reads:
                share.give_back(read.buffer, reuse=read.finished)
        finally:
            self._reads.clear()
            share.close()  # anything left (cancelled while waiting) is dropped, not pooled
