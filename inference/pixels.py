"""DICOM (and PNG/JPEG) pixel data to presentation-space grayscale.

:func:`dicom_to_gray` turns the first frame of a DICOM image into a 2-D
float32 image in [0, 1], MONOCHROME2 sense (bright = dense), which is what
:func:`inference.preprocess.preprocess_gray` expects. The order follows the
grayscale pipeline of PS3.4 N.2.1.1 and PS3.3 C.11:

1. decode the first frame (native PS3.5 8, encapsulated PS3.5 A.4);
2. stored value: bits outside High Bit / Bits Stored dropped, two's
   complement when Pixel Representation is 1 (PS3.5 8.1.1, PS3.3 C.7.6.3.1);
3. Modality LUT: Modality LUT Sequence, else Rescale Slope/Intercept
   (PS3.3 C.11.1);
4. VOI LUT: VOI LUT Sequence, else the first Window Center/Width with its
   VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2);
5. polarity: MONOCHROME1 (PS3.3 C.7.6.3.1.2: the minimum is white *after*
   the VOI transformation) or Presentation LUT Shape INVERSE (PS3.3 C.11.6)
   inverts; both present is one inversion, the same instruction twice
   (PS3.3 C.8.11.6.1.1 ties INVERSE to MONOCHROME1);
6. scale to [0, 1] over the range of output values reachable from the
   stored-value domain: a property of the header, not of the image content.

Steps 2-6 map each stored bit pattern to one output, so they are computed
once per header on the (at most 65,536) possible patterns and applied to the
image as a table; the common all-linear case is applied as one affine map.

Multi-frame objects: only the first frame is decoded and classified. Chest
radiographs are single projections (the CR and DX IODs have one frame); a
multi-frame Secondary Capture of a chest holds repeated or alternative
renderings of it, and decoding one frame keeps time and memory bounded.

Decompression bombs (issue 20, defect 6) are refused from headers, before
memory is committed: a Deflated Explicit VR Little Endian body (PS3.5 A.5) is
inflated in bounded chunks up to ``max_inflated_bytes``
(:class:`InflateLimitError`), and a frame is decoded only when Rows x Columns
x Samples per Pixel read from the header is within ``max_pixels``
(:class:`PixelLimitError`); PNG and JPEG files are measured from their IHDR
or SOF header the same way before the codec runs.
"""

from __future__ import annotations

import io
import logging
import os
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Final

import cv2
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

log = logging.getLogger(__name__)

SUPPORTED_TRANSFER_SYNTAXES: Final[tuple[UID, ...]] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
"""Transfer syntaxes :func:`dicom_to_gray` decodes (PS3.5 A.2-A.7, A.4)."""

MONOCHROME: Final = ("MONOCHROME1", "MONOCHROME2")
COLOUR: Final = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
SUPPORTED_BITS_ALLOCATED: Final = (8, 16)


DEFAULT_MAX_PIXELS: Final = 50_000_000
"""Default largest decoded frame, Rows x Columns x Samples per Pixel (``inference.max_pixels``)."""
DEFAULT_MAX_INFLATED_BYTES: Final = 256 * 2**20
"""Default largest inflated Deflated body (``dicom.max_inflated_mb``)."""
INFLATE_CHUNK: Final = 4 * 2**20


class PixelError(ValueError):
    """The pixel data cannot become a grayscale image; the message names the attribute."""


class PixelLimitError(PixelError):
    """The header announces more pixels than ``inference.max_pixels``; nothing was decoded."""


class InflateLimitError(PixelError):
    """A Deflated dataset inflates to more than ``dicom.max_inflated_mb``; inflating stopped."""


