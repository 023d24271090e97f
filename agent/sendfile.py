"""Plain-TCP downloads by ``os.sendfile``: page cache → socket in the kernel, no byte in Python.

`FileHandler` sends a span this way when nothing has to see its bytes: no TLS (the kernel
cannot encrypt; an ``SSLIOStream`` keeps the copying path) and no digest to compute (the send
pass of a coordinator's range download, `agent.digests.SpanDigest`, reads the bytes in Python
anyway). Such a download borrows nothing from the read budget (`agent.budget`): no byte is
read into the agent, so it holds no buffer; `/metrics` counts its bytes apart
(``fleetzip_agent_sendfile_bytes_total``).

How it shares the socket with Tornado, with public APIs only:

* the headers go through Tornado (``flush()``); once they are in the kernel the stream's write
  buffer is empty and Tornado has no reason to touch the socket until the response ends;
* the body goes by ``os.sendfile`` on a *duplicate* of the socket's descriptor
  (``os.dup``), in the file executor (a file not in the page cache makes ``sendfile`` wait
  for the disk; the event loop must not). The duplicate is also what the loop watches for
  writability (`IOLoop.add_handler` with ``WRITE``): the stream's own descriptor stays
  registered the way `IOStream` left it, so nothing here fights its registration — one
  epoll set may hold two descriptors of one socket;
* the response ends by closing the connection (`HTTP1Connection.close`): Tornado counts the
  body it writes against ``Content-Length`` and would call a body it did not write missing,
  so a sendfile response says ``Connection: close`` and is the connection's last. The client
  still gets exactly ``Content-Length`` bytes, then the end of the connection.

Pacing (``max_bandwidth``) takes slices of a tenth of a second of the rate from the shared
`TokenBucket` before sending them, as the copying path does with its pieces. A send stops when
the client leaves (``EPIPE``/``ECONNRESET``, or Tornado closed the stream: shutdown), and when
the file ends before the span does (``sendfile`` returns 0: the file shrank; `shrunk`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from enum import Enum

from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from agent.bandwidth import TokenBucket

SLICE = 16 * 1024 * 1024  # most bytes one executor hop asks for, unpaced (it stops on EAGAIN)
THREAD_WAIT_MS = 20  # how long the executor thread waits for a full socket before giving up
UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # this file/socket can't sendfile


class Push(Enum):
    """How one run of ``sendfile`` calls in the executor ended."""

    DONE = "done"  # all bytes asked for are in the socket
    BLOCKED = "blocked"  # the socket's buffer is full (EAGAIN): wait until it is writable
    END = "end"  # the file ended before the span did
    GONE = "gone"  # the client left (EPIPE, ECONNRESET)


class SendfileUnsupported(Exception):
    """``sendfile`` refused this file or socket before sending anything (e.g. some FUSE)."""


class SendfileSpan:
    """Sends ``[start, stop)`` of *fd* to the socket *out_fd* (a duplicate the caller owns).

    *closed* tells whether the connection was closed meanwhile (Tornado closed the stream);
    `wake` is to be called when it is, so a wait for writability ends at once. Waits for the
    ``sendfile`` in flight before returning, so the caller may close both descriptors then.
    """

    def __init__(
        self,
        fd: int,
        start: int,
        stop: int,
        *,
        out_fd: int,
        closed: Callable[[], bool],
        bucket: TokenBucket | None = None,
        slice_size: int = SLICE,
        executor: Executor | None = None,
    ) -> None:
        self.fd, self.offset, self.stop = fd, start, stop
        self.out_fd = out_fd
        self.closed = closed
        self.bucket = bucket
        self.slice_size = max(1, slice_size)
        self.executor = executor
        self.sent = 0
        self.shrunk = False
        self.client_left = False
        self._waiter: asyncio.Future[None] | None = None

    async def send(self, flush: Callable[[], Awaitable[None]]) -> int:
        """Flush the headers with *flush*, then send the span; the number of bytes sent.

        `SendfileUnsupported` if the first call fails that way (nothing of the body sent).
        """
        paid = 0  # bytes taken from the bandwidth bucket and not sent yet
        try:
            await flush()
            while self.offset < self.stop and not self.closed():
                if paid == 0:
                    paid = min(self.slice_size, self.stop - self.offset)
                    if self.bucket is not None:
                        await self.bucket.consume(paid)
                sent_before = self.sent
                how = await self._push(paid)
                paid -= self.sent - sent_before
                if how is Push.GONE:
                    self.client_left = True
                    break
                if how is Push.END:
                    self.shrunk = True
                    break
                if how is Push.BLOCKED:
                    await self._writable()
        except StreamClosedError:  # gone before the headers went out
            self.client_left = True
        except OSError as exc:
            if exc.errno in UNSUPPORTED and self.sent == 0:
                raise SendfileUnsupported(str(exc)) from exc
            raise
        if self.closed() and self.offset < self.stop and not self.shrunk:
            self.client_left = True
        return self.sent

    def wake(self) -> None:
        """The connection closed: end a wait for writability now."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _push(self, count: int) -> Push:
        """Up to *count* bytes into the socket, in the executor; never left running."""
        loop = asyncio.get_running_loop()
        running = loop.run_in_executor(self.executor, self._sendfile, count)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            # The thread still uses both descriptors: let it finish before they can close.
            with contextlib.suppress(BaseException):
                await asyncio.wait([running])
            raise

    def _sendfile(self, count: int) -> Push:
        """``sendfile`` until *count* bytes are sent, the file ends, the client leaves, or the
        socket stays full for `THREAD_WAIT_MS` (blocking: in the executor).

        Moves `offset` and `sent` as it goes (the loop awaits it meanwhile), so bytes sent
        before an error are counted. A client that keeps up empties the socket's buffer
        within milliseconds: waiting for that here (``poll``) spares the loop a wake-up and
        the executor a hop per buffer-full. A slower one gives the thread back; the loop then
        waits for it (`_writable`)."""
        end = self.offset + count
        poller = select.poll()
        poller.register(self.out_fd, select.POLLOUT)
        while self.offset < end:
            try:
                n = os.sendfile(self.out_fd, self.fd, self.offset, end - self.offset)
            except BlockingIOError:
                if self.closed() or not poller.poll(THREAD_WAIT_MS):
                    return Push.BLOCKED
                continue
            except (BrokenPipeError, ConnectionResetError):
                return Push.GONE
            if n == 0:
                return Push.END
            self.offset += n
            self.sent += n
        return Push.DONE

    async def _writable(self) -> None:
        """Wait until the socket takes more (or failed, or the connection was closed)."""
        if self.closed():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter

        def ready(fd: int, events: int) -> None:
            if not waiter.done():
                waiter.set_result(None)

        io_loop = IOLoop.current()
        io_loop.add_handler(self.out_fd, ready, IOLoop.WRITE)
        try:
            await waiter
        finally:
            io_loop.remove_handler(self.out_fd)
            self._waiter = None
