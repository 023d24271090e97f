"""``fleetzip get``: stream ``/api/download`` to disk, then summarise ``status.json``.

The body is copied in `CHUNK`-sized pieces into a hidden temporary file next to the target
(``.NAME.XXXX.part``) and renamed over the target only when every promised byte has arrived;
on any error or interruption the temporary file is removed, so the final name never holds a
half archive. (A ``kill -9`` cannot be cleaned up: the hidden ``.part`` file stays.)
"""

from __future__ import annotations

import contextlib
import email.message
import http.client
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

from tqdm import tqdm

from coordinator.client.http import (
    ClientError,
    ConnectFailed,
    HttpOptions,
    join_url,
    open_url,
    origin,
)
from coordinator.client.summary import (
    EXIT_INCOMPLETE,
    ArchiveSummary,
    StatusUnreadable,
    human_bytes,
    node_table,
    read_status,
)

CHUNK = 256 * 1024  # 256K: few syscalls, flat memory
DEFAULT_COLUMNS, DEFAULT_ROWS = 80, 24
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class Selection:
    """The query of ``/api/download`` (SPEC §4); empty values are left out."""

    root: str
    path: str | None = None
    glob: str | None = None
    since: str | None = None
    nodes: str | None = None
    labels: str | None = None
    compression: str | None = None
    name: str | None = None

    def query(self) -> str:
        params = {k: v for k, v in vars(self).items() if v not in (None, "")}
        return urlencode(params)


@dataclass(frozen=True)
class GetResult:
    file: Path
    bytes: int
    summary: ArchiveSummary | None
    status_error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.summary is None:
            return EXIT_INCOMPLETE
        return self.summary.exit_code

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"file": str(self.file), "bytes": self.bytes,
                               "exit_code": self.exit_code, "status_error": self.status_error}
        doc.update(self.summary.as_dict() if self.summary else {"nodes": []})
        return doc

    def report(self) -> str:
        """The human summary: where the archive is, then one row per node."""
        head = f"saved {self.file} ({human_bytes(self.bytes)})"
        if self.summary is None:
            return f"{head}\nwarning: {self.status_error}"
        return f"{head}\n{node_table(self.summary)}"


@dataclass(frozen=True)
class Progress:
    """Whether and where to draw the progress bar (tqdm: bytes, rate, ETA)."""

    enabled: bool = False
    stream: IO[str] = field(default_factory=lambda: sys.stderr)


def download(
    coordinator: str,
    selection: Selection,
    output: str | None,
    options: HttpOptions,
    progress: Progress | None = None,
) -> GetResult:
    """Download the merged archive of *selection* into *output*; raises `ClientError`."""
    url = join_url(coordinator, "/api/download?" + selection.query())
    progress = progress or Progress()
    with open_url(url, options, headers={"Accept": "application/zip"}) as response:
        length = content_length(response)
        name = archive_name(response.getheader("Content-Disposition"), selection.root)
        target = output_path(output, name)
        with progress_bar(progress, length, target.name) as update:
            received = save_atomically(response, target, length, update, url)
    try:
        summary: ArchiveSummary | None = read_status(target)
        problem = None
    except StatusUnreadable as exc:
        summary, problem = None, str(exc)
    return GetResult(target, received, summary, problem)


def content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ClientError(f"bad Content-Length from the coordinator: {value!r}") from None
    if length < 0:
        raise ClientError(f"bad Content-Length from the coordinator: {value!r}")
    return length


def archive_name(disposition: str | None, root: str) -> str:
    """The file name of ``Content-Disposition`` (RFC 6266 ``filename*`` too), made safe.

    Only a bare name is taken — never a directory — so a server cannot choose where the
    file lands. Without a usable name: ``fleetzip-<root>.zip``.
    """
    fallback = f"fleetzip-{_safe(root) or 'archive'}.zip"
    if not disposition:
        return fallback
    message = email.message.Message()
    message["Content-Disposition"] = disposition
    name = message.get_filename()
    if not name:
        return fallback
    name = _safe(os.path.basename(name.replace("\\", "/")))
    return name if name not in ("", ".", "..") else fallback


def _safe(name: str) -> str:
    return _UNSAFE_NAME_CHARS.sub("_", name).strip().lstrip(".")


def output_path(output: str | None, name: str) -> Path:
    """``-o FILE`` as given; ``-o DIR`` (existing, or ending in ``/``) or none: DIR/name."""
    if output is None:
        return Path.cwd() / name
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        if not path.is_dir():
            raise ClientError(f"output directory {output} does not exist")
        return path / name
    if not path.parent.is_dir():
        raise ClientError(f"output directory {path.parent} does not exist")
    return path


@contextlib.contextmanager
def progress_bar(
    progress: Progress, total: int | None, label: str
) -> Iterator[Callable[[int], Any]]:
    """A byte counter drawn by tqdm; exact percentage and ETA when *total* is known."""
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=label,  # SI: MB = 10^6 B
        file=progress.stream, disable=not progress.enabled, leave=True,
        miniters=1, mininterval=0.2, **_screen(progress.stream),
    ) as bar:
        yield bar.update


def _screen(stream: IO[str]) -> dict[str, int]:
    """The terminal's size for tqdm; 80x24 when unknown or reported as 0x0 (some ptys do,
    and tqdm then hides the bar)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return {"ncols": DEFAULT_COLUMNS, "nrows": DEFAULT_ROWS}
    return {"ncols": size.columns or DEFAULT_COLUMNS, "nrows": size.lines or DEFAULT_ROWS}


def save_atomically(
    response: http.client.HTTPResponse,
    target: Path,
    length: int | None,
    on_chunk: Callable[[int], Any],
    url: str,
) -> int:
    """Copy the body to a temporary file beside *target*, check it, rename it into place."""
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            received = copy_body(response, out, on_chunk)
            if length is not None and received != length:
                raise ConnectFailed(
                    f"download from {origin(url)} ended early: received {received} of "
                    f"{length} bytes promised by Content-Length; nothing saved", "protocol")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return received


def copy_body(response: http.client.HTTPResponse, out: IO[bytes],
              on_chunk: Callable[[int], Any]) -> int:
    """Copy *response*'s body to *out* one `CHUNK` at a time; the number of bytes copied."""
    received = 0
    while chunk := response.read1(CHUNK):  # what has arrived: a smooth progress bar
        out.write(chunk)
        received += len(chunk)
        on_chunk(len(chunk))
    return received


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