def inflate_bounded(data: bytes, limit: int) -> bytes:
    """Inflate a raw deflate stream (PS3.5 A.5) in chunks, never beyond ``limit`` bytes.

    Raises :class:`InflateLimitError` as soon as the output would pass the
    limit, having held at most ``limit`` + one chunk in memory, and
    :class:`PixelError` when the stream is corrupt.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    try:
        while pending and not inflater.eof:
            out += inflater.decompress(pending, INFLATE_CHUNK)
            pending = inflater.unconsumed_tail
            if len(out) > limit:
                raise InflateLimitError(
                    f"the Deflated dataset inflates to more than {limit // 2**20} MB "
                    f"({len(data)} bytes received); dicom.max_inflated_mb is the limit")
        out += inflater.flush()
    except zlib.error as exc:
        raise PixelError(f"the Deflated dataset cannot be inflated ({exc})") from exc
    if len(out) > limit:
        raise InflateLimitError(f"the Deflated dataset inflates to more than {limit // 2**20} MB")
    return bytes(out)


@dataclass(frozen=True)
class PixelFormat:
    """The Image Pixel Module attributes that govern decoding (PS3.3 C.7.6.3)."""

    photometric: str
    bits_allocated: int
    bits_stored: int
    high_bit: int
    signed: bool
    samples: int

    @property
    def shift(self) -> int:
        """Bits below the stored value inside each allocated cell (PS3.5 8.1.1)."""
        return self.high_bit + 1 - self.bits_stored

    @property
    def stored_range(self) -> tuple[int, int]:
        """Smallest and largest stored value Bits Stored and Pixel Representation allow."""
        if self.signed:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1


def load_dicom(source: str | os.PathLike[str] | bytes,
               max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> Dataset:
    """Read a DICOM file or byte string, with or without File Meta Information.

    Files without the PS3.10 preamble and File Meta (older modalities, some
    archives) are read with ``force=True``; pydicom detects their encoding and
    the Transfer Syntax UID is set from it, Implicit VR Little Endian being
    the default of PS3.5 A.1 when nothing else can be told. A Deflated body is
    inflated here, bounded by ``max_inflated_bytes`` (pydicom would inflate it
    whole, whatever its size).
    """
    fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    try:
        ds = _read_deflated(fp, max_inflated_bytes) or pydicom.dcmread(fp, force=True)
    except InflateLimitError as exc:
        raise InflateLimitError(f"{_name(source)}: {exc}") from exc
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise PixelError(f"{_name(source)}: not a readable DICOM file ({exc})") from exc
    finally:
        fp.close()
    if "SOPClassUID" not in ds and "PixelData" not in ds:
        raise PixelError(f"{_name(source)}: not a DICOM file (no SOP Class UID, no Pixel Data)")
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = _syntax_from_encoding(ds)
        log.debug("no File Meta Transfer Syntax UID; read as %s",
                  ds.file_meta.TransferSyntaxUID.name)
    return ds


def _read_deflated(fp: BinaryIO, max_inflated_bytes: int) -> Dataset | None:
    """The dataset of a PS3.10 file in Deflated Explicit VR Little Endian, else ``None``.

    Leaves ``fp`` at its start when the file is not Deflated.
    """
    head = fp.read(132)
    fp.seek(0)
    if head[128:132] != b"DICM":
        return None
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)  # pydicom's own File Meta reader (group 0002 only)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        fp.seek(0)
        return None
    body = inflate_bounded(fp.read(), max_inflated_bytes)
    ds = pydicom.dcmread(io.BytesIO(body), force=True)
    ds.file_meta = meta
    return ds


def _syntax_from_encoding(ds: Dataset) -> UID:
    implicit, little = ds.original_encoding
    if implicit or implicit is None:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _name(source: str | os.PathLike[str] | bytes) -> str:
    return f"{len(source)} bytes" if isinstance(source, bytes) else os.fspath(source)


DICOM_SUFFIXES = {".dcm", ".dicom", ""}


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """A file with the PS3.10 ``DICM`` marker, or named like a DICOM file (``.dcm``, no suffix)."""
    with open(path, "rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM" or Path(path).suffix.lower() in DICOM_SUFFIXES


def file_to_gray(path: str | os.PathLike[str],
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.float32]:
    """Read a PNG or JPEG as grayscale in [0, 1] (16-bit PNG keeps its depth).

    Colour files are converted by the codec's own luma conversion, exactly as
    the training pipeline reads them (``cv2.IMREAD_GRAYSCALE``). The size in
    the file's header is checked against ``max_pixels`` first
    (:class:`PixelLimitError`).
    """
    data = np.fromfile(path, dtype=np.uint8)
    head = data[:HEADER_SCAN_BYTES].tobytes()
    size = image_header_size(head)
    if size is None and head.startswith(b"\xff\xd8"):
        raise PixelError(f"{os.fspath(path)}: a JPEG without a frame header (SOF) before its scan")
    if size is not None:
        width, height, samples = size
        check_pixel_count(height, width, samples, max_pixels)
    img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH) if data.size else None
    if img is None or img.ndim != 2 or img.dtype not in (np.uint8, np.uint16):
        raise PixelError(f"{os.fspath(path)}: not a PNG or JPEG image that can be read")
    peak = np.float32(255.0 if img.dtype == np.uint8 else 65535.0)
    return np.asarray(img, dtype=np.float32) / peak


def pixel_format(ds: Dataset) -> PixelFormat:
    """Read and check the pixel attributes; :class:`PixelError` names the bad one."""
    if "PixelData" not in ds:
        raise PixelError("the instance has no Pixel Data (7FE0,0010)")
    syntax = _transfer_syntax(ds)
    if syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise PixelError(f"Transfer Syntax {syntax.name} ({syntax}) is not supported")
    fmt = PixelFormat(
        photometric=str(ds.get("PhotometricInterpretation", "")).strip().upper(),
        bits_allocated=_int(ds, "BitsAllocated"),
        bits_stored=_int(ds, "BitsStored"),
        high_bit=_int(ds, "HighBit"),
        signed=_int(ds, "PixelRepresentation") == 1,
        samples=_int(ds, "SamplesPerPixel"),
    )
    _check_format(fmt)
    return fmt


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise PixelError("no Transfer Syntax UID (0002,0010); read the file with load_dicom()")
    return UID(meta.TransferSyntaxUID)


def _int(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise PixelError(f"{keyword} is missing or empty; the Image Pixel Module requires it")
    return int(value)


def _check_format(fmt: PixelFormat) -> None:
    """Reject what PS3.3 C.7.6.3 does not allow or a radiograph never uses."""
    if fmt.photometric not in MONOCHROME + COLOUR:
        raise PixelError(f"Photometric Interpretation {fmt.photometric!r} is not supported; "
                         f"expected one of {', '.join(MONOCHROME + COLOUR)}")
    expected_samples = 3 if fmt.photometric in COLOUR[:-1] else 1
    if fmt.samples != expected_samples:
        raise PixelError(f"Samples per Pixel {fmt.samples} does not fit "
                         f"{fmt.photometric} (expected {expected_samples})")
    if fmt.bits_allocated not in SUPPORTED_BITS_ALLOCATED:
        raise PixelError(f"Bits Allocated {fmt.bits_allocated} is not supported; expected 8 or 16")
    if not 1 <= fmt.bits_stored <= fmt.bits_allocated:
        raise PixelError(f"Bits Stored {fmt.bits_stored} must be 1 to Bits Allocated "
                         f"({fmt.bits_allocated})")
    if not fmt.bits_stored - 1 <= fmt.high_bit < fmt.bits_allocated:
        raise PixelError(f"High Bit {fmt.high_bit} must be between Bits Stored - 1 "
                         f"({fmt.bits_stored - 1}) and Bits Allocated - 1")


def dicom_to_gray(ds: Dataset, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.float32]:
    """First frame of ``ds`` as 2-D float32 in [0, 1], presentation space, bright = dense.

    See the module docstring for the order of the transformations.
    Raises :class:`PixelError` when the pixel data is absent, unsupported or
    cannot be decoded, :class:`PixelLimitError` when the header announces a
    frame of more than ``max_pixels`` samples (checked before decoding).
    """
    fmt = pixel_format(ds)
    check_pixel_count(_int(ds, "Rows"), _int(ds, "Columns"), fmt.samples, max_pixels)
    raw = _decode_first_frame(ds, fmt)
    if fmt.photometric in COLOUR:
        return _colour_to_gray(raw, ds, fmt)
    coefficients = linear_coefficients(ds, fmt)
    if coefficients is not None and fmt.bits_allocated == 16 and fmt.shift == 0:
        return _apply_linear(raw, fmt, *coefficients)
    return _apply_table(raw, presentation_table(ds, fmt))


def check_pixel_count(rows: int, columns: int, samples: int, max_pixels: int) -> None:
    """Refuse a frame whose Rows x Columns x Samples per Pixel exceeds ``max_pixels``.

    Only the first frame is decoded (module docstring), so Number of Frames
    does not multiply the decoded size; the bytes of the other frames are
    bounded by ``dicom.max_instance_mb`` when received.
    """
    if rows <= 0 or columns <= 0:
        raise PixelError(f"Rows {rows} and Columns {columns} must be positive")
    count = rows * columns * max(samples, 1)
    if count > max_pixels:
        raise PixelLimitError(
            f"the image is {columns} x {rows} x {samples} samples = {count:,} pixels, more than "
            f"inference.max_pixels ({max_pixels:,}); not decoded")


def image_header_size(data: bytes) -> tuple[int, int, int] | None:
    """``(width, height, samples)`` from a PNG IHDR or JPEG SOF header, or ``None``.

    Read before the codec runs, so a small file announcing a huge image is
    refused without decoding (PNG: ISO/IEC 15948 11.2.2; JPEG: ITU-T T.81 B.2.2).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 26:
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return width, height, PNG_SAMPLES.get(data[25], 4)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_sof_size(data)
    return None


