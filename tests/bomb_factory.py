"""Small files that announce huge contents (issue 20, defect 6), built without holding them.

Each builder streams its zeros through a compressor in chunks, so the test
process never holds the inflated size: a 1 GB deflate bomb is about 1 MB on
disk and a few MB of the test's memory. Also: a pynetdicom C-STORE that sends
a file's bytes as they are (no decoding, so no inflating in the sender), and
the peak-memory reading of a process from ``/proc``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless
from pynetdicom import _config

from tests.dicom_factory import make_chest
from tests.gateway_harness import store

CHUNK = 1 << 20
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def bomb_header(rows: int, columns: int, bits: int = 16, **changes: Any) -> Dataset:
    """A chest CR header (no Pixel Data) announcing ``rows`` x ``columns`` x ``bits``."""
    ds = make_chest(rows=8, columns=8, bits_stored=bits, pixels=False, **changes)
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.SamplesPerPixel, ds.PixelRepresentation = bits - 1, 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def encode_dataset(ds: Dataset, implicit: bool = False) -> bytes:
    """The dataset's elements, little endian, explicit VR unless ``implicit`` (no File Meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def file_start(ds: Dataset, syntax: UID) -> bytes:
    """Preamble, ``DICM`` and the File Meta of ``ds`` stating ``syntax`` (PS3.10 7.1)."""
    ds.file_meta.TransferSyntaxUID = syntax
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    return fp.getvalue()


def _zeros(total: int) -> Iterator[bytes]:
    block = bytes(CHUNK)
    left = total
    while left > 0:
        yield block[:min(left, CHUNK)]
        left -= CHUNK


def write_deflate_bomb(path: Path, rows: int, columns: int) -> Path:
    """Deflated Explicit VR Little Endian (PS3.5 A.5) of rows x columns 16-bit zeros."""
    ds = bomb_header(rows, columns)
    size = rows * columns * 2
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as out:
        out.write(file_start(ds, DeflatedExplicitVRLittleEndian))
        out.write(deflater.compress(encode_dataset(ds)))
        out.write(deflater.compress(PIXEL_DATA_TAG + b"OW\x00\x00" + struct.pack("<I", size)))
        for block in _zeros(size):
            out.write(deflater.compress(block))
        out.write(deflater.flush())
    return path


def write_big_native(path: Path, rows: int, columns: int) -> Path:
    """Explicit VR Little Endian of rows x columns 16-bit zeros, written in chunks."""
    ds = bomb_header(rows, columns)
    size = rows * columns * 2
    with path.open("wb") as out:
        out.write(file_start(ds, ExplicitVRLittleEndian))
        out.write(encode_dataset(ds))
        out.write(PIXEL_DATA_TAG + b"OW\x00\x00" + struct.pack("<I", size))
        for block in _zeros(size):
            out.write(block)
    return path


def _rle_zero_segment(count: int) -> bytes:
    """PackBits (PS3.5 G.3.1) of ``count`` zero bytes: runs of 128 as (-127, 0)."""
    runs, rest = divmod(count, 128)
    tail = bytes([(257 - rest) & 0xFF, 0]) if rest > 1 else (b"\x00\x00" if rest else b"")
    return b"\x81\x00" * runs + tail


def write_rle_pixel_bomb(path: Path, rows: int, columns: int) -> Path:
    """RLE Lossless 8-bit image of rows x columns zeros: a few MB announcing rows*columns."""
    ds = bomb_header(rows, columns, bits=8)
    segment = _rle_zero_segment(rows * columns)
    header = struct.pack("<16I", 1, 64, *([0] * 14))  # one segment, at offset 64 (PS3.5 G.5)
    frame = header + segment + (b"\x00" if len(segment) % 2 else b"")
    item = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(frame)) + frame
    with path.open("wb") as out:
        out.write(file_start(ds, RLELossless))
        out.write(encode_dataset(ds))
        out.write(PIXEL_DATA_TAG + b"OB\x00\x00\xff\xff\xff\xff")
        out.write(b"\xfe\xff\x00\xe0\x00\x00\x00\x00")  # empty Basic Offset Table
        out.write(item)
        out.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")  # sequence delimiter
    return path


def png_bomb(width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG of zeros (filter 0 rows), compressed as it is built."""
    deflater = zlib.compressobj(9)
    row = bytes(width + 1)
    body = b"".join(deflater.compress(row) for _ in range(height)) + deflater.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


@contextmanager
def chunked_send() -> Iterator[None]:
    """pynetdicom sends a file's encoded dataset as it is, in chunks (no decoding)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def store_file_as_is(port: int, path: Path, syntax: UID, calling: str = "TESTSCU") -> int | None:
    """C-STORE one file in its own transfer syntax without decoding it; the status."""
    with chunked_send():
        return store(port, [path], calling, syntax, timeout_s=600)[0]


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (``clear_refs`` 5) when allowed; its current RSS in kB."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # not allowed: the peak then counts from the start of the process
    return status_kb(pid, "VmRSS")
