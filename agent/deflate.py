"""``GET /files/{root}/{path}?compress=deflate[&crc=C]``: a range as raw-deflate frames.

The coordinator splices these frames into a deflate entry of its ZIP (docs/agent-protocol.md).
The body is a sequence of frames, each ``>III`` (compressed length L, source length R, running
CRC-32 C) and L bytes of raw deflate that end on a ``Z_SYNC_FLUSH`` boundary and never hold a
final block. C is the CRC-32 of the source from the range's start through this frame,
continued from ``crc=`` (a resume). So a stream cut anywhere closes validly at its last
complete frame with ``b"\\x03\\x00"``, and a resume from a frame boundary with a fresh
compressor continues the same deflate stream.

Codec and level by measurement (``bench/agent_deflate.py``, generated access logs, 1 MiB
frames): isal level 2 compresses 447 MB/s per core, 10.3x zlib level 6, at 1.23x zlib-6's
size; zlib-ng level 2 gave 156 MB/s at 1.21x, zlib level 1 108 MB/s at 1.29x.

Each frame is read (``os.preadv`` into one reused buffer), digested (CRC-32 for the frame
header, SHA-256 for the cache: `agent.digests.SpanDigest`) and compressed in the file
executor; the event loop only writes. One frame's input and output per download are all it
holds. The input buffer is borrowed from the agent's read budget (`agent.budget`) for the
whole download, so frames take ``chunk_size`` of source while the budget has room and a fair
part of it when many downloads run — ``/metrics`` shows it in ``read_budget_in_use_bytes``.
The compressed frame (a ``bytes`` object at most about its source's size, handed to Tornado
and dropped once the kernel has it) is not counted: it exists only between compressing and
the write, and it is smaller than the source for anything worth compressing.
"""

from __future__ import annotations

import asyncio
import os
import struct
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from isal import isal_zlib
from tornado.iostream import StreamClosedError

from agent.bandwidth import TokenBucket
from agent.digests import SpanDigest
from agent.paths import OpenFile
from agent.query import integer_argument, single_argument
from agent.ranges import Plan
from common.errors import BadRequest

if TYPE_CHECKING:
    from agent.files import FileHandler

FRAME_HEADER = struct.Struct(">III")  # compressed length, source length, running CRC-32
CONTENT_TYPE = "application/x-fleetzip-deflate-frames"
COMPRESSION_HEADER = "X-Fleetzip-Compression"
SPAN_HEADER = "X-Fleetzip-Source-Span"  # "S-E/SIZE": the source range [S, E) these frames hold
LEVEL = 2  # isal's level 2 (its default): see the module docstring
CODINGS = ("deflate",)


@dataclass(frozen=True)
class FrameRequest:
    """What ``?compress=…&crc=…`` asked for."""

    coding: str
    crc: int = 0


def frame_request(handler: FileHandler) -> FrameRequest | None:
    """The request's ``compress``/``crc`` parameters; None for a plain download; else 400."""
    coding = single_argument(handler, "compress")
    crc = integer_argument(handler, "crc", maximum=0xFFFFFFFF)
    if coding is None:
        if crc is not None:
            raise BadRequest("crc is only valid with compress=deflate", parameter="crc")
        return None
    if coding not in CODINGS:
        raise BadRequest(
            f"compress must be one of {', '.join(CODINGS)}, not {coding[:40]!r}",
            parameter="compress",
        )
    return FrameRequest(coding, crc or 0)


class FrameEncoder:
    """Source pieces → frames, with one compressor for the whole response."""

    def __init__(self, crc: int = 0, level: int = LEVEL) -> None:
        self._compressor = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
        self.crc = crc

    def encode(self, piece: bytes | bytearray | memoryview) -> bytes:
        """One frame holding *piece* (blocking: run it in an executor)."""
        body = self._compressor.compress(piece) + self._compressor.flush(isal_zlib.Z_SYNC_FLUSH)
        self.crc = isal_zlib.crc32(piece, self.crc)
        return FRAME_HEADER.pack(len(body), len(piece), self.crc) + body


class FrameSender:
    """Reads ``[start, stop)`` of *fd* frame by frame and writes the frames to a handler.

    `sent` counts body bytes written, `delivered` the source bytes their frames hold.
    Stops quietly when the client leaves; `shrunk` when the file ended before *stop*.
    """

    def __init__(
        self,
        fd: int,
        start: int,
        stop: int,
        *,
        buffer: memoryview,
        crc: int = 0,
        digest: SpanDigest | None = None,
        bucket: TokenBucket | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.fd, self.offset, self.stop = fd, start, stop
        self.buffer = buffer  # frames hold up to len(buffer) source bytes
        self.encoder = FrameEncoder(crc)
        self.digest, self.bucket, self.executor = digest, bucket, executor
        self.sent = 0
        self.delivered = 0
        self.shrunk = False
        self.client_left = False

    def next_frame(self) -> tuple[bytes, int] | None:
        """The next frame and its source length; None at the end (blocking)."""
        size = min(len(self.buffer), self.stop - self.offset)
        if size <= 0:
            return None
        n = os.preadv(self.fd, [self.buffer[:size]], self.offset)
        self.shrunk = n < size
        if n <= 0:
            return None
        piece = self.buffer[:n]
        if self.digest is not None:
            self.digest.update(piece, self.offset)
        self.offset += n
        return self.encoder.encode(piece), n

    async def send(self, handler: FileHandler) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                step = await loop.run_in_executor(self.executor, self.next_frame)
                if step is None:
                    break
                frame, source = step
                length = len(frame)
                if self.bucket is not None:
                    await self.bucket.consume(length)
                handler.write(frame)
                del step, frame  # not held while the next frame is made
                await handler.flush()
                self.sent += length
                self.delivered += source
                if self.shrunk:
                    break
        except StreamClosedError:
            self.client_left = True


def set_frame_headers(handler: FileHandler, plan: Plan, size: int) -> None:
    """200 with the frames' type; no Content-Length: the body is chunked."""
    handler.set_status(200)
    handler.set_header("Content-Type", CONTENT_TYPE)
    handler.set_header(COMPRESSION_HEADER, "deflate")
    handler.set_header(SPAN_HEADER, f"{plan.start}-{plan.stop}/{size}")


async def send_frames(
    handler: FileHandler, opened: OpenFile, plan: Plan, request: FrameRequest, *, body: bool
) -> None:
    """Answer a ``compress=deflate`` request whose source span is ``plan``'s."""
    set_frame_headers(handler, plan, opened.size)
    if not body:
        return
    handler.state.acquire()
    handler.limit_unsent()
    checksums = handler.settings.get("checksums")
    digest = (
        checksums.send_pass(opened, plan.start, plan.stop, "deflate")
        if checksums is not None
        else None
    )
    share = handler.settings["read_budget"].share()
    borrowed = share.borrow(handler.settings["chunk_size"])  # holding nothing: never None
    sender = FrameSender(
        opened.fd,
        plan.start,
        plan.stop,
        buffer=borrowed.view(min(borrowed.size, plan.stop - plan.start)),
        crc=request.crc,
        digest=digest,
        bucket=handler.settings.get("bandwidth"),
        executor=handler.settings.get("file_executor"),
    )
    try:
        await sender.send(handler)
        sender.buffer.release()
        share.give_back(borrowed)  # for reuse: no read of it runs any more
    finally:
        share.close()  # anything still borrowed (a read cut short) is unmapped, not pooled
        handler.state.release()
        handler.count_bytes(sender.sent)
        if digest is not None:
            digest.finish(sender.delivered)
    if sender.shrunk:
        handler.file_shrank(sender.delivered, plan.length)