PNG_SAMPLES: Final = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
"""Samples per pixel of each PNG colour type (palette images decode to RGB)."""
JPEG_SOF_MARKERS: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB,
                                     0xCD, 0xCE, 0xCF})
JPEG_SOS: Final = 0xDA
HEADER_SCAN_BYTES: Final = 4 * 2**20
"""How far into a PNG or JPEG file its frame header is looked for."""


def _jpeg_sof_size(data: bytes) -> tuple[int, int, int] | None:
    """Walk the JPEG marker segments to the first SOFn (T.81 B.1.1.4, B.2.2)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == JPEG_SOS:
            return None
        if marker in JPEG_SOF_MARKERS and pos + 10 <= len(data):
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            return width, height, data[pos + 9]
        pos += 2 + length
    return None


def _decode_first_frame(ds: Dataset, fmt: PixelFormat) -> NDArray[np.generic]:
    """Decode frame 0 only, as a read-only view of native data (no copy).

    Unused bits are left for this module to handle, because pydicom's own
    correction assumes High Bit = Bits Stored - 1 (pydicom 3.0).
    """
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        log.debug("multi-frame image (%d frames): classifying the first frame", frames)
    try:
        arr = pixel_array(ds, index=0, correct_unused_bits=False, view_only=True)
    except Exception as exc:  # the codec plug-ins raise many unrelated types
        syntax = _transfer_syntax(ds)
        raise PixelError(f"Pixel Data cannot be decoded ({syntax.name}): {exc}") from exc
    expected = (_int(ds, "Rows"), _int(ds, "Columns")) + ((3,) if fmt.samples == 3 else ())
    if arr.shape != expected:
        raise PixelError(f"decoded frame has shape {arr.shape}, Rows/Columns say {expected}")
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _colour_to_gray(raw: NDArray[np.generic], ds: Dataset, fmt: PixelFormat) -> NDArray[np.float32]:
    """Luma of an RGB, YBR (decoded to RGB by pydicom) or palette image (PS3.3 C.7.6.3.1.2).

    The luma weights are ITU-R BT.601, the Y of YBR_FULL; the Modality and
    VOI LUTs apply to grayscale only (PS3.3 C.11).
    """
    if fmt.photometric == "PALETTE COLOR":
        rgb = apply_color_lut(raw, ds)
        peak = float(np.iinfo(rgb.dtype).max)
    else:
        rgb, peak = raw, float((1 << fmt.bits_stored) - 1)
    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return gray.astype(np.float32) / np.float32(peak)


class VoiFunction(StrEnum):
    """VOI LUT Function (0028,1056) defined terms (PS3.3 C.11.2.1.3)."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class Window:
    """One Window Center/Width pair with its VOI LUT Function; output in [0, 1].

    Implemented here rather than with pydicom's ``apply_windowing``, which
    inverts the output when Rescale Slope is negative (pydicom 3.0).
    """

    center: float
    width: float
    function: VoiFunction

    def apply(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID)."""
        if self.function is VoiFunction.SIGMOID:
            return 1.0 / (1.0 + np.exp(-4.0 * (values - self.center) / self.width))
        line = self.line()
        if line is None:
            return (values > self.center - 0.5).astype(np.float64)
        return np.clip(values * line[0] + line[1], 0.0, 1.0)

    def line(self) -> tuple[float, float] | None:
        """``(p, q)`` with output = clip(p * x + q, 0, 1); ``None`` when not a ramp."""
        if self.function is VoiFunction.LINEAR_EXACT:
            return 1.0 / self.width, 0.5 - self.center / self.width
        if self.function is VoiFunction.SIGMOID or self.width == 1:
            return None
        span = self.width - 1.0
        return 1.0 / span, 0.5 - (self.center - 0.5) / span


def first_window(ds: Dataset) -> Window | None:
    """The first Window Center/Width (PS3.3 C.11.2.1.2); ``None`` when absent or unusable.

    An unusable window (width below the minimum of its function) is a
    display hint gone wrong, not a broken image: it is ignored with a warning
    and the Modality LUT output is used.
    """
    center, width = _first_number(ds.get("WindowCenter")), _first_number(ds.get("WindowWidth"))
    if center is None or width is None:
        return None
    name = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if name not in VoiFunction.__members__:
        log.warning("VOI LUT Function %r is not a defined term; LINEAR used", name)
        name = "LINEAR"
    function = VoiFunction(name)
    minimum_ok = width >= 1 if function is VoiFunction.LINEAR else width > 0
    if not minimum_ok:
        log.warning("Window Width %s is not valid for %s (PS3.3 C.11.2.1.2): window ignored",
                    width, function.value)
        return None
    return Window(center, width, function)


def _first_number(value: object) -> float | None:
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    return None if value is None or value == "" else float(value)  # type: ignore[arg-type]


def voi_lut_item(ds: Dataset) -> Dataset | None:
    """The first VOI LUT Sequence item; it wins over a window (PS3.3 C.11.2)."""
    seq = ds.get("VOILUTSequence")
    return seq[0] if seq else None


def lut_lookup(values: NDArray[np.float64], item: Dataset, ds: Dataset) -> NDArray[np.float64]:
    """Map ``values`` through a LUT item (LUT Descriptor and LUT Data, PS3.3 C.11.2.1.1).

    Inputs below the first mapped value take the first entry, above the last
    the last entry. Own code rather than pydicom's ``apply_voi``, which
    indexes an 8-bit LUT of more than 256 entries with 8-bit indices (pydicom 3.0).
    """
    entries, first, _bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    if _int(ds, "PixelRepresentation") == 1 and first > 32767:
        first -= 65536
    data = _lut_data(item, entries, ds)
    index = np.clip(np.floor(values) - first, 0, entries - 1).astype(np.intp)
    return data[index]


def _lut_data(item: Dataset, entries: int, ds: Dataset) -> NDArray[np.float64]:
    """LUT Data as numbers: US/SS values, or OW words in the transfer syntax's byte order."""
    value = item.LUTData
    if isinstance(value, bytes):
        order = ">" if _transfer_syntax(ds) == ExplicitVRBigEndian else "<"
        packed = len(value) == entries and entries % 2 == 0
        words = np.frombuffer(value, np.uint8) if packed else np.frombuffer(value, f"{order}u2")
    else:
        words = np.asarray(value if isinstance(value, list | tuple | pydicom.multival.MultiValue)
                           else [value])
    if words.size < entries:
        raise PixelError(f"LUT Data has {words.size} entries, LUT Descriptor says {entries}")
    return words[:entries].astype(np.float64)


