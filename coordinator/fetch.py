"""Fetching one planned file from its agent into an `Entry`: flow-controlled, resumable,
abortable; with the checksums release-0.2 agents give.

* Stored entries of an agent with the ``checksum`` feature: the CRC-32 of the planned range
  is asked first (``GET /checksum/...?start=0&end=size``) and promised in the local header;
  this runs when the fetch starts, i.e. up to ``download.parallel`` entries ahead of the one
  being written (the prefetch). After the data, ``/checksum?...&sha256=1`` gives the SHA-256
  (cached by the agent's send pass) and the range's CRC-32 now: another CRC than the one
  promised marks the entry corrupt (no ``If-Match``: a log that grew has another ETag, but
  its planned range is intact). When no CRC can be had before the header, the
  entry takes at most ``size - 4`` bytes and its last 4 bytes are padding that makes the
  promised CRC hold (`coordinator.zipwriter.forcing_bytes`); it is marked partial.
* ``compression=deflate`` with the ``deflate`` feature: ``?compress=deflate`` answers frames
  (`FrameParser`) of raw deflate that the writer splices into the entry; a resume asks from
  the last complete frame with its running CRC (``crc=``).

* Every request asks for ``Range: bytes=<reached>-<planned_size-1>``, so a log that grows
  is captured as it was planned; what an agent sends beyond the planned size is cut.
* Flow control: the ``streaming_callback`` returns the entry's "room again" awaitable when
  its buffer is full; tornado (≥ 6.6) then stops reading the socket, TCP pushes back, and
  the agent's ``await flush()`` waits. A slow client therefore slows the agent.
* An agent that drops or stalls mid-entry is asked again from the byte reached, up to
  ``download.resume_attempts`` times. One that cannot be reached before its first byte is
  marked down: its remaining files are not tried (they are zero-filled or left out).
* A resume sends the file's ETag (the plan's, else the first answer's) as ``If-Range``: an
  agent whose file changed answers 200 with the whole file. If the ETag names another inode
  (the log was rotated while its agent was away) the entry stops there instead of splicing
  the new file's bytes onto the old one's (`common.etag`); the same inode (a log that grew)
  goes on from the byte reached.
* ``idle_timeout``: no byte for that long (while the zip is ready to take one) aborts the
  connection — tornado's client has no cancel, `AgentApi.abort` closes its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import HTTPRequest, HTTPResponse

from common.etag import file_identity
from coordinator.agentapi import AgentApi, AgentError, AgentStatusError, AgentUnreachable
from coordinator.config import DownloadConfig
from coordinator.digest import crc32_zeros
from coordinator.entry import Entry, Mode
from coordinator.model import NodePlan, PlannedFile
from coordinator.status import NODE_ERROR_LIMIT, NodeStatus, clip_error

CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
SPAN_RE = re.compile(r"^(\d{1,19})-(\d{1,19})/(\d{1,19})$")  # X-Fleetzip-Source-Span
BACKOFF_START = 0.25  # seconds before the first resume; doubled each time
BACKOFF_MAX = 2.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FRAME_HEADER = struct.Struct(">III")  # compressed length, raw length, running CRC-32
MAX_FRAME = 16 * 1024 * 1024  # a frame (~1 MiB of input) held whole: bounded, refused above
FRAMES_TYPE = "application/x-fleetzip-deflate-frames"
CRC_TAIL = 4  # bytes of padding that can force a CRC-32


class FrameError(Exception):
    """The agent's deflate frames break the protocol."""


