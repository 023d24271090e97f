"""The ZIP writer's records at their edges, byte for byte, in-process.

tests/coordinator/test_zipwriter_fields.py reads every field of ordinary archives back; the
edges here are the ones ``make mutation`` found untested: a value exactly at a zip64 limit
(APPNOTE 4.4.8: 0xFFFFFFFF is the marker, so a value equal to the limit must go to zip64),
the zip64 end record needed for one reason alone, an empty entry's local header, a deflate
entry that is zip64 only because it could grow, the layout after an entry of unknown size,
the central directory's write batches, and the exact messages of the writer's contract
errors. Expected bytes are spelled out with `struct` from APPNOTE, not taken from the writer.
The limits are lowered (as zipstream-ng's tests do) instead of writing GiBs.
"""

from __future__ import annotations

import asyncio
import calendar
import io
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence

import pytest

from coordinator import zipwriter
from coordinator.zipwriter import (
    CentralRecord,
    EntryLayout,
    EntrySpec,
    ZipWriteError,
    ZipWriter,
    central_header,
    central_header_size,
    deflated,
    dos_time,
    end_record,
    layout,
    local_header,
    needs_zip64_end,
    stored,
)

MTIME = calendar.timegm((2024, 3, 5, 12, 34, 56))
DOS_TIME = 12 << 11 | 34 << 5 | 28
DOS_DATE = (2024 - 1980) << 9 | 3 << 5 | 5
TIMESTAMP = struct.pack("<HHBi", 0x5455, 5, 1, MTIME)  # Info-ZIP extended timestamp, UTC
UTF8 = 0x0800
DESCRIPTOR = 0x0008
UNIX_FILE = 0o100644 << 16


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """DOS times are local: pin the zone so the expected fields are exact."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def zip64_extra(*values: int) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)


def local(name: bytes, *, version: int = 20, flags: int = UTF8, method: int = 0, crc: int = 0,
          csize: int = 0, size: int = 0, extra: bytes = TIMESTAMP) -> bytes:
    """A local file header (APPNOTE 4.3.7)."""
    return struct.pack("<4s5H3I2H", b"PK\x03\x04", version, flags, method, DOS_TIME, DOS_DATE,
                       crc, csize, size, len(name), len(extra)) + name + extra


def central(name: bytes, *, version: int = 20, flags: int = UTF8, method: int = 0, crc: int = 0,
            csize: int = 0, size: int = 0, offset: int = 0, extra: bytes = TIMESTAMP) -> bytes:
    """A central directory header (APPNOTE 4.3.12), made by Unix, mode 0644."""
    return struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 3 << 8 | version, version, flags, method,
                       DOS_TIME, DOS_DATE, crc, csize, size, len(name), len(extra), 0, 0, 0,
                       UNIX_FILE, offset) + name + extra


def end(count: int, central_size: int, central_offset: int) -> bytes:
    """End of central directory record (APPNOTE 4.3.16), one disk, no comment."""
    return struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, central_size,
                       central_offset, 0)


def zip64_end(count: int, central_size: int, central_offset: int) -> bytes:
    """Zip64 end record (4.3.14) and its locator (4.3.15)."""
    record = struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 3 << 8 | 45, 45, 0, 0, count, count,
                         central_size, central_offset)
    return record + struct.pack("<4sIQI", b"PK\x06\x07", 0, central_offset + central_size, 1)


class Sink:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    async def __call__(self, data: bytes) -> None:
        self.pieces.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)


def data_of(spec: EntrySpec) -> bytes:
    return bytes(i % 251 for i in range(spec.size or 0))


def write(specs: Sequence[EntrySpec], sink: Sink | None = None) -> bytes:
    """The archive of stored *specs* (CRC promised up front unless a descriptor follows)."""
    sink = sink or Sink()

    async def run() -> int:
        writer = ZipWriter(sink)
        for spec in specs:
            data = data_of(spec)
            await writer.begin(spec, None if spec.descriptor else zlib.crc32(data))
            await writer.write(data)
            await writer.end(zlib.crc32(data), len(data))
        return await writer.close()

    size = asyncio.run(run())
    assert size == len(sink.data)
    return sink.data


def read_all(archive: bytes) -> list[bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        return [zf.read(info) for info in zf.infolist()]


# ---------------------------------------------------------------------------------------------
# an empty entry and DOS dates


def test_an_empty_entry_is_exact_bytes_with_crc_and_sizes_zero() -> None:
    """A 0-byte stored entry: CRC 0 and sizes 0 in its local header (zipfile reads only the
    central one, so the whole archive is compared)."""
    spec = stored("e", MTIME, 0)
    archive = write([spec])
    head = local(b"e")
    directory = central(b"e")
    assert archive == head + directory + end(1, len(directory), len(head))
    assert local_header(spec, 0) == head
    assert read_all(archive) == [b""]


@pytest.mark.parametrize("when", [(2107, 6, 15, 10, 20, 30), (2107, 1, 1, 0, 0, 0)])
def test_a_date_within_2107_keeps_its_month_and_day(when: tuple[int, ...]) -> None:
    year, month, day, hour, minute, second = when
    assert dos_time(calendar.timegm((*when, 0, 0, 0))) == (
        hour << 11 | minute << 5 | second // 2, (year - 1980) << 9 | month << 5 | day)


# ---------------------------------------------------------------------------------------------
# zip64 at exactly the limit


LIMIT = 10_000


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", LIMIT)
    monkeypatch.setattr(zipwriter, "ZIP64_COUNT_LIMIT", 4)


FIRST_SIZE = LIMIT - 30 - 1 - 9  # "a": its local header (30 + name + timestamp) and data


@pytest.mark.usefixtures("limits")
def test_an_entry_exactly_at_the_offset_limit_has_its_offset_in_a_zip64_extra() -> None:
    first, second = stored("a", MTIME, FIRST_SIZE), stored("b", MTIME, 5)
    archive = write([first, second])
    data = [data_of(first), data_of(second)]
    assert archive[LIMIT:LIMIT + 40] == local(b"b", crc=zlib.crc32(data[1]), csize=5, size=5)
    directory = (central(b"a", crc=zlib.crc32(data[0]), csize=FIRST_SIZE, size=FIRST_SIZE)
                 + central(b"b", version=45, crc=zlib.crc32(data[1]), csize=5, size=5,
                           offset=0xFFFFFFFF, extra=TIMESTAMP + zip64_extra(LIMIT)))
    central_offset = LIMIT + 40 + 5
    assert archive[central_offset:] == (directory + zip64_end(2, len(directory), central_offset)
                                        + end(2, len(directory), central_offset))
    assert read_all(archive) == data
    assert layout([first, second]).size == len(archive)


@pytest.mark.usefixtures("limits")
def test_a_central_directory_starting_exactly_at_the_limit_needs_the_zip64_end() -> None:
    spec = stored("a", MTIME, FIRST_SIZE)
    archive = write([spec])
    directory = central(b"a", crc=zlib.crc32(data_of(spec)), csize=FIRST_SIZE,
                        size=FIRST_SIZE)
    assert archive[LIMIT:] == directory + zip64_end(1, len(directory), LIMIT) + end(
        1, len(directory), LIMIT)
    # one byte less: no zip64 end record
    shorter = write([stored("a", MTIME, FIRST_SIZE - 1)])
    assert b"PK\x06\x06" not in shorter and len(shorter) == LIMIT - 1 + len(directory) + 22
    assert read_all(archive) == [data_of(spec)]


@pytest.mark.usefixtures("limits")
def test_exactly_the_count_limit_of_entries_needs_the_zip64_end() -> None:
    specs = [stored(f"{i}", MTIME, 1) for i in range(4)]
    archive = write(specs)
    directory_size = 4 * (46 + 1 + 9)
    directory_offset = 4 * (40 + 1)
    assert archive[-(56 + 20 + 22):] == zip64_end(4, directory_size, directory_offset) + end(
        4, directory_size, directory_offset)
    assert b"PK\x06\x06" not in write(specs[:3])
    assert read_all(archive) == [b"\x00"] * 4


def test_a_central_directory_exactly_at_the_size_limit_needs_the_zip64_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The zip64 end record for the directory's size alone: one 56-byte central header."""
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 56)
    spec = stored("a", MTIME, 5)
    archive = write([spec])
    directory = central(b"a", crc=zlib.crc32(data_of(spec)), csize=5, size=5)
    assert len(directory) == 56
    assert archive[45:] == directory + zip64_end(1, 56, 45) + end(1, 56, 45)
    assert read_all(archive) == [data_of(spec)]


