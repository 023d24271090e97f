"""The SHA-256 of one zip entry, computed as its bytes arrive, in order, off the event loop.

`_fleetzip/SHA256SUMS` needs a SHA-256 of every entry; it is the dearest thing the
coordinator does per byte (~0.55 CPU s/GiB with SHA-NI, against ~0.17 for the zip's CRC-32).
So it does not run where the zip generator runs: each entry has a `DigestLane` that hashes
the entry's pieces in a worker thread while the event loop moves bytes and the zip computes
its CRC-32 — the three overlap on different cores (``hashlib`` releases the GIL on big
buffers).

One job per lane is in flight at a time, so a lane stays in order while the lanes of all
entries share one executor; what arrives meanwhile is hashed by the next job, as one batch.
A batch under `INLINE_HASH` bytes (small files, the tail of an entry) is hashed on the
loop: the hop to a worker and back costs more than hashing it.

Everything here runs on the event loop except `_hash_batch`, which only touches the
``hashlib`` object of a lane that has no other job running.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

log = logging.getLogger(__name__)

# Measured on the 2-core bench VM: a hop to a worker and back costs ~35-75 us of CPU;
# SHA-256 costs ~0.53 us per KiB, so 64 KiB hashed on the loop (~34 us) costs about a hop.
INLINE_HASH = 64 * 1024
_ZEROS = memoryview(bytes(1024 * 1024))  # zero padding is hashed from this, in pieces

Piece = bytes | int  # bytes to hash, or a count of zero bytes (the padding of a short entry)


class DigestLane:
    """Hashes the pieces given to `update` / `zeros` in order; ``digest`` once `close`\\ d.

    *on_hashed(n)* is called on the loop each time *n* more bytes given to `update` were
    hashed (the entry frees their room then); *on_done()* once the digest is known or the
    lane was cancelled. *executor* None: the loop's default executor.
    """

    def __init__(self, executor: Executor | None, on_hashed: Callable[[int], None],
                 on_done: Callable[[], None], inline_limit: int = INLINE_HASH) -> None:
        self.executor = executor
        self.on_hashed = on_hashed
        self.on_done = on_done
        self.inline_limit = inline_limit
        self.digest: str | None = None
        self.done = asyncio.Event()
        self._hash = hashlib.sha256()
        self._pending: list[Piece] = []
        self._pending_bytes = 0
        self._running = False
        self._closed = False
        self._cancelled = False

    def update(self, data: bytes) -> None:
        if data:
            self._queue(data, len(data))

    def zeros(self, count: int) -> None:
        """*count* zero bytes follow (hashed from a shared buffer: nothing is allocated)."""
        if count > 0:
            self._queue(count, count)

    def close(self) -> None:
        """Nothing more comes: the digest is set once what is queued is hashed."""
        self._closed = True
        self._kick()

    def cancel(self) -> None:
        """Drop what is queued; no digest (a job still running ends harmlessly)."""
        self._cancelled = True
        self._pending.clear()
        self._pending_bytes = 0
        self._done()

    def _queue(self, piece: Piece, size: int) -> None:
        if self._cancelled or self._closed:
            return
        self._pending.append(piece)
        self._pending_bytes += size
        self._kick()

    def _kick(self) -> None:
        if self._running or self._cancelled:
            return
        if not self._pending:
            if self._closed:
                self.digest = self._hash.hexdigest()
                self._done()
            return
        batch, self._pending = self._pending, []
        size, self._pending_bytes = self._pending_bytes, 0
        if size < self.inline_limit:
            self._hashed(_hash_batch(self._hash, batch))
            return
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self.executor, _hash_batch, self._hash, batch)
        except RuntimeError:  # the executor is shut down (the coordinator is stopping)
            self._hashed(_hash_batch(self._hash, batch))
            return
        self._running = True
        future.add_done_callback(self._job_done)

    def _job_done(self, future: asyncio.Future[Any]) -> None:
        self._running = False
        if future.cancelled() or self._cancelled:
            return
        error = future.exception()
        if error is not None:  # never seen; the entry must not wait for a digest forever
            log.error("SHA-256 of an entry failed: %s", error, exc_info=error)
            self.cancel()
            return
        self._hashed(future.result())

    def _hashed(self, count: int) -> None:
        if count:
            self.on_hashed(count)
        self._kick()

    def _done(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self.on_done()


def _hash_batch(hasher: Any, batch: list[Piece]) -> int:
    """Hash *batch* into *hasher* (in a worker thread, or inline); the data bytes hashed."""
    data = 0
    for piece in batch:
        if isinstance(piece, int):
            for start in range(0, piece, len(_ZEROS)):
                hasher.update(_ZEROS[:min(len(_ZEROS), piece - start)])
        else:
            hasher.update(piece)
            data += len(piece)
    return data
