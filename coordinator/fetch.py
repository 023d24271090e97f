"""Fetching one planned file from its agent into an `EntryData`: flow-controlled, resumable,
abortable.

* Every request asks for ``Range: bytes=<reached>-<planned_size-1>``, so a log that grows
  is captured as it was planned; what an agent sends beyond the planned size is cut.
* Flow control: the ``streaming_callback`` returns the entry's "room again" awaitable when
  its buffer is full; tornado (≥ 6.6) then stops reading the socket, TCP pushes back, and
  the agent's ``await flush()`` waits. A slow client therefore slows the agent.
* An agent that drops or stalls mid-entry is asked again from the byte reached, up to
  ``download.resume_attempts`` times. One that cannot be reached before its first byte is
  marked down: its remaining files are not tried (they are zero-filled or left out).
* A resume that finds another file at the path (the agent's ETag names another inode:
  the log was rotated while its agent was away) stops the entry there instead of splicing
  the new file's bytes onto the old one's (`common.etag`).
* ``idle_timeout``: no byte for that long (while the zip is ready to take one) aborts the
  connection — tornado's client has no cancel, `AgentApi.abort` closes its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tornado.httpclient import HTTPRequest, HTTPResponse

from common.etag import file_identity
from coordinator.agentapi import AgentApi
from coordinator.archive import EntryData
from coordinator.config import DownloadConfig
from coordinator.model import NodePlan, PlannedFile
from coordinator.status import NODE_ERROR_LIMIT, NodeStatus, clip_error

CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
BACKOFF_START = 0.25  # seconds before the first resume; doubled each time
BACKOFF_MAX = 2.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


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
                 file: PlannedFile, entry: EntryData, *,
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
        self._replaced = False
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None  # the idle watchdog of the attempt

    async def run(self) -> None:
        if self.entry.remaining == 0:
            self.entry.finish()
            return
        self.node.begin()
        try:
            error = await self._attempts()
        finally:
            self.node.end()
        self.entry.finish(error)

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
        last = self.file.size - 1
        return self.api.request(
            self.url,
            headers={"Range": f"bytes={start}-{last}", "Accept-Encoding": "identity"},
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
        elif line.strip() == "" and self._code == 200:
            self._skip = self.entry.received  # the agent ignored Range: drop what we have

    def _check_content_range(self, value: str) -> None:
        match = CONTENT_RANGE_RE.match(value)
        if match is None or int(match.group(1)) != self.entry.received:
            self._abort(f"agent sent an unexpected Content-Range {value!r}")

    def _check_identity(self, etag: str) -> None:
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
        if self._skip:
            drop = min(self._skip, len(chunk))
            self._skip -= drop
            chunk = chunk[drop:]
        waiter = self.entry.feed(chunk)
        if self.entry.remaining == 0 and self._code == 200:
            self._abort("planned size reached")  # Range ignored: the rest is not wanted
            return None
        return waiter

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