@pytest.mark.usefixtures("limits")
@pytest.mark.parametrize(("count", "offset", "size", "needed"), [
    (4, 0, 0, True), (1, LIMIT, 0, True), (1, 0, LIMIT, True),  # each reason alone
    (3, LIMIT - 1, LIMIT - 1, False), (5, LIMIT, LIMIT, True)])
def test_each_reason_for_the_zip64_end_is_enough_alone(count: int, offset: int, size: int,
                                                       needed: bool) -> None:
    assert needs_zip64_end(count, offset, size) is needed


@pytest.mark.usefixtures("limits")
@pytest.mark.parametrize(("size", "csize", "offset"), [
    (LIMIT, 5, 0), (5, LIMIT, 0), (5, 5, LIMIT), (LIMIT, LIMIT, LIMIT), (LIMIT - 1, 5, 9)])
def test_central_fields_exactly_at_the_limit_go_to_the_zip64_extra(size: int, csize: int,
                                                                   offset: int) -> None:
    """A central header's field equal to the limit is 0xFFFFFFFF and its value is in the
    zip64 extra, in APPNOTE 4.5.3's order; below the limit it stays in place."""
    spec = stored("a", MTIME, 5)
    assert not spec.zip64
    record = CentralRecord(spec, 0x1234, csize, size, offset)
    wide = [v for v in (size, csize, offset) if v >= LIMIT]
    mark = [0xFFFFFFFF if v >= LIMIT else v for v in (size, csize, offset)]
    expected = central(b"a", version=45 if wide else 20, crc=0x1234, size=mark[0],
                       csize=mark[1], offset=mark[2],
                       extra=TIMESTAMP + (zip64_extra(*wide) if wide else b""))
    assert central_header(record) == expected
    assert central_header_size(spec, offset, size, csize) == len(expected)


