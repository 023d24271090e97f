"""``GET``/``HEAD /api/download`` (the merged ZIP) and ``GET /api/downloads`` (in flight).

The handlers are thin: parse the selection, plan, check the limits, set the headers, then
hand the client's ``write + flush`` to a `Download`, which runs the zip pipeline of
`coordinator.archive` over entry fetches from `coordinator.fetch`:

* ``download.parallel`` fetches run ahead of the entry being zipped; a fetch's slot is
  freed when the zip is done with its entry, so at most that many entry buffers exist;
* the client leaving (a failed flush, or ``on_connection_close``) cancels every agent
  fetch of that download at once;
* each download is counted in the metrics and written to the audit log;
* admission: at most ``download.max_concurrent`` downloads, and ``download.max_per_user``
  per caller (a Basic user, a bearer token, or a client address when auth is off); more
  get 429 with ``Retry-After``;
* a client that takes no byte for ``download.client_timeout`` is dropped: the archive is
  written in pieces of `CLIENT_PIECE` and each must go out within the timeout, else the
  connection is closed, the agent fetches cancelled and the slot freed.

App settings read here: ``downloads`` (a `DownloadManager`), ``planner``
(`coordinator.planner.Planner`); the caller is ``current_user`` (a
`coordinator.users.Caller`, set by the authenticator in ``prepare``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from asyncio import Future
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from tornado.iostream import StreamClosedError

from common.download_headers import attachment_disposition
from common.errors import TooManyRequests, Unavailable
from common.web import BaseHandler
from coordinator.agentapi import AgentApi
from coordinator.archive import (
    ZIP_THREADS,
    ArchiveStream,
    Cancelled,
    planned_archive_size,
    planned_entries,
)
from coordinator.config import CoordinatorConfig
from coordinator.entry import BufferGauge, Entry
from coordinator.fetch import EntryFetch, NodeRun
from coordinator.model import Plan
from coordinator.selection import parse_selection, query_arguments
from coordinator.status import ArchiveStatus, NodeStatus, iso_time
from coordinator.users import Caller

log = logging.getLogger(__name__)

RETRY_AFTER = 5  # seconds a client over max_concurrent / max_per_user is told to wait
# The client must take this much within client_timeout (so a reader slower than 256 KiB a
# minute is dropped at the default); smaller pieces cost more flushes per byte.
CLIENT_PIECE = 256 * 1024


class Download:
    """One merged download: its plan, per-node runs, entry fetches and the zip stream."""

    def __init__(self, download_id: str, plan: Plan, config: CoordinatorConfig,
                 agent_api: AgentApi, *, user: str, remote_ip: str | None,
                 caller_key: str | None = None, clock: Callable[[], float] = time.time,
                 executor: Executor | None = None) -> None:
        self.id = download_id
        self.plan = plan
        self.user = user
        self.caller_key = caller_key or f"user:{user}"  # what max_per_user counts
        self.remote_ip = remote_ip
        self.clock = clock
        self.started = clock()
        settings = config.download
        self.sized = plan.selection.compression == "stored"
        self.status = ArchiveStatus.from_plan(plan, started=self.started)
        self.gauge = BufferGauge()
        self.slots = asyncio.Semaphore(settings.parallel)
        self.nodes = [NodeRun(node, status)
                      for node, status in zip(plan.nodes, self.status.nodes, strict=False)]
        self.entries: list[Entry] = []
        self.fetches: list[EntryFetch] = []
        # The agent client reads bodies in pieces of chunk_size (`make_http_client`). An
        # entry takes pieces until it holds two chunks, so it holds under 3, and the next
        # chunk is there when the writer is done with the previous one.
        limit = 2 * settings.chunk_size
        runs = {id(run.plan): run for run in self.nodes}
        statuses = [f for run in self.nodes for f in run.status.files]
        for (node, file, spec, mode), file_status in zip(planned_entries(plan), statuses,
                                                         strict=True):
            entry = Entry(file_status, spec, mode, sized=self.sized, limit=limit,
                          gauge=self.gauge, on_consumed=self.slots.release)
            self.entries.append(entry)
            self.fetches.append(EntryFetch(agent_api, settings, runs[id(node)], file, entry))
        self.stream = ArchiveStream(self.status, self.entries, sized=self.sized,
                                    chunk_size=settings.chunk_size, gauge=self.gauge, clock=clock,
                                    executor=executor)
        self.archive_size = len(self.stream) if self.sized else None
        self.tasks: dict[asyncio.Task[None], EntryFetch] = {}
        self.result: str | None = None

    async def run(self, write: Callable[[bytes], Any],
                  on_sent: Callable[[int], None] | None = None) -> str:
        """Stream the archive through *write*; the result: ok, partial, failed, cancelled."""
        scheduler = asyncio.ensure_future(self._schedule())
        try:
            await self.stream.run(write, on_sent)
        except (Cancelled, StreamClosedError):
            self.result = "cancelled"
        else:
            # Every byte went out: a client that closed right after its last byte (its
            # `cancel` may come first) cancelled nothing.
            self.result = self._outcome()
        finally:
            scheduler.cancel()
            self.cancel_fetches("download ended")
        return self.result

    def cancel(self, reason: str = "client left") -> None:
        """Stop everything now: agent connections closed, buffers dropped."""
        if self.result is None:
            self.result = "cancelled"
        self.cancel_fetches(reason)
        self.stream.cancel()

    def cancel_fetches(self, reason: str) -> None:
        for fetch, task in self._running():
            fetch.cancel(reason)
            task.cancel()

    def _running(self) -> list[tuple[EntryFetch, asyncio.Task[None]]]:
        return [(fetch, task) for task, fetch in self.tasks.items() if not task.done()]

    async def _schedule(self) -> None:
        for fetch in self.fetches:
            await self.slots.acquire()
            task = asyncio.ensure_future(fetch.run())
            self.tasks[task] = fetch
            task.add_done_callback(self._fetch_done)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        fetch = self.tasks.pop(task)
        if task.cancelled():
            fetch.entry.finish("cancelled")
        elif task.exception() is not None:
            log.error("fetch of %s failed", fetch.url, exc_info=task.exception())
            fetch.entry.finish(f"internal error: {task.exception()}")
        fetch.entry.promise(0)  # (a no-op once promised) nobody may wait forever
        fetch.entry.verified.set()

    def _outcome(self) -> str:
        states = [n.state for n in self.status.nodes if n.state != "skipped"]
        if all(s == "ok" for s in states):
            return "ok"
        if all(s == "failed" for s in states):
            return "failed"
        return "partial"

    def progress(self) -> dict[str, Any]:
        """The shape of one item of ``GET /api/downloads``."""
        return {
            "id": self.id, "request": self.plan.selection.as_dict(), "user": self.user,
            "started": iso_time(self.started), "bytes_sent": self.stream.bytes_sent,
            "archive_size": self.archive_size,
            "nodes": [_node_progress(run) for run in self.nodes]
            + [_skipped_progress(s) for s in self.status.nodes[len(self.nodes):]],
        }


def _node_progress(run: NodeRun) -> dict[str, Any]:
    status = run.status
    done = status.files_done
    if run.down is not None:
        state = "failed"
    elif done == len(status.files):
        state = "done"
    elif run.started is not None:
        state = "running"
    else:
        state = "pending"
    return {"node": status.node, "state": state, "bytes": status.bytes, "files_done": done,
            "files_total": len(status.files)}


def _skipped_progress(status: NodeStatus) -> dict[str, Any]:
    return {"node": status.node, "state": status.state, "bytes": 0, "files_done": 0,
            "files_total": 0}


class DownloadManager:
    """The downloads in flight: admission (``max_concurrent``), audit, metrics."""

    def __init__(self, config: CoordinatorConfig, *, agent_api: AgentApi,
                 metrics: Any = None, audit: Any = None,
                 clock: Callable[[], float] = time.time,
                 executor: Executor | None = None) -> None:
        self.config = config
        # The SHA-256 lanes (one job per entry in flight) and deflate steps (one per
        # download) of every download run here; the threads start on first use.
        self.executor = executor or ThreadPoolExecutor(ZIP_THREADS,
                                                       thread_name_prefix="fleetzip-zip")
        self.agent_api = agent_api
        self.metrics = metrics
        self.audit = audit
        self.clock = clock
        self.active: dict[str, Download] = {}

    def check_capacity(self, caller_key: str | None = None) -> None:
        """`TooManyRequests` past ``max_concurrent``, or past ``max_per_user`` for
        *caller_key*."""
        limit = self.config.download.max_concurrent
        if len(self.active) >= limit:
            raise TooManyRequests(
                f"{len(self.active)} merged downloads are running, the limit is "
                f"download.max_concurrent = {limit}; retry later", retry_after=RETRY_AFTER)
        if caller_key is None:
            return
        per_caller = self.config.download.max_per_user
        mine = sum(1 for d in self.active.values() if d.caller_key == caller_key)
        if mine >= per_caller:
            raise TooManyRequests(
                f"you have {mine} merged downloads running, the limit is "
                f"download.max_per_user = {per_caller}; retry later", retry_after=RETRY_AFTER)

    def archive_size(self, plan: Plan) -> int | None:
        return planned_archive_size(plan)

    def prepare(self, plan: Plan, *, user: str, remote_ip: str | None,
                caller_key: str | None = None) -> Download:
        """A download of *plan*, not started yet; its ``archive_size`` is known already (the
        headers and the size limit use it: the size arithmetic is done once, here)."""
        return Download(secrets.token_hex(6), plan, self.config, self.agent_api,
                        user=user, remote_ip=remote_ip, caller_key=caller_key,
                        clock=self.clock, executor=self.executor)

    def start(self, download: Download) -> Download:
        """Admit *download* (`TooManyRequests` past ``max_concurrent`` or
        ``max_per_user``) and count it."""
        self.check_capacity(download.caller_key)
        self.active[download.id] = download
        if self.metrics is not None:
            self.metrics.download_started()
        return download

    async def run(self, download: Download, write: Callable[[bytes], Any]) -> str:
        on_sent = self.metrics.add_bytes if self.metrics is not None else None
        try:
            result = await download.run(write, on_sent)
        except BaseException:
            download.cancel("internal error")
            download.result = "failed"
            raise
        finally:
            self._finished(download)
        return result

    def _finished(self, download: Download) -> None:
        self.active.pop(download.id, None)
        result = download.result or "failed"
        if self.metrics is not None:
            self.metrics.download_finished(result)
        if self.audit is not None:
            self.audit.download(
                user=download.user, request=download.plan.selection.as_dict(),
                nodes=[{"node": n.node, "state": n.state, "bytes": n.bytes}
                       for n in download.status.nodes],
                bytes_sent=download.stream.bytes_sent, result=result, download_id=download.id,
                remote_ip=download.remote_ip, duration_s=round(self.clock() - download.started, 3),
                archive_size=download.archive_size)
        log.info("download %s by %s: %s, %d bytes", download.id, download.user, result,
                 download.stream.bytes_sent)

    def snapshot(self) -> dict[str, Any]:
        return {"downloads": [d.progress() for d in self.active.values()]}


class DownloadHandler(BaseHandler):
    """``GET``/``HEAD /api/download?root=…``: the merged ZIP, streamed."""

    route = "download"
    protected = True
    download: Download | None = None

    async def get(self) -> None:
        await self._serve(send_body=True)

    async def head(self) -> None:
        await self._serve(send_body=False)

    async def _serve(self, *, send_body: bool) -> None:
        manager: DownloadManager = self.settings["downloads"]
        planner = self.settings["planner"]
        selection = parse_selection(
            query_arguments(self.request.query_arguments),
            known_nodes=[a.name for a in planner.registry.agents()],
            default_compression=manager.config.download.compression, now=time.time())
        draining = self.settings.get("draining")
        if draining is not None and draining.is_set():
            raise Unavailable("the coordinator is shutting down", retry_after=RETRY_AFTER)
        caller = self._caller()
        if send_body:
            manager.check_capacity(caller.key)  # before asking every agent
        plan = await planner.plan(selection)
        if not send_body:
            size = manager.archive_size(plan)
            planner.check_limit(plan, size)
            self._set_archive_headers(plan, size)
            self.finish()
            return
        download = manager.prepare(plan, user=caller.name, remote_ip=self.request.remote_ip,
                                   caller_key=caller.key)
        planner.check_limit(plan, download.archive_size)
        self._set_archive_headers(plan, download.archive_size)
        self.download = manager.start(download)
        await manager.run(self.download, self._send)
        if self.download.result != "cancelled":
            self.finish()

    def _set_archive_headers(self, plan: Plan, size: int | None) -> None:
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", attachment_disposition(archive_name(plan)))
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        if size is not None:
            self.set_header("Content-Length", str(size))

    async def _send(self, data: bytes) -> None:
        """Write *data*; return once it went out (the pipeline awaits it).

        One piece at a time (tornado resolves only the latest write's future); a piece
        the client does not take within ``client_timeout`` drops the client.
        """
        timeout = self.settings["downloads"].config.download.client_timeout
        if len(data) <= CLIENT_PIECE:
            await self._flush_within(data, timeout)
            return
        view = memoryview(data)
        for start in range(0, len(data), CLIENT_PIECE):
            await self._flush_within(bytes(view[start:start + CLIENT_PIECE]), timeout)

    async def _flush_within(self, piece: bytes, timeout: float) -> None:
        self.write(piece)
        flushed: Future[None] = self.flush()
        timer = asyncio.get_running_loop().call_later(timeout, self._drop_stalled, flushed,
                                                      timeout)
        try:
            await flushed
        finally:
            timer.cancel()

    def _drop_stalled(self, flushed: Future[None], timeout: float) -> None:
        """The client took nothing for *timeout* s: free its slot and its agents."""
        reason = f"the client read nothing for download.client_timeout = {timeout:g}s"
        log.warning("download %s dropped: %s", self.download and self.download.id, reason)
        if self.download is not None:
            self.download.cancel(reason)
        # Closing forgets the pending write's future without resolving it: end the wait.
        if not flushed.done():
            flushed.set_exception(StreamClosedError())
        self.request.connection.close()  # type: ignore[union-attr]

    def on_connection_close(self) -> None:
        if self.download is not None:
            self.download.cancel("client left")

    def _caller(self) -> Caller:
        """The authenticated caller; without an authenticator, the client address."""
        caller = self.current_user
        if isinstance(caller, Caller):
            return caller
        return Caller("anonymous", f"address:{self.request.remote_ip}")


class DownloadsHandler(BaseHandler):
    """``GET /api/downloads``: the merged downloads in flight, with per-node progress."""

    route = "downloads"
    protected = True

    def get(self) -> None:
        manager: DownloadManager = self.settings["downloads"]
        self.write_json(manager.snapshot())


def archive_name(plan: Plan) -> str:
    name = plan.selection.name
    if not name:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(plan.created or time.time()))
        name = f"fleetzip-{plan.selection.root}-{stamp}"
    return name if name.lower().endswith(".zip") else name + ".zip"
