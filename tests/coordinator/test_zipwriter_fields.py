"""Every field of the ZIP writer's records as Python's ``zipfile`` reads them, in-process.

tests/coordinator/test_zipwriter.py checks the archives with unzip, 7z, bsdtar and Java; those
readers are lenient about fields they do not need (version numbers, attributes, the zip64
extra of one field), and they are too slow to run for every mutant of ``make mutation``.
Here each field a reader can see is compared with what APPNOTE 6.3.10 and our promise say:
versions, flags, method, DOS and UTC times, CRC and sizes, the zip64 extra (by field), the
Unix mode, offsets, and the end records, also with the zip64 limits lowered.
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
    DEFLATED,
    STORED,
    EntrySpec,
    ZipWriter,
    deflated,
    dos_time,
    forcing_bytes,
    layout,
    stored,
)

MTIME = calendar.timegm((2024, 3, 5, 12, 34, 57))  # an odd second: DOS time rounds down


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


def content(spec: EntrySpec) -> bytes:
    return (spec.name.encode() * (1 + (spec.size or 40) // max(1, len(spec.name))))[
        :spec.size if spec.size is not None else 40]


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def write(specs: Sequence[EntrySpec]) -> bytes:
    pieces: list[bytes] = []

    async def sink(data: bytes) -> None:
        pieces.append(bytes(data))

    async def run() -> int:
        writer = ZipWriter(sink)
        for spec in specs:
            data = content(spec)
            body = data if spec.method == STORED else raw_deflate(data)
            await writer.begin(spec, None if spec.descriptor else zlib.crc32(data))
            for start in range(0, len(body), 700):
                await writer.write(body[start:start + 700])
            await writer.end(zlib.crc32(data), len(data))
        return await writer.close()

    size = asyncio.run(run())
    archive = b"".join(pieces)
    assert size == len(archive)
    return archive


def timestamp_extra(mtime: int) -> bytes:
    return struct.pack("<HHBi", 0x5455, 5, 1, mtime)


def zip64_extra(*values: int) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values)


def local_fields(archive: bytes, offset: int) -> tuple[int, ...]:
    """(version needed, flags, method, time, date, crc, csize, size, name len, extra len)."""
    fields = struct.unpack_from("<4s5H3I2H", archive, offset)
    assert fields[0] == b"PK\x03\x04"
    return fields[1:]


def test_stored_and_deflated_entries_have_the_promised_fields() -> None:
    specs = [stored("a.log", MTIME, 5), stored("d/b.log", MTIME + 1, 3000, descriptor=True),
             deflated("c.log", MTIME, 100), deflated("e.log", MTIME, 50, 0)]
    specs[3] = deflated("e.log", MTIME, 50, len(raw_deflate(content(specs[3]))))
    archive = write(specs)
    plan = layout(specs[:2])
    assert layout(specs).size is None and plan.size is not None
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        assert [i.filename for i in infos] == [s.name for s in specs]
        for spec, info in zip(specs, infos, strict=True):
            data = content(spec)
            assert zf.read(info) == data
            assert info.create_system == 3 and info.create_version == 20
            assert info.extract_version == 20 and info.reserved == 0
            assert info.flag_bits == 0x800 | (0x08 if spec.descriptor else 0)
            assert info.compress_type == spec.method
            assert info.date_time == (2024, 3, 5, 12, 34, 56 if spec.mtime == MTIME else 58)
            assert info.extra == timestamp_extra(int(spec.mtime))
            assert info.external_attr == 0o100644 << 16 and info.internal_attr == 0
            assert zlib.crc32(data) == info.CRC and info.file_size == len(data)
            expected = len(data) if spec.method == STORED else len(raw_deflate(data))
            assert info.compress_size == expected
            assert info.comment == b"" and info.volume == 0
        offsets = [i.header_offset for i in infos]
    assert offsets[:2] == [e.offset for e in plan.entries]
    # local headers: sizes and CRC up front unless a descriptor follows the data
    for spec, offset in zip(specs, offsets, strict=True):
        fields = local_fields(archive, offset)
        assert fields[0] == 20 and fields[1] == 0x800 | (0x08 if spec.descriptor else 0)
        assert fields[3:5] == dos_time(spec.mtime)
        if spec.descriptor:
            assert fields[5:8] == (0, 0, 0)
        else:
            data = content(spec)
            assert fields[5] == zlib.crc32(data) and fields[7] == len(data)
    # the end record: one disk, the count, the central directory's size and offset
    end = struct.unpack_from("<4s4H2IH", archive, len(archive) - 22)
    central_offset = end[6]
    assert end == (b"PK\x05\x06", 0, 0, 4, 4, len(archive) - 22 - central_offset,
                   central_offset, 0)
    assert b"PK\x06\x06" not in archive


def test_a_descriptor_holds_the_crc_and_both_sizes() -> None:
    spec = stored("d.log", MTIME, 3000, descriptor=True)
    archive = write([spec])
    data = content(spec)
    at = 30 + len(b"d.log") + 9 + 3000
    assert struct.unpack_from("<4s3I", archive, at) == (b"PK\x07\x08", zlib.crc32(data),
                                                        3000, 3000)
    assert layout([spec]).size == len(archive)


def test_zip64_fields_with_lowered_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 10_000)
    monkeypatch.setattr(zipwriter, "ZIP64_COUNT_LIMIT", 4)
    specs = [stored("small", MTIME, 100), stored("big", MTIME, 20_000),
             stored("late", MTIME, 10), stored("big-d", MTIME, 12_000, descriptor=True),
             stored("tail", MTIME, 0)]
    archive = write(specs)
    assert layout(specs).size == len(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        infos = zf.infolist()
        assert [zf.read(i) for i in infos] == [content(s) for s in specs]
        small, big, late, big_d, tail = infos
    # a small entry below the offset limit: no zip64 extra, version 2.0
    assert small.extra == timestamp_extra(MTIME) and small.extract_version == 20
    # a big entry: both sizes in its zip64 extra (APPNOTE 4.5.3 order), version 4.5
    assert big.extra == timestamp_extra(MTIME) + zip64_extra(20_000, 20_000)
    assert big.extract_version == 45 and big.create_version == 45
    # a small entry past the offset limit: only its offset is in the extra
    assert late.header_offset > 10_000
    assert late.extra == timestamp_extra(MTIME) + zip64_extra(late.header_offset)
    assert big_d.extra == timestamp_extra(MTIME) + zip64_extra(12_000, 12_000,
                                                               big_d.header_offset)
    assert tail.file_size == 0
    # local header of the big entry: 0xFFFFFFFF sizes, the real ones in its zip64 extra
    fields = local_fields(archive, big.header_offset)
    assert fields[0] == 45 and fields[6:8] == (0xFFFFFFFF, 0xFFFFFFFF)
    name_end = big.header_offset + 30 + len(b"big")
    assert archive[name_end:name_end + 9 + 20] == timestamp_extra(MTIME) + zip64_extra(
        20_000, 20_000)
    # the zip64 descriptor has 8-byte sizes
    at = big_d.header_offset + 30 + len(b"big-d") + 9 + 20 + 12_000
    assert struct.unpack_from("<4sIQQ", archive, at) == (
        b"PK\x07\x08", zlib.crc32(content(specs[3])), 12_000, 12_000)
    # end records: zip64 end record, locator, then the saturated classic record
    end = struct.unpack_from("<4s4H2IH", archive, len(archive) - 22)
    locator = struct.unpack_from("<4sIQI", archive, len(archive) - 22 - 20)
    record = struct.unpack_from("<4sQ2H2I4Q", archive, locator[2])
    central_offset, central_size = record[9], record[8]
    assert locator == (b"PK\x06\x07", 0, central_offset + central_size, 1)
    assert record == (b"PK\x06\x06", 44, 3 << 8 | 45, 45, 0, 0, 5, 5, central_size,
                      central_offset)
    assert end == (b"PK\x05\x06", 0, 0, 5, 5, central_size, central_offset, 0)


def test_a_directory_of_many_entries_keeps_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """More central headers than one write batch: the batches join into one directory."""
    monkeypatch.setattr(ZipWriter, "CENTRAL_BATCH", 200)
    specs = [stored(f"f{i:03}.log", MTIME, i) for i in range(30)]
    archive = write(specs)
    assert layout(specs).size == len(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert [zf.read(s.name) for s in specs] == [content(s) for s in specs]


@pytest.mark.parametrize(("when", "fields"), [
    ((2024, 3, 5, 12, 34, 57), (12 << 11 | 34 << 5 | 28, 44 << 9 | 3 << 5 | 5)),
    ((1980, 1, 1, 0, 0, 0), (0, 1 << 5 | 1)),
    ((1979, 12, 31, 23, 59, 59), (0, 1 << 5 | 1)),  # before DOS time: its first day
    ((1970, 1, 1, 0, 0, 0), (0, 1 << 5 | 1)),
    ((2107, 12, 31, 23, 59, 59), (23 << 11 | 59 << 5 | 29, 127 << 9 | 12 << 5 | 31)),
    ((2108, 1, 1, 0, 0, 0), (23 << 11 | 59 << 5 | 29, 127 << 9 | 12 << 5 | 31)),  # clamped
])
def test_dos_time_fields(when: tuple[int, ...], fields: tuple[int, int]) -> None:
    assert dos_time(calendar.timegm((*when, 0, 0, 0))) == fields


def test_dos_time_of_a_negative_mtime_is_the_dos_epoch() -> None:
    assert dos_time(-1e9) == (0, 1 << 5 | 1)


def test_timestamp_extra_is_clamped_to_a_signed_32_bit_time() -> None:
    late = stored("late", 2**31 + 5, 1)
    early = stored("early", -5, 1)
    with zipfile.ZipFile(io.BytesIO(write([late, early]))) as zf:
        assert zf.getinfo("late").extra == timestamp_extra(2**31 - 1)
        assert zf.getinfo("early").extra == timestamp_extra(0)


def test_entry_spec_refuses_unknown_methods_and_unsized_entries_without_descriptor() -> None:
    with pytest.raises(ValueError, match="unknown method 12"):
        EntrySpec("a", MTIME, 1, 12)
    with pytest.raises(ValueError, match="sizes must be known"):
        EntrySpec("a", MTIME, 5, DEFLATED, descriptor=False)
    assert deflated("a", MTIME, 5).descriptor and not deflated("a", MTIME, 5, 3).descriptor


def test_deflate_zip64_bound_includes_growth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 100_000)
    growth = 1024 * 64  # DEFLATE_GROWTH_FIXED
    edge = 100_000 - growth
    below = (edge - 1) * 1024 // 1025
    assert not deflated("a", MTIME, below - 100).zip64
    assert deflated("a", MTIME, edge).zip64  # size + size/1024 + 64 KiB reaches the limit
    assert deflated("a", MTIME, None).zip64
    assert not deflated("a", MTIME, 90_000, 500).zip64  # compressed size known: that bound
    assert deflated("a", MTIME, 100_000, 500).zip64  # never below the size itself


def test_forcing_bytes_reach_every_target_from_any_crc() -> None:
    for before in (0, 1, 0xFFFFFFFF, zlib.crc32(b"abc")):
        for target in (0, 0x80000000, 0x12345678, before):
            assert zlib.crc32(forcing_bytes(before, target), before) == target
            assert len(forcing_bytes(before, target)) == 4
