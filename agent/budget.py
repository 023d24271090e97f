"""One read budget per agent (``read_budget``): the bytes read from disk and not yet handed
to the kernel, across all downloads, never exceed it.

Every download holds a `Share` of the agent's `ReadBudget` while it runs. Each piece it sends
is read into a buffer borrowed through the share (`Share.borrow`) and given back
(`Share.give_back`) once the kernel has every byte of it; `ReadBudget.in_use` is the sum of
the borrowed buffers, so it bounds what the pieces in flight can cost.

How a piece is granted — no download ever fails, or waits, for budget:

* Each of the ``max_concurrent_downloads`` slots has a *floor* — one smallest piece, 64 KiB —
  set aside. A download that holds nothing always gets at least its floor at once, so clients
  that stall while holding big pieces cannot starve the others.
* The rest (``capacity - slots * floor``) is shared. A piece bigger than the floor takes the
  difference from it: at most a fair part, ``floor + shared / (2 * downloads)`` (2: a fast
  download has one piece read ahead), and at most what is free. Pieces shrink when the
  budget is busy and grow back when it is not; one download alone gets ``chunk_size`` pieces.
* A download that already holds a piece (it wants to read the next one ahead) gets the
  whole piece from the shared rest or nothing: it then reads after sending, not ahead.

Piece sizes are the floor times a power of two, up to the largest piece (``chunk_size``),
which is a size of its own. The buffers are anonymous ``mmap`` regions kept in a pool and
reused, so they never come from ``malloc``: glibc cannot keep freed pieces as heap, the
mapped total (borrowed + pooled) never exceeds the budget, and the pool is unmapped — the
memory given back to the system — whenever no download runs.

Everything runs on the IOLoop thread; only the reads into a borrowed buffer run elsewhere.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

FLOOR = 64 * 1024  # the smallest piece; the pace policy's minimum as well


class Buffer:
    """One pooled buffer: an anonymous mapping of `size` bytes."""

    __slots__ = ("memory", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # private: plain anonymous memory (a shared mapping would be shmem)
        self.memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def unmap(self) -> None:
        """Give the memory back to the system now.

        A view of the buffer may outlive its use: a connection that failed keeps the error's
        traceback, whose frames hold the view of the piece it was sending, until the garbage
        collector breaks the cycle; a read cancelled at shutdown may still be filling it. The
        mapping then stays until that view goes, but its pages are discarded at once
        (``MADV_DONTNEED``): nothing will read them again.
        """
        try:
            self.memory.close()
        except BufferError:
            if hasattr(mmap, "MADV_DONTNEED"):
                self.memory.madvise(mmap.MADV_DONTNEED)

    def view(self, length: int) -> memoryview:
        return memoryview(self.memory)[:length]


class ReadBudget:
    """*capacity* bytes of pieces in flight, shared by at most *slots* downloads."""

    def __init__(self, capacity: int, *, slots: int, max_piece: int) -> None:
        self.max_piece = max(1, max_piece)
        self.floor = min(FLOOR, self.max_piece)
        if capacity < slots * self.floor:
            raise ValueError(f"a budget of {capacity} bytes cannot set aside {self.floor} "
                             f"bytes for each of {slots} downloads")
        self.capacity = capacity
        self.slots = slots
        self.shared = capacity - slots * self.floor
        self.sizes = piece_sizes(self.floor, self.max_piece)
        self.in_use = 0  # bytes borrowed by downloads now
        self.high_water = 0  # the most ever borrowed at once
        self.squeezed = 0  # pieces granted smaller than asked, or not read ahead: budget busy
        self.downloads = 0  # shares open now
        self._shared_used = 0  # the part of `in_use` above the downloads' floors
        self._pool = BufferPool(capacity, keep=max(2 * self.max_piece, capacity // 8))

    @property
    def mapped(self) -> int:
        """Bytes mapped for buffers: borrowed ones plus idle ones kept for reuse."""
        return self._pool.mapped

    @property
    def mapped_high_water(self) -> int:
        return self._pool.high_water

    def share(self) -> Share:
        """A download's share; close it (`Share.close`) when the download ends."""
        if self.downloads >= self.slots:
            raise RuntimeError(f"more than {self.slots} downloads hold a share of the budget")
        self.downloads += 1
        return Share(self)

    def fair_piece(self) -> int:
        return self.floor + self.shared // (2 * max(1, self.downloads))

    def _grant(self, holding: int, want: int) -> int:
        """The piece size to lend a download holding *holding* bytes that asks for *want*."""
        target = fit(self.sizes, min(want, self.fair_piece()))
        room = self.shared - self._shared_used
        if holding > 0:  # a read-ahead: all of it from the shared rest, or nothing
            more = _above_floor(holding + target, self.floor) - _above_floor(holding, self.floor)
            return target if more <= room else 0
        for size in reversed(self.sizes):
            if size <= target and _above_floor(size, self.floor) <= room:
                return size
        raise AssertionError("unreachable: the floor always fits")  # sizes[0] == floor

    def _lend(self, share: Share, want: int) -> Buffer | None:
        size = self._grant(share.holding, want)
        if size < fit(self.sizes, want):
            self.squeezed += 1
        if size == 0:
            return None
        before = _above_floor(share.holding, self.floor)
        share.holding += size
        self._shared_used += _above_floor(share.holding, self.floor) - before
        self.in_use += size
        self.high_water = max(self.high_water, self.in_use)
        return self._pool.get(size)

    def _take_back(self, share: Share, buffer: Buffer, *, reuse: bool) -> None:
        before = _above_floor(share.holding, self.floor)
        share.holding -= buffer.size
        self._shared_used -= before - _above_floor(share.holding, self.floor)
        self.in_use -= buffer.size
        self._pool.put(buffer, reuse=reuse)

    def _closed(self) -> None:
        self.downloads -= 1
        if self.downloads == 0:
            self._pool.trim()