@pytest.mark.usefixtures("limits")
def test_central_header_size_takes_the_sizes_it_is_given() -> None:
    """The sizes passed override the spec's (a reservation for data not yet known)."""
    small, big = stored("a", MTIME, 5), stored("a", MTIME, LIMIT)
    assert central_header_size(small, 0) == 56
    assert central_header_size(small, 0, LIMIT) == 56 + 12  # the size in a zip64 extra
    assert central_header_size(small, 0, None, LIMIT) == 56 + 12  # the compressed size
    assert central_header_size(small, 0, LIMIT, LIMIT) == 56 + 20
    assert central_header_size(small, LIMIT, LIMIT, LIMIT) == 56 + 28
    assert central_header_size(big, 0) == 56 + 20  # a zip64 spec: both sizes, whatever given
    assert central_header_size(big, 0, 1, 1) == 56 + 20
    unsized = deflated("a", MTIME, None)  # compressed size unknown: 0 until given
    assert central_header_size(unsized, 0) == 56 + 20
    known = deflated("a", MTIME, 5, 3)
    assert central_header_size(known, 0) == 56
    assert central_header_size(known, 0, None, LIMIT) == 56 + 12


def test_a_deflate_entry_that_could_grow_to_the_limit_keeps_both_sizes_in_zip64(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """40,000 bytes, below a 100,000-byte limit, but 40,000 + 1/1024 + 64 KiB of possible
    deflate growth reaches it: zip64 local header and descriptor, and both sizes in the
    central zip64 extra although neither reaches the limit (readers pair them)."""
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 100_000)
    spec = deflated("g", MTIME, 40_000)
    assert spec.zip64
    data = bytes(40_000)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.compress(data) + compressor.flush()
    sink = Sink()

    async def run() -> int:
        writer = ZipWriter(sink)
        await writer.begin(spec)
        await writer.write(body)
        await writer.end(zlib.crc32(data), len(data))
        return await writer.close()

    asyncio.run(run())
    archive = sink.data
    crc = zlib.crc32(data)
    head = local(b"g", version=45, flags=UTF8 | DESCRIPTOR, method=8, csize=0xFFFFFFFF,
                 size=0xFFFFFFFF, extra=TIMESTAMP + zip64_extra(0, 0))
    descriptor = struct.pack("<4sIQQ", b"PK\x07\x08", crc, len(body), 40_000)
    directory = central(b"g", version=45, flags=UTF8 | DESCRIPTOR, method=8, crc=crc,
                        csize=0xFFFFFFFF, size=0xFFFFFFFF,
                        extra=TIMESTAMP + zip64_extra(40_000, len(body)))
    offset = len(head) + len(body) + len(descriptor)
    assert archive == head + body + descriptor + directory + end(1, len(directory), offset)
    assert read_all(archive) == [data]


# ---------------------------------------------------------------------------------------------
# the end record's saturated fields


