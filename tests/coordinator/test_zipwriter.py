"""The ZIP writer alone (no server): layout arithmetic, records, and what independent readers
make of its archives — zipfile, ``unzip -t``, ``7z t``, ``bsdtar``, Java's ``ZipInputStream``.

zipstream-ng is the reference for sizes: its sized stored entries always carry a data
descriptor and no extended timestamp, so an archive of ours with descriptors is exactly
18 bytes per entry larger (the 9-byte 0x5455 extra in the local and in the central header),
and one without descriptors 16 bytes per entry smaller than that.
"""

from __future__ import annotations

import asyncio
import calendar
import io
import os
import struct
import subprocess
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import zipstream.ng

from coordinator import zipwriter
from coordinator.zipwriter import (
    DEFLATED,
    STORED,
    EntrySpec,
    ZipWriteError,
    ZipWriter,
    deflated,
    forcing_bytes,
    layout,
    stored,
)
from tests.support import require_tool

MTIME = calendar.timegm((2024, 3, 5, 12, 34, 56))  # a source file last written in 2024
TIMESTAMP_BYTES = 18  # the 0x5455 extra: 9 bytes local + 9 central


def data_of(name: str, size: int) -> bytes:
    seed = (name.encode() * 7 + b"\n")
    return (seed * (size // len(seed) + 1))[:size]


class ListSink:
    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    async def __call__(self, data: bytes) -> None:
        self.pieces.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)


async def write_archive(specs: Sequence[EntrySpec], contents: Sequence[bytes],
                        chunk: int = 1000) -> tuple[bytes, list[int]]:
    """The archive of *specs*, stored entries promising their CRC up front; also the
    offset of each local header as the writer saw it."""
    sink = ListSink()
    writer = ZipWriter(sink)
    offsets = []
    for spec, data in zip(specs, contents, strict=True):
        crc = zlib.crc32(data)
        offsets.append(writer.offset)
        if spec.method == DEFLATED and spec.descriptor:
            await writer.begin(spec)
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            for start in range(0, len(data), chunk):
                await writer.write(compressor.compress(data[start:start + chunk]))
            await writer.write(compressor.flush())
        else:
            await writer.begin(spec, None if spec.descriptor else crc)
            body = data if spec.method == STORED else _deflate(data)
            for start in range(0, len(body), chunk):
                await writer.write(body[start:start + chunk])
        await writer.end(crc, len(data))
    size = await writer.close()
    assert size == len(sink.data)
    return sink.data, offsets


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def build(specs: Sequence[EntrySpec]) -> tuple[bytes, list[bytes], list[int]]:
    contents = [data_of(s.name, s.size or 0) for s in specs]
    archive, offsets = asyncio.run(write_archive(specs, contents))
    return archive, contents, offsets


def zipstream_size(specs: Sequence[EntrySpec]) -> int:
    zs = zipstream.ng.ZipStream(sized=True)
    for spec in specs:
        zs.add(iter(()), spec.name, size=spec.size)
    return len(zs)


SIZES = [0, 1, 5000, 70_000]
NAMES = ["n1/logs/a.log", "n1/logs/dir/b.log", "n2/logs/ünïcödé.log", "n2/logs/c.log"]


def stored_specs(descriptor: bool, sizes: Sequence[int] = SIZES) -> list[EntrySpec]:
    names = [f"{NAMES[i % 4]}.{i // 4}" if i >= 4 else NAMES[i] for i in range(len(sizes))]
    return [stored(name, MTIME + i, size, descriptor=descriptor)
            for i, (name, size) in enumerate(zip(names, sizes, strict=True))]


# ---------------------------------------------------------------------------------------------
# Layout against zipstream-ng and against the writer


@pytest.mark.parametrize("descriptor", [True, False])
def test_layout_size_equals_zipstream_ng_plus_the_timestamp_extras(descriptor: bool) -> None:
    specs = stored_specs(descriptor)
    expected = zipstream_size(specs) + TIMESTAMP_BYTES * len(specs)
    if not descriptor:
        expected -= 16 * len(specs)  # no data descriptor: CRC and sizes in the local header
    assert layout(specs).size == expected
    archive, _, _ = build(specs)
    assert len(archive) == expected


def test_layout_zip64_sizes_equal_zipstream_ng_with_lowered_limits(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Zip64 per entry, by offset and by count, with the limits lowered in both libraries
    (zipstream-ng: zip64 when size * 1.05 > limit; the sizes keep away from the edges)."""
    monkeypatch.setattr(zipstream.ng, "ZIP64_LIMIT", 10_000)
    monkeypatch.setattr(zipstream.ng, "ZIP_FILECOUNT_LIMIT", 5)
    monkeypatch.setattr(zipwriter, "ZIP64_LIMIT", 10_000)
    monkeypatch.setattr(zipwriter, "ZIP64_COUNT_LIMIT", 5)
    sizes = [100, 20_000, 300, 15_000, 7, 1, 0]
    specs = stored_specs(True, sizes)
    expected = zipstream_size(specs) + TIMESTAMP_BYTES * len(specs)
    assert layout(specs).size == expected
    archive, contents, _ = build(specs)
    assert len(archive) == expected
    check_zipfile(archive, specs, contents)
    assert b"PK\x06\x06" in archive[-200:]  # zip64 end record (count and offset)
    path = tmp_path / "zip64.zip"
    path.write_bytes(archive)
    run_tool("unzip", "-t", "-qq", str(path))
    run_tool("7z", "t", "-bd", str(path))
    assert run_tool("bsdtar", "-tf", str(path)).splitlines() == [s.name for s in specs]


def test_writer_follows_the_layout_byte_for_byte() -> None:
    specs = [*stored_specs(False), stored("x/d.log", MTIME, 3000, descriptor=True),
             deflated("x/e.log", MTIME, 100, compressed_size=None)]
    archive, contents, offsets = build(specs)
    plan = layout(specs)
    known = plan.entries[:-1]
    assert [e.offset for e in known] == offsets[:-1]
    for item, data in zip(known, contents, strict=False):
        assert archive[item.data_offset:item.data_offset + len(data)] == data
        assert archive[item.offset:item.offset + 4] == b"PK\x03\x04"
        end = item.end
        assert end is not None and archive[end:end + 4] == b"PK\x03\x04"
    assert plan.entries[-1].data_size is None and plan.size is None  # deflate: unsized


# ---------------------------------------------------------------------------------------------
# Records


def test_stored_entry_with_known_crc_has_no_descriptor() -> None:
    spec = stored("a.log", MTIME, 5)
    archive, _, _ = build([spec])
    fields = zipwriter.LOCAL_HEADER.unpack_from(archive)
    flags, crc, csize, size = fields[2], fields[6], fields[7], fields[8]
    assert flags & 0x08 == 0 and flags & 0x800
    assert (crc, csize, size) == (zlib.crc32(data_of("a.log", 5)), 5, 5)
    assert b"PK\x07\x08" not in archive


def test_entry_time_is_the_source_mtime_dos_and_utc_extra() -> None:
    archive, _, _ = build([stored("a.log", MTIME, 5)])
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo("a.log")
        expected = time.localtime(MTIME)[:5]  # DOS time is local time, as zip tools write it
        assert info.date_time[:5] == expected
        tag, length, flags, seconds = struct.unpack_from("<HHBi", info.extra)
        assert (tag, length, flags, seconds) == (0x5455, 5, 1, MTIME)


def test_unwritable_promises_are_refused() -> None:
    async def scenario() -> None:
        writer = ZipWriter(ListSink())
        with pytest.raises(ZipWriteError):
            await writer.begin(stored("a", MTIME, 3))  # no CRC for a descriptor-less entry
        await writer.begin(stored("a", MTIME, 3), crc=zlib.crc32(b"abc"))
        await writer.write(b"ab")
        with pytest.raises(ZipWriteError, match="promised"):
            await writer.end(zlib.crc32(b"ab"), 2)  # short: the caller must pad first

    asyncio.run(scenario())
    with pytest.raises(ValueError):
        EntrySpec("a", MTIME, None, STORED, descriptor=False)


@pytest.mark.parametrize("prefix", [b"", b"x", b"hello world" * 1000])
@pytest.mark.parametrize("target", [0, 1, 0xFFFFFFFF, 0xDEADBEEF])
def test_forcing_bytes_make_the_promised_crc(prefix: bytes, target: int) -> None:
    tail = forcing_bytes(zlib.crc32(prefix + bytes(100)), target)
    assert zlib.crc32(prefix + bytes(100) + tail) == target


def test_writer_never_holds_entry_data() -> None:
    """Each data write reaches the sink at once, as the same bytes (nothing gathered)."""
    async def scenario() -> list[bytes]:
        sink = ListSink()
        writer = ZipWriter(sink)
        await writer.begin(stored("a", MTIME, 3000), crc=zlib.crc32(bytes(3000)))
        for _ in range(3):
            before = len(sink.pieces)
            await writer.write(bytes(1000))
            assert len(sink.pieces) == before + 1
        await writer.end(zlib.crc32(bytes(3000)), 3000)
        return sink.pieces

    pieces = asyncio.run(scenario())
    assert [len(p) for p in pieces[1:4]] == [1000, 1000, 1000]


# ---------------------------------------------------------------------------------------------
# Independent readers


def check_zipfile(archive: bytes, specs: Sequence[EntrySpec], contents: Sequence[bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [s.name for s in specs]
        for spec, data in zip(specs, contents, strict=True):
            assert zf.read(spec.name) == data


def mixed_specs(compressed: bool) -> tuple[list[EntrySpec], list[bytes]]:
    contents = [data_of(n, s) for n, s in zip(NAMES, SIZES, strict=True)]
    if compressed:
        specs = [deflated(n, MTIME, len(d)) for n, d in zip(NAMES, contents, strict=True)]
        contents.append(data_of("_fleetzip/status.json", 40))  # compressed before its header
        specs.append(deflated("_fleetzip/status.json", MTIME, 40, len(_deflate(contents[-1]))))
    else:
        specs = stored_specs(False)
    return specs, contents


@pytest.fixture(params=["stored", "deflate"])
def archive_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, list[EntrySpec]]:
    specs, contents = mixed_specs(request.param == "deflate")
    archive, _ = asyncio.run(write_archive(specs, contents))
    check_zipfile(archive, specs, contents)
    path = tmp_path / "out.zip"
    path.write_bytes(archive)
    return path, specs


def run_tool(*args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([require_tool(args[0]), *args[1:]], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_unzip_7z_bsdtar_accept_the_archive(archive_file: tuple[Path, list[EntrySpec]]) -> None:
    path, specs = archive_file
    run_tool("unzip", "-t", "-qq", str(path))
    run_tool("7z", "t", "-bd", str(path))
    names = run_tool("bsdtar", "-tf", str(path)).splitlines()
    assert names == [s.name for s in specs]
    listing = run_tool("bsdtar", "-tvf", str(path), env={**os.environ, "TZ": "UTC"})
    assert all("Mar  5  2024" in line for line in listing.splitlines()), listing


JAVA_READER = """
import java.io.*;
import java.util.zip.*;

public class ZipRead {
    public static void main(String[] args) throws Exception {
        try (ZipInputStream in = new ZipInputStream(new FileInputStream(args[0]))) {
            ZipEntry e;
            byte[] buf = new byte[8192];
            while ((e = in.getNextEntry()) != null) {
                CRC32 crc = new CRC32();
                long n = 0;
                int r;
                while ((r = in.read(buf)) > 0) { crc.update(buf, 0, r); n += r; }
                System.out.println(e.getName() + "\\t" + n + "\\t" + crc.getValue()
                                   + "\\t" + e.getLastModifiedTime().toMillis() / 1000);
            }
        }
    }
}
"""


@pytest.fixture(scope="session")
def java_reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A compiled ``java.util.zip.ZipInputStream`` reader (compiled once per session)."""
    folder = tmp_path_factory.mktemp("java")
    (folder / "ZipRead.java").write_text(JAVA_READER)
    subprocess.run([require_tool("javac"), "-d", str(folder), str(folder / "ZipRead.java")],
                   check=True)
    yield [require_tool("java"), "-cp", str(folder), "ZipRead"]


def java_read(java_reader: list[str], path: Path) -> list[tuple[str, int, int, int]]:
    result = subprocess.run([*java_reader, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    return [(name, int(n), int(crc), int(t)) for name, n, crc, t in rows]


def test_java_zipinputstream_reads_every_entry(archive_file: tuple[Path, list[EntrySpec]],
                                               java_reader: list[str]) -> None:
    path, specs = archive_file
    rows = java_read(java_reader, path)
    with zipfile.ZipFile(path) as zf:
        expected = [(i.filename, i.file_size, i.CRC) for i in zf.infolist()]
    assert [(n, size, crc) for n, size, crc, _ in rows] == expected
    assert [t for *_, t in rows] == [int(s.mtime) for s in specs]  # extended timestamp (UTC)
