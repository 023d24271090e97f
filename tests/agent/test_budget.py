"""The agent's read budget (`agent.budget`): what it grants, that it is never exceeded, that
every way a download ends gives its buffers back.

The `ReadBudget` is driven directly; `SpanSender` runs over a real file and a real executor
with writers that are slow, that vanish or whose file read fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tornado.iostream import StreamClosedError

from agent.budget import FLOOR, Buffer, ReadBudget, Share, piece_sizes
from agent.files import SpanSender

KIB, MIB = 1024, 1024 * 1024


def budget_for(slots: int, capacity: int, max_piece: int = MIB) -> ReadBudget:
    return ReadBudget(capacity, slots=slots, max_piece=max_piece)


# -- what a download is granted --------------------------------------------------------


def test_piece_sizes_are_the_floor_doubled_up_to_the_largest_piece() -> None:
    assert piece_sizes(64 * KIB, MIB) == [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB, MIB]
    assert piece_sizes(64 * KIB, 1_000_000) == [64 * KIB, 128 * KIB, 256 * KIB, 512 * KIB,
                                                1_000_000]
    assert piece_sizes(16 * KIB, 16 * KIB) == [16 * KIB]


def test_one_download_alone_gets_full_pieces_and_one_ahead() -> None:
    budget = budget_for(32, 32 * MIB)
    share = budget.share()
    first, ahead = share.borrow(MIB), share.borrow(MIB)
    assert first is not None and ahead is not None
    assert (first.size, ahead.size) == (MIB, MIB)
    assert budget.in_use == 2 * MIB and budget.squeezed == 0


def test_pieces_shrink_to_a_fair_part_as_downloads_come() -> None:
    budget = budget_for(32, 32 * MIB)
    shares = [budget.share() for _ in range(32)]
    # floor + (32 MiB - 32 x 64 KiB) / (2 x 32) = 544 KiB: the 512 KiB size
    sizes = [b.size for b in (s.borrow(MIB) for s in shares) if b is not None]
    assert sizes == [512 * KIB] * 32
    assert budget.in_use == 16 * MIB <= budget.capacity


def test_a_download_holding_nothing_always_gets_its_floor_at_once() -> None:
    """Stalled downloads holding all the shared budget cannot starve the others."""
    budget = budget_for(4, 4 * FLOOR + 2 * MIB)
    hog = budget.share()
    held = [hog.borrow(MIB), hog.borrow(MIB)]
    assert all(b is not None for b in held) and budget.in_use == 2 * MIB
    assert hog.borrow(MIB) is None  # its read-ahead: the shared rest is gone
    others = [budget.share() for _ in range(3)]
    got = [s.borrow(MIB) for s in others]
    # never None, never waits: the first takes the last 64 KiB of the shared rest with its
    # floor, the others their floors
    assert [b.size for b in got if b is not None] == [2 * FLOOR, FLOOR, FLOOR]
    assert budget.in_use == budget.capacity
    assert budget.squeezed == 4  # the refused read-ahead and three small pieces


def test_a_download_that_comes_late_gets_only_what_is_free() -> None:
    """Pieces granted while fewer downloads ran are still held: the newcomer's fair part
    would not fit beside them, so it gets what fits: its floor and 64 KiB of the rest."""
    budget = budget_for(2, 2 * FLOOR + 2 * MIB + 64 * KIB)
    early = budget.share()
    assert [b.size for b in (early.borrow(MIB), early.borrow(MIB)) if b is not None] == [
        MIB, MIB]
    late = budget.share()  # its fair part: 64 KiB + (2 MiB + 64 KiB) / 4 -> 512 KiB
    got = late.borrow(MIB)
    assert got is not None and got.size == 2 * FLOOR  # 256 KiB would not fit
    assert budget.in_use == 2 * MIB + 2 * FLOOR <= budget.capacity


def test_a_read_ahead_is_whole_or_nothing() -> None:
    budget = budget_for(2, 2 * FLOOR + MIB)
    a, b = budget.share(), budget.share()
    # two downloads: a fair piece is 64 KiB + 1 MiB / 4, the 256 KiB size
    for share in (a, b, a, b):
        got = share.borrow(MIB)
        assert got is not None and got.size == 256 * KIB
    assert budget.in_use == MIB  # 128 KiB of the budget left, less than a piece
    assert a.borrow(MIB) is None
    assert budget.in_use == MIB


def test_a_download_cannot_take_more_than_the_slots_allow() -> None:
    budget = budget_for(2, 2 * FLOOR)
    budget.share(), budget.share()
    with pytest.raises(RuntimeError):
        budget.share()


def test_a_budget_too_small_for_its_slots_is_refused() -> None:
    with pytest.raises(ValueError):
        ReadBudget(31 * FLOOR, slots=32, max_piece=MIB)


def test_a_huge_budget_maps_nothing_up_front() -> None:
    """A typo like ``read_budget: 1TB`` costs nothing until downloads really use it."""
    budget = budget_for(32, 1 << 40)
    assert budget.mapped == 0
    share = budget.share()
    buffer = share.borrow(MIB)
    assert buffer is not None and buffer.size == MIB and budget.mapped == MIB


# -- never exceeded, whatever the order ---------------------------------------------------

ops = st.lists(
    st.tuples(st.sampled_from(["open", "borrow", "give", "close"]), st.integers(0, 7),
              st.integers(1, 3 * MIB)),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(slots=st.integers(1, 8), extra=st.integers(0, 8 * MIB), steps=ops)
def test_in_use_and_mapped_never_exceed_the_budget(slots: int, extra: int,
                                                   steps: list[tuple[str, int, int]]) -> None:
    budget = budget_for(slots, slots * FLOOR + extra)
    shares: list[Share] = []
    held: dict[int, list[Buffer]] = {}
    for op, who, want in steps:
        if op == "open" and budget.downloads < slots:
            shares.append(budget.share())
            continue
        if not shares:
            continue
        share = shares[who % len(shares)]
        mine = held.setdefault(id(share), [])
        if op == "borrow":
            buffer = share.borrow(want)
            if not mine:
                assert buffer is not None and buffer.size >= min(FLOOR, budget.max_piece)
            if buffer is not None:
                mine.append(buffer)
        elif op == "give" and mine:
            share.give_back(mine.pop(0))
        elif op == "close":
            share.close()
            shares.remove(share)
            held.pop(id(share))
        assert budget.in_use == sum(b.size for bs in held.values() for b in bs)
        assert budget.in_use <= budget.capacity
        assert budget.mapped <= budget.capacity
        assert budget.high_water <= budget.capacity
    for share in shares:
        share.close()
    assert (budget.in_use, budget.downloads, budget.mapped) == (0, 0, 0)


def test_idle_buffers_are_reused_then_unmapped_when_no_download_runs() -> None:
    budget = budget_for(4, 32 * MIB)
    share = budget.share()
    first = share.borrow(MIB)
    assert first is not None
    share.give_back(first)
    again = share.borrow(MIB)
    assert again is first  # the same mapping: no new page faults
    assert budget.mapped == MIB
    share.close()
    assert budget.mapped == 0 and budget.in_use == 0


def test_a_buffer_a_read_may_still_fill_is_not_pooled() -> None:
    budget = budget_for(4, 32 * MIB)
    share = budget.share()
    buffer = share.borrow(MIB)
    assert buffer is not None
    share.give_back(buffer, reuse=False)
    fresh = share.borrow(MIB)
    assert fresh is not None and fresh is not buffer


# -- SpanSender gives everything back, however the download ends --------------------------


class Writer:
    """A client: *delay* seconds per piece; *vanish_after* pieces, then it is gone."""

    def __init__(self, delay: float = 0.0, vanish_after: int | None = None) -> None:
        self.delay = delay
        self.vanish_after = vanish_after
        self.body = bytearray()
        self.pieces = 0

    async def flush(self) -> None:
        if self.vanish_after == 0:
            raise StreamClosedError()

    async def write_piece(self, piece: memoryview) -> None:
        if self.vanish_after is not None and self.pieces >= self.vanish_after:
            raise StreamClosedError()
        self.pieces += 1
        self.body += piece
        await asyncio.sleep(self.delay)


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(4 * MIB + 4321)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


def run_senders(path: Path, budget: ReadBudget, writers: list[Writer], stop: int) -> list[int]:
    async def main() -> list[int]:
        fds = [os.open(path, os.O_RDONLY) for _ in writers]
        with ThreadPoolExecutor(4) as executor:
            try:
                senders = [SpanSender(fd, 0, stop, budget=budget, executor=executor)
                           for fd in fds]
                return list(await asyncio.gather(*(s.send(w)
                                                   for s, w in zip(senders, writers,
                                                                   strict=True))))
            finally:
                for fd in fds:
                    os.close(fd)

    return asyncio.run(main())


def assert_all_given_back(budget: ReadBudget) -> None:
    assert (budget.in_use, budget.downloads, budget.mapped) == (0, 0, 0)


def test_many_slow_downloads_share_the_budget_and_get_exact_bytes(
    data_file: tuple[Path, bytes],
) -> None:
    path, data = data_file
    budget = budget_for(8, 8 * FLOOR + MIB)  # small: pieces must shrink
    writers = [Writer(0.002 * (i % 3)) for i in range(8)]
    sent = run_senders(path, budget, writers, len(data))
    assert sent == [len(data)] * 8
    assert all(hashlib.sha256(w.body).digest() == hashlib.sha256(data).digest()
               for w in writers)
    assert 0 < budget.high_water <= budget.capacity
    assert budget.squeezed > 0  # the budget, not the pace, sized some pieces
    assert_all_given_back(budget)


def test_clients_that_vanish_give_their_buffers_back(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    budget = budget_for(4, 32 * MIB)
    writers = [Writer(vanish_after=n) for n in (0, 1, 3, 7)]
    sent = run_senders(path, budget, writers, len(data))
    assert sent == [len(w.body) for w in writers] and sent[0] == 0
    assert_all_given_back(budget)


def test_a_failed_read_gives_its_buffers_back(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    budget = budget_for(4, 32 * MIB)

    async def main() -> None:
        fd = os.open(path, os.O_WRONLY)  # reading it fails: EBADF
        try:
            with pytest.raises(OSError):
                await SpanSender(fd, 0, len(data), budget=budget).send(Writer())
        finally:
            os.close(fd)

    asyncio.run(main())
    assert_all_given_back(budget)


class Observer:
    """Stands in for the send pass's digest: hashes what it is shown, checks the order."""

    def __init__(self, start: int) -> None:
        self.sha, self.offset = hashlib.sha256(), start

    def update(self, piece: memoryview, offset: int) -> None:
        assert offset == self.offset, "pieces out of order"
        self.sha.update(piece)
        self.offset += len(piece)


def test_the_observer_sees_every_byte_in_order(data_file: tuple[Path, bytes]) -> None:
    path, data = data_file
    budget = budget_for(4, 32 * MIB)
    observer = Observer(100)

    async def main() -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            sender = SpanSender(fd, 100, len(data), budget=budget, observer=observer)  # type: ignore[arg-type]
            return await sender.send(Writer())
        finally:
            os.close(fd)

    assert asyncio.run(main()) == len(data) - 100
    assert observer.sha.digest() == hashlib.sha256(data[100:]).digest()
