"""A small asynchronous ZIP writer: the framing of the merged archive, and nothing else.

No HTTP and no I/O of its own: `ZipWriter` writes its pieces through an async *sink* (the
download handler's ``write`` + ``flush``), one piece at a time, and never holds an entry's
data. The caller decides what the entry's bytes are (stored bytes, or raw deflate) and what
its CRC-32 is; the writer frames them.

Each APPNOTE record is one function over one `struct` format (after CPython's
``zipfile.ZipInfo.FileHeader`` / ``_write_end_record``), and zip64 extras are added in one
place (`_zip64_extra`):

    local file header        4.3.7   `local_header`
    data descriptor          4.3.9   `data_descriptor`
    central directory header 4.3.12  `central_header`
    zip64 end record         4.3.14  `zip64_end_record`
    zip64 end locator        4.3.15  `zip64_locator`
    end of central directory 4.3.16  `end_record`
    zip64 extra field        4.5.3   `_zip64_extra`
    extended timestamp 0x5455        `_timestamp_extra` (Info-ZIP, UTC mtime)

Entries:

* **stored, CRC known before the data** (``descriptor=False``): CRC-32 and sizes in the
  local header, no data descriptor. Every byte of such an entry's framing is a function of
  the plan and the promised CRC, and streaming readers (Java's ``ZipInputStream``) read it.
* **stored or deflate, CRC known after the data** (``descriptor=True``): flag bit 3, zeros
  in the local header, a data descriptor after the data.
* **deflate, compressed before the header** (status files): like the first case.

Zip64 is used per entry when its size can reach 4 GiB (local header and descriptor carry
8-byte sizes then), for an offset past 4 GiB (central header), and for the archive when it
has more than 65,535 entries or its central directory starts past 4 GiB. The limits are
module constants, so tests lower them (as zipstream-ng's tests do) instead of writing GiBs.

`layout` computes from the entries' specs alone (no I/O) every entry's header, data and
descriptor offsets and the exact archive size — the ``Content-Length`` of a sized download
and ``/api/plan``'s size. The writer produces exactly that layout (the tests check it byte
for byte), like nginx mod_zip's list of pieces.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

STORED = 0
DEFLATED = 8

# Past these, zip64 records are needed (APPNOTE 4.4.8, 4.4.22). Tests lower them.
ZIP64_LIMIT = 0xFFFFFFFF
ZIP64_COUNT_LIMIT = 0xFFFF
# A deflate stream can be larger than its input (stored blocks of incompressible data: 5
# bytes per 64 KiB; each agent frame's sync flush: up to ~10 bytes per 1 MiB frame). An entry
# whose source size plus this bound could reach 4 GiB is written as zip64.
DEFLATE_GROWTH_DIVISOR = 1024  # 1/1024 of the input...
DEFLATE_GROWTH_FIXED = 64 * 1024  # ...plus 64 KiB

VERSION_DEFAULT = 20  # 2.0: deflate, folders (APPNOTE 4.4.3.2)
VERSION_ZIP64 = 45  # 4.5: zip64
CREATE_SYSTEM_UNIX = 3
FLAG_DESCRIPTOR = 0x0008  # bit 3: CRC and sizes follow the data
FLAG_UTF8 = 0x0800  # bit 11: the name is UTF-8
FILE_MODE = 0o100644  # regular file, rw-r--r-- (external attributes, high 16 bits)
DOS_EPOCH = (1980, 1, 1, 0, 0, 0)
TIMESTAMP_MAX = 0x7FFFFFFF  # the extended timestamp is a signed 32-bit time_t for Info-ZIP

LOCAL_HEADER = struct.Struct("<4s5H3I2H")
DATA_DESCRIPTOR = struct.Struct("<4s3I")
DATA_DESCRIPTOR64 = struct.Struct("<4sIQQ")
CENTRAL_HEADER = struct.Struct("<4s6H3I5H2I")
ZIP64_END_RECORD = struct.Struct("<4sQ2H2I4Q")
ZIP64_LOCATOR = struct.Struct("<4sIQI")
END_RECORD = struct.Struct("<4s4H2IH")
EXTRA_HEADER = struct.Struct("<2H")
TIMESTAMP_EXTRA = struct.Struct("<2HBi")

SIG_LOCAL = b"PK\x03\x04"
SIG_DESCRIPTOR = b"PK\x07\x08"
SIG_CENTRAL = b"PK\x01\x02"
SIG_ZIP64_END = b"PK\x06\x06"
SIG_ZIP64_LOCATOR = b"PK\x06\x07"
SIG_END = b"PK\x05\x06"
EXTRA_ZIP64 = 0x0001
EXTRA_TIMESTAMP = 0x5455


class ZipWriteError(Exception):
    """The caller broke the writer's contract (a bug, never an agent's doing)."""


# ---------------------------------------------------------------------------------------------
# What an entry is


@dataclass(frozen=True)
class EntrySpec:
    """One entry as the plan knows it, before its data.

    *size* is the uncompressed size (known for every planned file); *compressed_size* is
    known before the data for stored entries (= size) and for data compressed in advance.
    *descriptor*: the CRC-32 is not known when the local header goes out, so it (and the
    sizes) follow the data in a data descriptor.
    """

    name: str
    mtime: float
    size: int | None
    method: int = STORED
    descriptor: bool = False
    compressed_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in (STORED, DEFLATED):
            raise ValueError(f"{self.name}: unknown method {self.method}")
        if not self.descriptor and self.stored_size is None:
            raise ValueError(f"{self.name}: without a descriptor the sizes must be known")

    @property
    def stored_size(self) -> int | None:
        """Bytes of the entry's data in the archive, when known before the data."""
        if self.method == STORED:
            return self.size
        return self.compressed_size

    @property
    def zip64(self) -> bool:
        """Whether the local header (and descriptor) carry 8-byte sizes."""
        if self.size is None:
            return True
        bound = self.size
        if self.method == DEFLATED:
            bound = self.compressed_size if self.compressed_size is not None else (
                self.size + self.size // DEFLATE_GROWTH_DIVISOR + DEFLATE_GROWTH_FIXED)
            bound = max(bound, self.size)
        return bound >= ZIP64_LIMIT


def stored(name: str, mtime: float, size: int, *, descriptor: bool = False) -> EntrySpec:
    return EntrySpec(name, mtime, size, STORED, descriptor)


def deflated(name: str, mtime: float, size: int | None,
             compressed_size: int | None = None) -> EntrySpec:
    """A deflate entry: with *compressed_size* (compressed in advance) no descriptor."""
    return EntrySpec(name, mtime, size, DEFLATED, compressed_size is None, compressed_size)


# ---------------------------------------------------------------------------------------------
# Record functions (one per APPNOTE record)


def dos_time(mtime: float) -> tuple[int, int]:
    """(time, date) DOS fields of *mtime* in local time, as zip tools do (2 s resolution);
    clamped to 1980..2107, the range the fields can hold."""
    parts = time.localtime(max(mtime, 0))[:6]
    if parts < DOS_EPOCH:
        parts = DOS_EPOCH
    if parts[0] > 2107:
        parts = (2107, 12, 31, 23, 59, 58)
    year, month, day, hour, minute, second = parts
    return (hour << 11 | minute << 5 | second // 2,
            (year - 1980) << 9 | month << 5 | day)


def _timestamp_extra(mtime: float) -> bytes:
    """Info-ZIP extended timestamp: the UTC mtime, whole seconds (same in local and central)."""
    seconds = min(max(int(mtime), 0), TIMESTAMP_MAX)
    return TIMESTAMP_EXTRA.pack(EXTRA_TIMESTAMP, 5, 1, seconds)


def _zip64_extra(values: Sequence[int]) -> bytes:
    """The zip64 extended information field over *values*, in APPNOTE 4.5.3's order
    (uncompressed size, compressed size, local header offset)."""
    if not values:
        return b""
    return EXTRA_HEADER.pack(EXTRA_ZIP64, 8 * len(values)) + struct.pack(
        f"<{len(values)}Q", *values)


def _flags(spec: EntrySpec) -> int:
    return FLAG_UTF8 | (FLAG_DESCRIPTOR if spec.descriptor else 0)


def _version(zip64: bool) -> int:
    return VERSION_ZIP64 if zip64 else VERSION_DEFAULT


def local_header(spec: EntrySpec, crc: int = 0) -> bytes:
    """Local file header (4.3.7). With a descriptor, CRC and sizes are zero here (4.4.4);
    a zip64 entry has 0xFFFFFFFF sizes and both sizes in its zip64 extra (4.5.3)."""
    name = spec.name.encode("utf-8")
    if spec.descriptor:
        crc, size, csize = 0, 0, 0
    else:
        size, csize = spec.size or 0, spec.stored_size or 0
    extra = _timestamp_extra(spec.mtime)
    if spec.zip64:
        extra += _zip64_extra((size, csize))
        size = csize = 0xFFFFFFFF
    mod_time, mod_date = dos_time(spec.mtime)
    return LOCAL_HEADER.pack(SIG_LOCAL, _version(spec.zip64), _flags(spec), spec.method,
                             mod_time, mod_date, crc, csize, size, len(name),
                             len(extra)) + name + extra


def local_header_size(spec: EntrySpec) -> int:
    return (LOCAL_HEADER.size + len(spec.name.encode("utf-8")) + TIMESTAMP_EXTRA.size
            + (EXTRA_HEADER.size + 16 if spec.zip64 else 0))


def data_descriptor(crc: int, compressed_size: int, size: int, zip64: bool) -> bytes:
    """Data descriptor (4.3.9) with its optional signature; 8-byte sizes for a zip64 entry
    (4.3.9.2: the local header had a zip64 extra)."""
    if zip64:
        return DATA_DESCRIPTOR64.pack(SIG_DESCRIPTOR, crc, compressed_size, size)
    return DATA_DESCRIPTOR.pack(SIG_DESCRIPTOR, crc, compressed_size, size)


def descriptor_size(spec: EntrySpec) -> int:
    if not spec.descriptor:
        return 0
    return DATA_DESCRIPTOR64.size if spec.zip64 else DATA_DESCRIPTOR.size


@dataclass(frozen=True)
class CentralRecord:
    """What the central directory needs of a written entry."""

    spec: EntrySpec
    crc: int
    compressed_size: int
    size: int
    offset: int


def _central_zip64_values(record: CentralRecord) -> list[int]:
    values = []
    if record.spec.zip64 or record.size >= ZIP64_LIMIT:
        values.append(record.size)
    if record.spec.zip64 or record.compressed_size >= ZIP64_LIMIT:
        values.append(record.compressed_size)
    if record.offset >= ZIP64_LIMIT:
        values.append(record.offset)
    return values


def central_header(record: CentralRecord) -> bytes:
    """Central directory file header (4.3.12): a field that overflows (or belongs to a zip64
    entry) is 0xFFFFFFFF and its value goes into the zip64 extra."""
    spec = record.spec
    name = spec.name.encode("utf-8")
    wide = _central_zip64_values(record)
    size, csize, offset = record.size, record.compressed_size, record.offset
    if spec.zip64 or size >= ZIP64_LIMIT:
        size = 0xFFFFFFFF
    if spec.zip64 or csize >= ZIP64_LIMIT:
        csize = 0xFFFFFFFF
    if offset >= ZIP64_LIMIT:
        offset = 0xFFFFFFFF
    extra = _timestamp_extra(spec.mtime) + _zip64_extra(wide)
    version = _version(bool(wide))
    mod_time, mod_date = dos_time(spec.mtime)
    return CENTRAL_HEADER.pack(
        SIG_CENTRAL, CREATE_SYSTEM_UNIX << 8 | version, version, _flags(spec), spec.method,
        mod_time, mod_date, record.crc, csize, size, len(name), len(extra), 0, 0, 0,
        FILE_MODE << 16, offset) + name + extra


def central_header_size(spec: EntrySpec, offset: int, size: int | None = None,
                        compressed_size: int | None = None) -> int:
    size = spec.size if size is None else size
    csize = spec.stored_size if compressed_size is None else compressed_size
    record = CentralRecord(spec, 0, csize or 0, size or 0, offset)
    return (CENTRAL_HEADER.size + len(spec.name.encode("utf-8")) + TIMESTAMP_EXTRA.size
            + _zip64_extra_size(len(_central_zip64_values(record))))


def _zip64_extra_size(count: int) -> int:
    return EXTRA_HEADER.size + 8 * count if count else 0


def needs_zip64_end(count: int, central_offset: int, central_size: int) -> bool:
    return (count >= ZIP64_COUNT_LIMIT or central_offset >= ZIP64_LIMIT
            or central_size >= ZIP64_LIMIT)


def zip64_end_record(count: int, central_offset: int, central_size: int) -> bytes:
    """Zip64 end of central directory record (4.3.14); its size field counts the bytes
    after it (4.3.14.1)."""
    return ZIP64_END_RECORD.pack(SIG_ZIP64_END, ZIP64_END_RECORD.size - 12,
                                 CREATE_SYSTEM_UNIX << 8 | VERSION_ZIP64, VERSION_ZIP64, 0, 0,
                                 count, count, central_size, central_offset)


def zip64_locator(zip64_end_offset: int) -> bytes:
    """Zip64 end of central directory locator (4.3.15): one disk."""
    return ZIP64_LOCATOR.pack(SIG_ZIP64_LOCATOR, 0, zip64_end_offset, 1)


def end_record(count: int, central_offset: int, central_size: int) -> bytes:
    """End of central directory record (4.3.16); overflowing fields are saturated (their
    values are in the zip64 end record)."""
    entries = min(count, 0xFFFF)
    return END_RECORD.pack(SIG_END, 0, 0, entries, entries, min(central_size, 0xFFFFFFFF),
                           min(central_offset, 0xFFFFFFFF), 0)


def end_records(count: int, central_offset: int, central_size: int) -> bytes:
    """What follows the central directory: [zip64 end record + locator] + end record."""
    tail = b""
    if needs_zip64_end(count, central_offset, central_size):
        zip64_end_offset = central_offset + central_size
        tail = zip64_end_record(count, central_offset, central_size) + zip64_locator(
            zip64_end_offset)
    return tail + end_record(count, central_offset, central_size)


def end_records_size(count: int, central_offset: int, central_size: int) -> int:
    extra = ZIP64_END_RECORD.size + ZIP64_LOCATOR.size
    return END_RECORD.size + (extra if needs_zip64_end(count, central_offset, central_size)
                              else 0)


# ---------------------------------------------------------------------------------------------
# Layout: the archive as a list of pieces with offsets, from the specs alone


@dataclass(frozen=True)
class EntryLayout:
    spec: EntrySpec
    offset: int  # of the local header
    data_offset: int
    data_size: int | None  # None: compressed size not known in advance
    descriptor_size: int

    @property
    def end(self) -> int | None:
        if self.data_size is None:
            return None
        return self.data_offset + self.data_size + self.descriptor_size


@dataclass(frozen=True)
class ArchiveLayout:
    entries: tuple[EntryLayout, ...]
    central_offset: int | None  # None (and the rest None) when an entry's size is unknown
    central_size: int | None
    size: int | None


def layout(specs: Iterable[EntrySpec]) -> ArchiveLayout:
    """Offsets of every entry's header, data and descriptor, and the archive's exact size
    when every entry's stored size is known in advance (else the offsets up to the first
    unknown, and None)."""
    entries: list[EntryLayout] = []
    offset: int | None = 0
    central_size = 0
    for spec in specs:
        if offset is None:
            entries.append(EntryLayout(spec, -1, -1, spec.stored_size, descriptor_size(spec)))
            continue
        data_offset = offset + local_header_size(spec)
        item = EntryLayout(spec, offset, data_offset, spec.stored_size, descriptor_size(spec))
        entries.append(item)
        if item.end is not None:
            central_size += central_header_size(spec, offset)
        offset = item.end
    if offset is None:
        return ArchiveLayout(tuple(entries), None, None, None)
    size = offset + central_size + end_records_size(len(entries), offset, central_size)
    return ArchiveLayout(tuple(entries), offset, central_size, size)


# ---------------------------------------------------------------------------------------------
# CRC-32 forcing (the padding of an entry whose node failed after its CRC was promised)


def _crc_basis(crc_before: int) -> tuple[int, list[int]]:
    base = zlib.crc32(bytes(4), crc_before)
    return base, [zlib.crc32((1 << bit).to_bytes(4, "little"), crc_before) ^ base
                  for bit in range(32)]


def forcing_bytes(crc_before: int, target: int) -> bytes:
    """Four bytes that, appended to data whose CRC-32 is *crc_before*, make it *target*.

    CRC-32 is affine over GF(2) in its input bits, so crc(prefix + x) = base ^ M·x with
    base = crc(prefix + 0000) and M's columns the effect of each of x's 32 bits; M is
    invertible for CRC-32 (any 4 consecutive bytes can take any value of the CRC), so
    x is found by Gaussian elimination over 32 bits.
    """
    base, columns = _crc_basis(crc_before)
    want = target ^ base
    # rows: (column value, combination of unit bits that produces it)
    pivots: dict[int, tuple[int, int]] = {}
    for bit, column in enumerate(columns):
        value, combo = column, 1 << bit
        for high in sorted(pivots, reverse=True):
            if value >> high & 1:
                pv, pc = pivots[high]
                value ^= pv
                combo ^= pc
        if value:
            pivots[value.bit_length() - 1] = (value, combo)
    if len(pivots) != 32:
        raise ZipWriteError("CRC-32 basis is singular")  # cannot happen for CRC-32
    solution = 0
    for high in sorted(pivots, reverse=True):
        if want >> high & 1:
            pv, pc = pivots[high]
            want ^= pv
            solution ^= pc
    return solution.to_bytes(4, "little")


# ---------------------------------------------------------------------------------------------
# The writer

Sink = Callable[[bytes], Awaitable[object]]


class ZipWriter:
    """Writes an archive through *sink*: ``begin`` an entry, ``write`` its data as it goes
    into the archive (stored bytes, or raw deflate), ``end`` it with its CRC-32 and
    uncompressed size; ``close`` writes the central directory and the end records.

    Holds one `CentralRecord` per entry written (the central directory needs them at the
    end: ~200 bytes each), never entry data.
    """

    CENTRAL_BATCH = 64 * 1024  # central directory headers are joined into writes of this size

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.offset = 0
        self.records: list[CentralRecord] = []
        self._spec: EntrySpec | None = None
        self._crc: int | None = None
        self._start = 0
        self._data_start = 0

    @property
    def entry_written(self) -> int:
        """Data bytes written into the open entry so far."""
        return self.offset - self._data_start if self._spec is not None else 0

    async def _put(self, data: bytes) -> None:
        if data:
            self.offset += len(data)
            await self.sink(data)

    async def begin(self, spec: EntrySpec, crc: int | None = None) -> None:
        """Write *spec*'s local header. Without a descriptor, *crc* is the CRC-32 the entry's
        data will have (promised here; `end` checks the promise was kept)."""
        if self._spec is not None:
            raise ZipWriteError(f"{spec.name}: begun while {self._spec.name} is open")
        if not spec.descriptor and crc is None:
            raise ZipWriteError(f"{spec.name}: no descriptor, so the CRC-32 is needed first")
        self._start = self.offset
        await self._put(local_header(spec, crc or 0))
        self._spec, self._crc = spec, crc
        self._data_start = self.offset

    async def write(self, data: bytes) -> None:
        """Entry data as it goes into the archive."""
        if self._spec is None:
            raise ZipWriteError("data written outside an entry")
        await self._put(data)

    async def end(self, crc: int, size: int) -> CentralRecord:
        """Close the open entry: its data had CRC-32 *crc* over *size* uncompressed bytes."""
        spec = self._spec
        if spec is None:
            raise ZipWriteError("end without an entry")
        written = self.offset - self._data_start
        promised = (self._crc, spec.size, spec.stored_size)
        if not spec.descriptor and (crc, size, written) != promised:
            raise ZipWriteError(
                f"{spec.name}: promised crc {self._crc} size {spec.size}/"
                f"{spec.stored_size}, ended with crc {crc} size {size}/{written}")
        self._spec = None
        if spec.descriptor:
            await self._put(data_descriptor(crc, written, size, spec.zip64))
        record = CentralRecord(spec, crc, written, size, self._start)
        self.records.append(record)
        return record

    async def close(self) -> int:
        """Central directory and end records; returns the archive's size."""
        if self._spec is not None:
            raise ZipWriteError(f"{self._spec.name}: still open at close")
        central_offset = self.offset
        batch: list[bytes] = []
        pending = 0
        for record in self.records:
            header = central_header(record)
            batch.append(header)
            pending += len(header)
            if pending >= self.CENTRAL_BATCH:
                await self._put(b"".join(batch))
                batch, pending = [], 0
        await self._put(b"".join(batch))
        central_size = self.offset - central_offset
        await self._put(end_records(len(self.records), central_offset, central_size))
        return self.offset