class Share:
    """One download's part of a `ReadBudget`: the buffers it borrowed and not yet gave back."""

    def __init__(self, budget: ReadBudget) -> None:
        self.budget = budget
        self.holding = 0
        self._borrowed: dict[int, Buffer] = {}
        self.closed = False

    def borrow(self, want: int) -> Buffer | None:
        """A buffer for the next piece, sized to *want* or less; never waits.

        Holding nothing, the download always gets one (at least the floor). Holding a piece,
        it gets the whole read-ahead piece or None.
        """
        if self.closed:
            raise RuntimeError("borrow from a closed share")
        buffer = self.budget._lend(self, want)
        if buffer is not None:
            self._borrowed[id(buffer)] = buffer
        return buffer

    def give_back(self, buffer: Buffer, *, reuse: bool = True) -> None:
        """Return *buffer*. ``reuse=False``: a read may still be filling it, do not pool it."""
        if self._borrowed.pop(id(buffer), None) is not None:
            self.budget._take_back(self, buffer, reuse=reuse)

    def close(self) -> None:
        """Give back whatever is still borrowed (without pooling it) and leave the budget."""
        if self.closed:
            return
        for buffer in list(self._borrowed.values()):
            self.give_back(buffer, reuse=False)
        self.closed = True
        self.budget._closed()


class BufferPool:
    """Idle buffers by size, for reuse; the mapped total (lent + idle) stays ≤ *limit*.

    At most *keep* bytes stay idle: enough for downloads that give a piece back and borrow
    the next one of the same size at once (the steady state, where reuse saves the page
    faults of a fresh mapping); buffers of sizes nobody asks for any more are unmapped.
    """

    def __init__(self, limit: int, keep: int) -> None:
        self.limit = limit
        self.keep = keep
        self.mapped = 0
        self.high_water = 0  # the most ever mapped at once
        self._idle: dict[int, list[Buffer]] = {}
        self._idle_bytes = 0

    def get(self, size: int) -> Buffer:
        idle = self._idle.get(size)
        if idle:
            self._idle_bytes -= size
            return idle.pop()
        for victim in self._victims(self.limit - size):  # unmap idle ones to make room
            self._drop(victim)
        self.mapped += size
        self.high_water = max(self.high_water, self.mapped)
        return Buffer(size)

    def put(self, buffer: Buffer, *, reuse: bool) -> None:
        if not reuse:
            self._drop(buffer)
            return
        self._idle.setdefault(buffer.size, []).append(buffer)
        self._idle_bytes += buffer.size
        for victim in self._victims(self.mapped - self._idle_bytes + self.keep):
            self._drop(victim)

    def trim(self) -> None:
        """Unmap every idle buffer (nothing runs: give the memory back)."""
        for victim in self._victims(self.mapped - self._idle_bytes):
            self._drop(victim)

    def _victims(self, mapped_at_most: int) -> Iterator[Buffer]:
        """Idle buffers to unmap, oldest first, until the mapped total is *mapped_at_most*."""
        for idle in self._idle.values():
            while idle and self.mapped > mapped_at_most:
                buffer = idle.pop(0)
                self._idle_bytes -= buffer.size
                yield buffer

    def _drop(self, buffer: Buffer) -> None:
        self.mapped -= buffer.size
        buffer.unmap()


def piece_sizes(floor: int, max_piece: int) -> list[int]:
    """``floor * 2**k`` below *max_piece*, then *max_piece* itself: the sizes pieces come in."""
    sizes = []
    size = floor
    while size < max_piece:
        sizes.append(size)
        size *= 2
    sizes.append(max_piece)
    return sizes


def fit(sizes: list[int], want: int) -> int:
    """The largest of *sizes* ≤ *want*, or the smallest when *want* is below them all."""
    best = sizes[0]
    for size in sizes:
        if size <= want:
            best = size
    return best


def _above_floor(holding: int, floor: int) -> int:
    return max(0, holding - floor)