class FrameParser:
    """Splits a ``compress=deflate`` body into frames; holds at most one frame.

    Each frame is ``>III`` (compressed length L, raw length R, running CRC-32) and L bytes
    of raw deflate ending at a sync-flush boundary. Only complete frames come out: a body
    cut inside a frame is resumed from the last complete one.
    """

    def __init__(self, budget: int, max_frame: int = MAX_FRAME) -> None:
        self.budget = budget  # source bytes the frames may still cover
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: tuple[int, int, int] | None = None

    def feed(self, data: bytes) -> list[tuple[bytes, int, int]]:
        self._buf += data
        frames: list[tuple[bytes, int, int]] = []
        while True:
            if self._need is None:
                if len(self._buf) < FRAME_HEADER.size:
                    return frames
                length, raw, crc = FRAME_HEADER.unpack_from(self._buf)
                if length > self.max_frame:
                    raise FrameError(f"deflate frame of {length} bytes (limit {self.max_frame})")
                if raw > self.budget:
                    raise FrameError(f"deflate frame covers {raw} bytes, {self.budget} remain")
                del self._buf[:FRAME_HEADER.size]
                self._need = (length, raw, crc)
            length, raw, crc = self._need
            if len(self._buf) < length:
                return frames
            frames.append((bytes(self._buf[:length]), raw, crc))
            del self._buf[:length]
            self.budget -= raw
            self._need = None


