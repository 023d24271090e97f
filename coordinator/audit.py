"""The audit log: one JSON line per merged download — who, what, which nodes, bytes, result.

``audit_log: stderr`` (the default) writes to the service's stderr; a path is appended to
and reopened on SIGHUP (so logrotate can move it). A line is small and written at once,
so a plain blocking write is fine on the event loop.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, target: str = "stderr", *, clock: Callable[[], float] = time.time) -> None:
        self.target = target
        self.clock = clock
        self._file: IO[str] | None = None
        if target != "stderr":
            self._file = self._open()

    def _open(self) -> IO[str]:
        return open(self.target, "a", encoding="utf-8", buffering=1)

    def _stream(self) -> IO[str]:
        return self._file if self._file is not None else sys.stderr

    def write(self, event: Mapping[str, Any]) -> None:
        """Append *event* as one JSON line, with ``time`` (ISO 8601 UTC) first."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        line = json.dumps({"time": stamp, **event}, separators=(",", ":"), default=str)
        try:
            stream = self._stream()
            stream.write(line + "\n")
            stream.flush()
        except OSError as exc:
            log.error("cannot write the audit log %s: %s", self.target, exc)

    def download(self, *, user: str, request: Mapping[str, Any], nodes: Sequence[Any],
                 bytes_sent: int, result: str, download_id: str | None = None,
                 remote_ip: str | None = None, duration_s: float | None = None,
                 archive_size: int | None = None) -> None:
        """The line for one merged download; *nodes* are names or per-node dicts."""
        self.write({
            "event": "download", "id": download_id, "user": user, "remote_ip": remote_ip,
            "request": dict(request), "nodes": list(nodes), "bytes_sent": bytes_sent,
            "archive_size": archive_size, "result": result, "duration_s": duration_s,
        })

    def reopen(self) -> None:
        """Reopen the file (after log rotation); keeps the old handle if that fails."""
        if self._file is None:
            return
        try:
            new = self._open()
        except OSError as exc:
            log.error("cannot reopen the audit log %s, keeping the old one: %s", self.target, exc)
            return
        self._file.close()
        self._file = new

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
