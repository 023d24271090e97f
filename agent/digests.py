"""CRC-32 and SHA-256 of file ranges: the passes, their cache and the send-pass observer.

Nothing here knows about HTTP. Three ways a range's digests are made, all off the event loop:

* `digest_range`: a pass of its own (the ``/checksum`` route), ``os.preadv`` into one reused
  buffer. Not an mmap: a file truncated while mapped (``copytruncate`` log rotation) raises
  SIGBUS on the next touch of a page past the new end, which kills the process; a read just
  comes back short (`FileShrank`). ``bench/agent_checksum.py`` measured the price of the copy:
  0.22 CPU s/GiB against 0.14 for the mmap (isal CRC-32, page-cached file).
* `SpanDigest`: an observer the download's read thread calls with every piece it read, so a
  download of exactly a planned range leaves that range's digests behind at no extra read.
* `agent.deflate`: the compressing pass digests the bytes it compresses the same way.

CRC-32 is isal's (``isal.isal_zlib.crc32``): 3.6x faster than ``zlib.crc32`` and 1.3x faster
than zlib-ng's in ``bench/agent_checksum.py``. SHA-256 is hashlib's; both release the GIL on
large buffers.

`ChecksumCache` keeps the digests of recently seen ranges (a bounded LRU, by entries) under
`RangeKey`: device, inode, size, mtime (ns) of the file as opened and the range. A file that
changes size or mtime gets new keys, so a stale entry is never found for it again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from isal.isal_zlib import crc32
from prometheus_client import CollectorRegistry, Counter

from agent.paths import OpenFile

READ_BUFFER = 1024 * 1024  # bytes per read of a checksum pass: one buffer per running pass
CACHE_ENTRIES = 4096  # about 200 bytes each: under 1 MiB when full
NAMESPACE = "fleetzip_agent"


class FileShrank(Exception):
    """The file ended before the range did: it got shorter since it was opened."""


@dataclass(frozen=True)
class RangeKey:
    device: int
    inode: int
    size: int
    mtime_ns: int
    start: int
    end: int

    @classmethod
    def of(cls, opened: OpenFile, start: int, end: int) -> RangeKey:
        return cls(opened.device, opened.inode, opened.size, opened.mtime_ns, start, end)


@dataclass(frozen=True)
class Digests:
    crc32: int
    sha256: str | None  # hex; None when only the CRC was asked for


class ChecksumCache:
    """A bounded LRU of `Digests` by `RangeKey`; safe to use from several threads."""

    def __init__(self, max_entries: int = CACHE_ENTRIES) -> None:
        self.max_entries = max(0, max_entries)
        self._entries: OrderedDict[RangeKey, Digests] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: RangeKey) -> Digests | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def store(self, key: RangeKey, digests: Digests) -> Digests:
        """Keep *digests* for *key*; the value kept (a CRC-only pass keeps a known SHA-256).

        A pair from one pass always replaces what was there: when the bytes changed in
        place between two passes, the later pass's values are the ones to report.
        """
        with self._lock:
            old = self._entries.get(key)
            if digests.sha256 is None and old is not None and old.crc32 == digests.crc32:
                digests = replace(digests, sha256=old.sha256)
            self._entries[key] = digests
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
            return digests


def digest_range(fd: int, start: int, end: int, *, sha256: bool) -> Digests:
    """CRC-32 (and SHA-256 if asked) of bytes ``[start, end)`` of *fd* (blocking).

    Memory: one buffer of at most `READ_BUFFER` bytes. `FileShrank` when the file ends early.
    """
    buffer = memoryview(bytearray(max(1, min(READ_BUFFER, end - start))))
    crc, sha = 0, hashlib.sha256() if sha256 else None
    offset = start
    while offset < end:
        n = os.preadv(fd, [buffer[: end - offset]], offset)
        if n <= 0:
            raise FileShrank(f"the file ended at {offset}, before {end}")
        piece = buffer[:n]
        crc = crc32(piece, crc)
        if sha is not None:
            sha.update(piece)
        offset += n
    return Digests(crc, sha.hexdigest() if sha is not None else None)


def unchanged(opened: OpenFile) -> bool:
    """Whether the open file still has the size and mtime it was opened with (blocking)."""
    info = os.fstat(opened.fd)
    return info.st_size == opened.size and info.st_mtime_ns == opened.mtime_ns


class DigestMetrics:
    """Counters that show where digest work went (and, in tests, that a cache hit read nothing)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.digested = Counter(
            "digested_bytes",
            "File bytes run through CRC-32/SHA-256, by pass: checksum (a pass of its own), "
            "send (a download of a range), deflate (a compressed download)",
            ["source"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.cache = Counter(
            "checksum_cache_lookups",
            "Checksum route lookups in the digest cache, by result (hit, miss)",
            ["result"],
            namespace=NAMESPACE,
            registry=registry,
        )
        for source in ("checksum", "send", "deflate"):
            self.digested.labels(source)
        for result in ("hit", "miss"):
            self.cache.labels(result)


class SpanDigest:
    """Digests of the bytes a download reads, fed piece by piece in its read thread.

    `update` is called with each piece right after it was read, in order (a download issues
    its next read only after the previous one finished). `finish` stores the digests in the
    cache when exactly ``[start, end)`` was read *and* sent; anything else (the client left,
    the file shrank, a piece out of order) stores nothing.
    """

    def __init__(
        self,
        key: RangeKey,
        cache: ChecksumCache,
        metrics: DigestMetrics | None = None,
        source: str = "send",
    ) -> None:
        self.key, self.cache, self.metrics, self.source = key, cache, metrics, source
        self.offset = key.start
        self.crc = 0
        self.sha = hashlib.sha256()
        self.broken = False

    def update(self, piece: bytes | bytearray | memoryview, offset: int) -> None:
        """One piece read at *offset* (blocking work: call it in the read thread)."""
        if offset != self.offset or self.broken:
            self.broken = True
            return
        self.crc = crc32(piece, self.crc)
        self.sha.update(piece)
        self.offset += len(piece)

    @property
    def complete(self) -> bool:
        return not self.broken and self.offset == self.key.end

    def finish(self, sent: int) -> Digests | None:
        """Store the digests if the whole range was read and *sent* (source bytes delivered)."""
        if self.metrics is not None:
            self.metrics.digested.labels(self.source).inc(self.offset - self.key.start)
        if not self.complete or sent != self.key.end - self.key.start:
            return None
        return self.cache.store(self.key, Digests(self.crc, self.sha.hexdigest()))