class NodeRun:
    """One node during one download: its status, and whether it is known to be down."""

    def __init__(self, plan: NodePlan, status: NodeStatus,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan = plan
        self.status = status
        self.clock = clock
        self.down: str | None = None
        self.started: float | None = None
        self.active = 0

    def begin(self) -> None:
        if self.started is None:
            self.started = self.clock()
        self.active += 1

    def end(self) -> None:
        self.active -= 1
        if self.started is not None:
            self.status.duration_s = self.clock() - self.started

    def mark_down(self, reason: str) -> None:
        if self.down is None:
            self.down = reason
            self.status.error = clip_error(reason, NODE_ERROR_LIMIT)


@dataclass
class _Attempt:
    """How one HTTP exchange ended."""

    error: str | None = None  # None: the entry is complete (or the file ended early)
    retry: bool = False  # worth asking again from the byte reached
    unreachable: bool = False  # no answer at all (refused, timeout, reset)
    short: bool = False  # the agent's file is shorter than planned


class EntryFetch:
    """Fetches one planned file into *entry*; ``await run()``; ``cancel()`` from outside."""

    def __init__(self, api: AgentApi, config: DownloadConfig, node: NodeRun,
                 file: PlannedFile, entry: Entry, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.config = config
        self.node = node
        self.file = file
        self.entry = entry
        self.sleep = sleep
        self.clock = clock
        self.url = api.file_url(node.plan.agent, node.plan.root, file.path)
        self.request: HTTPRequest | None = None
        self.cancelled = False
        self._abort_reason: str | None = None
        self._skip = 0
        self._code = 0
        self._identity: str | None = None  # the file's inode, from the first answer's ETag
        self._etag = file.etag  # If-Range of resumes (the plan's, else the first answer's)
        self.frames = entry.mode is Mode.AGENT_DEFLATE
        self._parser: FrameParser | None = None
        self._frames_ok = False  # the answer says it is frames (X-Fleetzip-Compression)
        self.frame_crc = 0  # running CRC-32 after the last complete frame
        self._replaced = False
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None  # the idle watchdog of the attempt

    async def run(self) -> None:
        try:
            if self.entry.mode is Mode.AGENT_CRC and self.entry.sized:
                await self._promise_crc()
            if self.entry.remaining > 0 and self.node.down is None:
                self.node.begin()
                try:
                    error = await self._attempts()
                finally:
                    self.node.end()
            else:
                error = (f"not fetched: node down ({self.node.down})"
                         if self.node.down is not None and self.entry.remaining else None)
            self.entry.finish(error)
            if self.entry.mode.agent_checksums and not self.cancelled:
                await self._verify()
        finally:
            self.entry.verified.set()

    # -- checksums (agents with the "checksum" feature) -------------------------------------

    def _checksum_request(self, sha256: bool) -> HTTPRequest:
        query = {"start": "0", "end": str(self.file.size)}
        if sha256:
            query["sha256"] = "1"
        url = self.api.url(self.node.plan.agent, "checksum", self.node.plan.root,
                           self.file.path, query)
        # No If-Match after the entry: a log that grew since has another ETag, yet its planned
        # range is intact. The range's CRC-32 now, against the one promised, is the check.
        # A pre-pass over a big file takes time on the agent: the idle timeout bounds it.
        return self.api.request(url, request_timeout=self.config.idle_timeout or None)

    async def _checksum(self, sha256: bool) -> dict[str, Any]:
        body = await self.api.get_json(self._checksum_request(sha256))
        return checked_checksum(body, self.file.size)

    async def _promise_crc(self) -> None:
        """The CRC-32 promised in the local header: the agent's, or one the padding forces."""
        if self.node.down is not None:
            self._no_crc(f"not fetched: node down ({self.node.down})")
            return
        try:
            answer = await self._checksum(sha256=False)
        except AgentUnreachable as exc:
            self.node.mark_down(str(exc))
            self._no_crc(str(exc))
            return
        except AgentError as exc:
            if isinstance(exc, AgentStatusError) and exc.status == 416:
                self._no_crc(f"file shorter than planned ({exc})")
            else:
                self._no_crc(f"no CRC-32 from the agent before the entry: {exc}")
            return
        if self._etag is None and isinstance(answer.get("etag"), str):
            self._etag = answer["etag"]
        self.entry.promise(answer["crc32"])

    def _no_crc(self, reason: str) -> None:
        """No CRC before the header: take at most size - 4 bytes, force the promise in the last
        4 (a file under 4 bytes: all zeros, promised as such)."""
        size = self.file.size
        self.entry.wanted = max(size - CRC_TAIL, 0)
        self.entry.promise(0 if size >= CRC_TAIL else crc32_zeros(size))
        self.entry.note(reason)

    async def _verify(self) -> None:
        """After the entry: the agent's SHA-256 of the range, and whether its CRC still is
        the one promised (the file may have been rewritten in place)."""
        if self.entry.received < self.file.size or self.node.down is not None:
            return  # partial: no checksum can match it
        try:
            answer = await self._checksum(sha256=True)
        except AgentStatusError as exc:
            if exc.status == 412:
                self.entry.changed = "file changed on the agent while it was read"
            else:
                self.entry.note(f"no SHA-256 from the agent: {exc}")
            return
        except AgentError as exc:
            self.entry.note(f"no SHA-256 from the agent: {exc}")
            return
        identity = file_identity(answer["etag"]) if answer["etag"] else None
        if self._identity is not None and identity not in (None, self._identity):
            return  # another file at the path now (rotated after it was read): not ours
        self.entry.agent_crc32 = answer["crc32"]
        self.entry.agent_sha256 = answer["sha256"]

    def cancel(self, reason: str = "client left") -> None:
        """Stop now: close the agent connection and drop what is buffered."""
        self.cancelled = True
        self._abort(reason)
        self.entry.discard()

    # -- attempts --------------------------------------------------------------------------

    async def _attempts(self) -> str | None:
        retries = 0
        while True:
            if self.node.down is not None:
                return f"not fetched: node down ({self.node.down})"
            reached = self.entry.received
            outcome = await self._attempt()
            if self.cancelled:
                return "cancelled"
            if self._replaced:
                return self._gave_up(outcome.error or "file replaced on the agent", retries)
            if outcome.error is None:
                return None if not outcome.short else self._short_message()
            if outcome.unreachable and reached == 0 == self.entry.received:
                self.node.mark_down(outcome.error)  # down before its first byte: no resume
                return outcome.error
            if not outcome.retry or retries >= self.config.resume_attempts:
                if outcome.unreachable:
                    self.node.mark_down(outcome.error)
                return self._gave_up(outcome.error, retries)
            retries += 1
            if self.entry.received > 0:
                self.entry.status.resumed += 1
            await self.sleep(min(BACKOFF_START * 2 ** (retries - 1), BACKOFF_MAX))

    def _short_message(self) -> str:
        return f"file shorter than planned: {self.entry.received} of {self.file.size} bytes"

    def _gave_up(self, error: str, retries: int) -> str:
        tries = f" after {retries} resume attempts" if retries else ""
        return f"{error} at byte {self.entry.received}{tries}"

    async def _attempt(self) -> _Attempt:
        start = self.entry.received
        request = self._make_request(start)
        self.request = request
        self._abort_reason = None
        self._skip = 0
        self._code = 0
        self._last_activity = self.clock()
        self._watch()
        try:
            response = await self.api.client.fetch(request, raise_error=False)
        except Exception as exc:  # tornado raises 599s (no response) even so
            return self._judge_failure(exc, start)
        finally:
            self._unwatch()
            self.request = None
        return self._judge(response, start)

    def _make_request(self, start: int) -> HTTPRequest:
        last = self.entry.wanted - 1
        headers = {"Range": f"bytes={start}-{last}", "Accept-Encoding": "identity"}
        if start > 0 and self._etag:
            # Stored: another file now gives 200 and the whole of it (checked below). Frames
            # are 200 in any case: If-Match makes another file a 412 instead.
            headers["If-Match" if self.frames else "If-Range"] = self._etag
        url = self.url
        self._frames_ok = False
        if self.frames:
            url += f"?compress=deflate&crc={self.frame_crc}"
            self._parser = FrameParser(self.entry.remaining)
        return self.api.request(
            url,
            headers=headers,
            request_timeout=0,  # streams have no total deadline; the idle watchdog rules
            header_callback=self._on_header,
            streaming_callback=self._on_chunk,
        )

    def _judge(self, response: HTTPResponse, start: int) -> _Attempt:
        if self.entry.remaining == 0:
            return _Attempt()  # everything planned arrived (any extra was cut)
        if response.code == 599:
            return self._judge_failure(response.error, start)
        if response.code in (200, 206):
            return _Attempt(short=True)  # a clean end before the planned size
        if response.code == 416:
            return _Attempt(short=True)  # the file is now shorter than the byte reached
        if response.code == 412:
            return _Attempt("file replaced on the agent during the download (If-Match)")
        if response.code in RETRY_STATUSES:
            return _Attempt(f"agent answered HTTP {response.code}", retry=True)
        return _Attempt(f"agent answered HTTP {response.code} {response.reason}".rstrip())

    def _judge_failure(self, error: BaseException | None, start: int) -> _Attempt:
        """No (complete) response: refused, reset, timed out, or aborted by us."""
        if self.entry.remaining == 0:
            return _Attempt()  # we closed it ourselves at the planned size
        reason = self._abort_reason or _describe(error)
        dropped = self.entry.received > start
        return _Attempt(reason, retry=True, unreachable=not dropped)

    # -- tornado callbacks -----------------------------------------------------------------

    def _on_header(self, line: str) -> None:
        """Tornado hands the head line by line: status line, fields, then a blank line."""
        self._last_activity = self.clock()
        if line.startswith("HTTP/"):
            parts = line.split()
            self._code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self._skip = 0
        elif line.lower().startswith("content-range:") and self._code == 206:
            self._check_content_range(line.split(":", 1)[1].strip())
        elif line.lower().startswith("etag:") and self._code in (200, 206):
            self._check_identity(line.split(":", 1)[1].strip())
        elif line.lower().startswith("x-fleetzip-compression:"):
            self._frames_ok = line.split(":", 1)[1].strip().lower() == "deflate"
        elif line.lower().startswith("x-fleetzip-source-span:") and self.frames:
            self._check_span(line.split(":", 1)[1].strip())
        elif line.strip() == "" and self.frames and self._code in (200, 206):
            if not self._frames_ok:
                self._abort("agent did not answer deflate frames (no X-Fleetzip-Compression)")
        elif line.strip() == "" and self._code == 200:
            self._skip = self.entry.received  # Range ignored, or If-Range did not match

    def _check_content_range(self, value: str) -> None:
        match = CONTENT_RANGE_RE.match(value)
        if match is None or int(match.group(1)) != self.entry.received:
            self._abort(f"agent sent an unexpected Content-Range {value!r}")

    def _check_span(self, value: str) -> None:
        """Frames are 200 whatever span they hold: the span header says which one."""
        match = SPAN_RE.match(value)
        if match is None or int(match.group(1)) != self.entry.received \
                or int(match.group(2)) > self.entry.wanted:
            self._abort(f"agent sent frames of another span {value[:80]!r}")

    def _check_identity(self, etag: str) -> None:
        if self._etag is None:
            self._etag = etag
        identity = file_identity(etag)
        if identity is None:
            return  # not a fleetzip agent's ETag: nothing to compare
        if self._identity is None:
            self._identity = identity
        elif identity != self._identity:
            self._replaced = True
            self._abort("file replaced on the agent during the download (rotated?)")

    def _on_chunk(self, chunk: bytes) -> Awaitable[bool] | None:
        self._last_activity = self.clock()
        if self.cancelled or self._abort_reason is not None:
            self._abort(self._abort_reason or "cancelled")
            return None
        if self._code not in (200, 206):
            return None  # an error body: not file data
        if self.frames:
            return self._on_frames(chunk)
        if self._skip:
            drop = min(self._skip, len(chunk))
            self._skip -= drop
            chunk = chunk[drop:]
        waiter = self.entry.feed(chunk)
        if self.entry.remaining == 0 and self._code == 200:
            self._abort("planned size reached")  # Range ignored: the rest is not wanted
            return None
        return waiter

    def _on_frames(self, chunk: bytes) -> Awaitable[bool] | None:
        if self._parser is None or not self._frames_ok:
            return None
        try:
            frames = self._parser.feed(chunk)
        except FrameError as exc:
            self._abort(f"agent sent bad deflate frames: {exc}")
            return None
        for data, raw, crc in frames:
            self.frame_crc = crc
            self.entry.put(data, raw, crc)
        return self.entry.room()

    # -- idle timeout ----------------------------------------------------------------------
    # A timer on the loop, re-armed every min(idle_timeout / 4, 1 s) while an attempt runs
    # (not a task per attempt: creating, waking and cancelling one cost more than the rest
    # of a small entry's bookkeeping).

    def _watch(self) -> None:
        idle = self.config.idle_timeout
        if idle > 0:
            step = min(idle / 4, 1.0)
            self._timer = asyncio.get_running_loop().call_later(step, self._tick, idle, step)

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, idle: float, step: float) -> None:
        self._timer = None
        now = self.clock()
        if self.entry.blocked:
            self._last_activity = now  # waiting for the client, not for the agent
        elif now - self._last_activity >= idle:
            self._abort(f"no data from agent for {idle:g}s (idle_timeout)")
            return
        self._timer = asyncio.get_running_loop().call_later(step, self._tick, idle, step)

    def _abort(self, reason: str) -> None:
        if self._abort_reason is None:
            self._abort_reason = reason
        if self.request is not None:
            with contextlib.suppress(Exception):
                self.api.abort(self.request, reason)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "connection closed"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    text = str(error) or type(error).__name__
    return f"agent connection failed: {text}"


HEX = frozenset("0123456789abcdef")


def checked_checksum(body: Any, size: int) -> dict[str, Any]:
    """A ``/checksum`` answer, checked (an agent is untrusted input); `AgentError` if bad."""
    if not isinstance(body, dict):
        raise AgentError("invalid /checksum answer: not an object")
    crc = body.get("crc32")
    if not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc <= 0xFFFFFFFF:
        raise AgentError("invalid /checksum answer: crc32")
    sha = body.get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= HEX):
        raise AgentError("invalid /checksum answer: sha256")
    if body.get("end") not in (None, size):
        raise AgentError("invalid /checksum answer: another range")
    etag = body.get("etag")
    return {"crc32": crc, "sha256": sha,
            "etag": etag if isinstance(etag, str) and len(etag) < 200 else None}