def test_the_end_record_saturates_counts_and_offsets_past_its_fields() -> None:
    assert end_record(65_535, 0, 0) == end(0xFFFF, 0, 0)
    assert end_record(65_536, 0, 0) == end(0xFFFF, 0, 0)
    assert end_record(70_000, 7, 9) == end(0xFFFF, 9, 7)
    assert end_record(1, 2**32, 2**32) == end(1, 0xFFFFFFFF, 0xFFFFFFFF)
    assert end_record(1, 2**32 - 2, 2**32 - 3) == end(1, 2**32 - 3, 2**32 - 2)


# ---------------------------------------------------------------------------------------------
# layout


def test_layout_after_an_entry_of_unknown_size_lists_every_entry_without_offsets() -> None:
    first = stored("a", MTIME, 3)
    unknown = deflated("u", MTIME, 10)  # compressed size known only after the data
    after = [stored("b", MTIME, 5), stored("c", MTIME, 7, descriptor=True),
             deflated("d", MTIME, 4, 2)]
    plan = layout([first, unknown, *after])
    assert plan.entries == (
        EntryLayout(first, 0, 40, 3, 0),
        EntryLayout(unknown, 43, 83, None, 16),
        EntryLayout(after[0], -1, -1, 5, 0),
        EntryLayout(after[1], -1, -1, 7, 16),
        EntryLayout(after[2], -1, -1, 2, 0),
    )
    assert (plan.central_offset, plan.central_size, plan.size) == (None, None, None)
    assert plan.entries[1].end is None


def test_a_sized_layout_gives_the_written_directory_offset_and_size() -> None:
    specs = [stored("a", MTIME, 3), stored("bb", MTIME, 0, descriptor=True),
             stored("c", MTIME, 700)]
    plan = layout(specs)
    archive = write(specs)
    fields = struct.unpack_from("<4s4H2IH", archive, len(archive) - 22)
    count, directory_size, directory_offset = fields[3], fields[5], fields[6]
    assert count == 3
    assert plan.central_offset == directory_offset == 43 + 41 + 16 + 740
    assert plan.central_size == directory_size == 56 + 57 + 56
    assert plan.size == len(archive)
    assert [e.offset for e in plan.entries] == [0, 43, 100]
    assert [e.data_offset for e in plan.entries] == [40, 84, 140]


# ---------------------------------------------------------------------------------------------
# the central directory's writes


@pytest.mark.parametrize("extra", [0, 1])
def test_the_central_directory_goes_out_in_writes_of_at_least_the_batch(
        monkeypatch: pytest.MonkeyPatch, extra: int) -> None:
    """Headers are joined until the batch is reached, then written: never one write of the
    whole directory (bounded memory), never more headers than needed to reach the batch."""
    header = 46 + 2 + 9  # names f0..f9
    monkeypatch.setattr(ZipWriter, "CENTRAL_BATCH", 2 * header + extra)
    specs = [stored(f"f{i}", MTIME, 1) for i in range(10)]
    sink = Sink()
    archive = write(specs, sink)
    directory_offset = 10 * (30 + 2 + 9 + 1)
    written, tail = [], 0
    for piece in sink.pieces:
        if tail >= directory_offset:
            written.append(len(piece))
        tail += len(piece)
    expected = [2 * header] * 5 if extra == 0 else [3 * header] * 3 + [header]
    assert written == [*expected, 22]
    assert read_all(archive) == [b"\x00"] * 10


# ---------------------------------------------------------------------------------------------
# contract errors name what went wrong


def raises(coroutine: object) -> str:
    async def run() -> None:
        await coroutine  # type: ignore[misc]

    with pytest.raises(ZipWriteError) as caught:
        asyncio.run(run())
    return str(caught.value)


def test_contract_errors_say_which_rule_was_broken() -> None:
    writer = ZipWriter(Sink())
    assert raises(writer.write(b"x")) == "data written outside an entry"
    assert raises(writer.end(0, 0)) == "end without an entry"
    assert raises(writer.begin(stored("a", MTIME, 1))) == (
        "a: no descriptor, so the CRC-32 is needed first")
    asyncio.run(writer.begin(stored("a", MTIME, 1), zlib.crc32(b"x")))
    assert raises(writer.begin(stored("b", MTIME, 1), 0)) == "b: begun while a is open"
    assert raises(writer.close()) == "a: still open at close"
    asyncio.run(writer.write(b"xy"))
    assert raises(writer.end(zlib.crc32(b"x"), 1)) == (
        f"a: promised crc {zlib.crc32(b'x')} size 1/1, ended with crc {zlib.crc32(b'x')} "
        "size 1/2")