def is_inverted(ds: Dataset) -> bool:
    """True when the minimum presentation value is white (PS3.3 C.7.6.3.1.2, C.11.6)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(ds.get("PresentationLUTShape", "")).strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def stored_values(patterns: NDArray[np.integer], fmt: PixelFormat) -> NDArray[np.int64]:
    """Stored values of raw cell bit patterns: High Bit and Bits Stored (PS3.5 8.1.1),
    two's complement when Pixel Representation is 1 (PS3.3 C.7.6.3.1.3)."""
    unsigned = patterns.astype(np.int64) & ((1 << fmt.bits_allocated) - 1)
    values = (unsigned >> fmt.shift) & ((1 << fmt.bits_stored) - 1)
    if fmt.signed:
        sign = 1 << (fmt.bits_stored - 1)
        values = (values ^ sign) - sign
    return values


def rescale(ds: Dataset) -> tuple[float, float]:
    """Rescale Slope and Intercept, identity when either is absent (PS3.3 C.11.1.1.2)."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None or intercept is None or slope == "" or intercept == "":
        return 1.0, 0.0
    return float(slope), float(intercept)


def modality_values(values: NDArray[np.int64], ds: Dataset) -> NDArray[np.float64]:
    """Modality LUT (PS3.3 C.11.1): the LUT Sequence wins over Rescale Slope/Intercept."""
    if ds.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(values, ds), dtype=np.float64)
    slope, intercept = rescale(ds)
    return (values * slope + intercept).astype(np.float64)


def voi_values(values: NDArray[np.float64], ds: Dataset) -> NDArray[np.float64]:
    """VOI LUT (PS3.3 C.11.2): the VOI LUT Sequence wins over the first window."""
    item = voi_lut_item(ds)
    if item is not None:
        return lut_lookup(values, item, ds)
    window = first_window(ds)
    return values if window is None else window.apply(values)


def presentation_table(ds: Dataset, fmt: PixelFormat) -> NDArray[np.float32]:
    """Output in [0, 1] for every raw bit pattern of a cell (2**Bits Allocated entries).

    A VOI transformation that gives every stored value the same output (a
    window outside the data range) is a display hint gone wrong: it is
    ignored with a warning, as an unusable window is in :func:`first_window`.
    """
    patterns = np.arange(1 << fmt.bits_allocated, dtype=np.int64)
    modality = modality_values(stored_values(patterns, fmt), ds)
    out = voi_values(modality, ds)
    if np.ptp(out) <= 0 and np.ptp(modality) > 0:
        log.warning("the VOI LUT or window maps every stored value to one level: ignored")
        out = modality
    low, high = float(out.min()), float(out.max())
    if high - low <= 0:
        raise PixelError("every stored value maps to one presentation value; "
                         "check the Modality LUT Sequence and Rescale Slope")
    unit = (out - low) / (high - low)
    return (1.0 - unit if is_inverted(ds) else unit).astype(np.float32)


def linear_coefficients(ds: Dataset, fmt: PixelFormat) -> tuple[float, float] | None:
    """``(scale, offset)`` with output = clip(scale * stored + offset, 0, 1), when every
    step is linear: no LUT sequences, a LINEAR/LINEAR_EXACT window or none.

    Gives the same values as :func:`presentation_table`, whose range it
    computes from the two ends of the stored-value domain (every step is
    monotonic).
    """
    window = first_window(ds)
    if ds.get("ModalityLUTSequence") or voi_lut_item(ds) is not None:
        return None
    line = _window_line(window)
    if line is None:
        return None
    slope, intercept = rescale(ds)
    scale, offset = line[0] * slope, line[0] * intercept + line[1]
    ends = np.array(fmt.stored_range, dtype=np.float64) * scale + offset
    if window is not None:
        ends = np.clip(ends, 0.0, 1.0)
    low, high = float(ends.min()), float(ends.max())
    if high - low <= 0:
        return None
    scale, offset = scale / (high - low), (offset - low) / (high - low)
    return (-scale, 1.0 - offset) if is_inverted(ds) else (scale, offset)


def _window_line(window: Window | None) -> tuple[float, float] | None:
    if window is None:
        return 1.0, 0.0
    return window.line()


def _apply_linear(raw: NDArray[np.generic], fmt: PixelFormat, scale: float,
                  offset: float) -> NDArray[np.float32]:
    """Stored values (mask or sign-extend), then one fused affine map to float32
    (OpenCV ``addWeighted``), then a clip when a window can push values out of [0, 1]."""
    cells: NDArray[Any] = raw.view(np.int16 if fmt.signed else np.uint16)
    unused = fmt.bits_allocated - fmt.bits_stored
    if unused and fmt.signed:
        cells = np.left_shift(cells, unused)
        np.right_shift(cells, unused, out=cells)
    elif unused:
        cells = cv2.bitwise_and(cells, np.array([(1 << fmt.bits_stored) - 1], np.float64))
    out = cv2.addWeighted(cells, scale, cells, 0.0, offset, dtype=cv2.CV_32F)
    ends = [scale * end + offset for end in fmt.stored_range]
    if min(ends) < 0.0 or max(ends) > 1.0:
        np.clip(out, 0.0, 1.0, out=out)
    return np.asarray(out, dtype=np.float32)


def _apply_table(raw: NDArray[np.generic], table: NDArray[np.float32]) -> NDArray[np.float32]:
    """Look every cell up in the per-pattern table (OpenCV's LUT for 8-bit cells)."""
    if raw.dtype.itemsize == 1:
        return np.asarray(cv2.LUT(raw.view(np.uint8), table), dtype=np.float32)
    return table[raw.view(np.uint16)]
