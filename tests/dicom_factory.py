"""Synthetic chest radiograph DICOM objects for the whole test suite.

A deterministic chest-like phantom (dark lung fields in a bright body, ribs,
mediastinum, spine, diaphragm) is encoded as stored pixel values so that the
*presentation* of every variant (bit depth, signedness, MONOCHROME1, rescale,
Modality/VOI LUT Sequence) is the same image: ``dicom_to_gray`` of any of
them should give back :func:`chest_phantom` up to quantisation.

:func:`make_chest` builds a dataset from a :class:`ChestSpec`;
:func:`write` saves it; :func:`transcode` writes compressed or re-encoded
copies with DCMTK (``dcmcjpeg``, ``dcmcjpls``, ``dcmcrle``, ``dcmconv``) and
JPEG 2000 with pydicom's OpenJPEG encoder (pylibjpeg-openjpeg).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    Comprehensive3DSRStorage,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
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
    NuclearMedicineImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from inference.own_outputs import GATEWAY_MANUFACTURER, HEATMAP_SERIES_DESCRIPTION

SOP_CLASS_FOR_MODALITY = {
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
    "SC": SecondaryCaptureImageStorage,
    "OT": SecondaryCaptureImageStorage,
    "NM": NuclearMedicineImageStorage,
}

DCMTK_COMMANDS: dict[UID, list[str]] = {
    JPEGBaseline8Bit: ["dcmcjpeg", "+eb", "+q", "95", "+sr"],
    JPEGExtended12Bit: ["dcmcjpeg", "+ee", "+q", "95", "+sr"],
    JPEGLossless: ["dcmcjpeg", "+el", "+sv", "6"],
    JPEGLosslessSV1: ["dcmcjpeg", "+e1"],
    JPEGLSLossless: ["dcmcjpls", "+el"],
    JPEGLSNearLossless: ["dcmcjpls", "+en", "+md", "2"],
    RLELossless: ["dcmcrle"],
    DeflatedExplicitVRLittleEndian: ["dcmconv", "+td"],
    ExplicitVRBigEndian: ["dcmconv", "+tb"],
    ImplicitVRLittleEndian: ["dcmconv", "+ti"],
    ExplicitVRLittleEndian: ["dcmconv", "+te"],
}
"""DCMTK command (without file names) that writes each transfer syntax; ``+sr`` keeps the
stored values of lossy JPEG (DCMTK's default ``+sp`` stretches them to the codec range)."""

LOSSLESS_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                     DeflatedExplicitVRLittleEndian, JPEGLossless, JPEGLosslessSV1,
                     JPEGLSLossless, RLELossless, JPEG2000Lossless)
LOSSY_SYNTAXES = (JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless, JPEG2000)
ALL_SYNTAXES = LOSSLESS_SYNTAXES + LOSSY_SYNTAXES

PATIENT_NAME = "Müller-Łukasiewicz^Zoë Ángela^^Dr.^"


@dataclass(frozen=True)
class ChestSpec:
    """What :func:`make_chest` builds; every field maps to DICOM attributes."""

    modality: str = "CR"
    rows: int = 512
    columns: int = 512
    bits_stored: int = 12
    bits_allocated: int | None = None
    high_bit: int | None = None
    signed: bool = False
    photometric: str = "MONOCHROME2"
    rescale: tuple[float, float] | None = None
    window: tuple[float, float] | None = None
    voi_function: str | None = None
    voi_lut: bool = False
    modality_lut: bool = False
    frames: int = 1
    junk_high_bits: bool = False
    body_part: str | None = "CHEST"
    view_position: str | None = "PA"
    patient_name: str = PATIENT_NAME
    patient_id: str = "CXR-0001"
    study_uid: str = "1.2.826.0.1.3680043.8.498.1001"
    series_uid: str = "1.2.826.0.1.3680043.8.498.1001.1"
    sop_uid: str | None = None
    sop_class: UID | None = None
    manufacturer: str = "ACME Radiography"
    series_description: str = "Chest PA"
    pixels: bool = True

    @property
    def cell_bits(self) -> int:
        """Bits Allocated: 8 for up to 8 bits stored, else 16."""
        return self.bits_allocated or (8 if self.bits_stored <= 8 else 16)


def chest_phantom(rows: int, columns: int) -> NDArray[np.float64]:
    """Deterministic chest-like density image in [0, 1], bright = dense."""
    y, x = np.mgrid[-1.0:1.0:rows * 1j, -1.0:1.0:columns * 1j]
    body = _ellipse(x, y, 0.0, 0.05, 0.85, 0.95)
    lungs = _ellipse(x, y, -0.38, -0.08, 0.25, 0.52) + _ellipse(x, y, 0.38, -0.08, 0.25, 0.52)
    heart = _ellipse(x, y, 0.1, 0.25, 0.24, 0.28)
    ribs = (np.sin(y * 26.0 + np.abs(x) * 7.0) > 0.55) * lungs
    img = 0.04 + 0.56 * body - 0.36 * np.clip(lungs, 0, 1) + 0.12 * ribs
    img = np.where(heart > 0, 0.72, img)
    img = np.where((np.abs(x) < 0.07) & (body > 0), 0.86, img)
    img = np.where((y > 0.55) & (body > 0), 0.7 + 0.05 * y, img)
    img = img + 0.08 * (y + 1.0) / 2.0 * body
    sigma = max(rows, columns) / 400.0
    return np.clip(cv2.GaussianBlur(img, (0, 0), sigma), 0.0, 1.0)


def _ellipse(x: NDArray[np.float64], y: NDArray[np.float64], cx: float, cy: float,
             rx: float, ry: float) -> NDArray[np.float64]:
    return (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0).astype(np.float64)


def make_chest(spec: ChestSpec | None = None, **changes: Any) -> Dataset:
    """A chest radiograph dataset; ``make_chest(bits_stored=10, photometric="MONOCHROME1")``."""
    spec = replace(spec or ChestSpec(), **changes)
    ds = _base_dataset(spec)
    if spec.pixels:
        _set_pixels(ds, spec)
    return ds


def make_relabelled_mono1(**changes: Any) -> Dataset:
    """MONOCHROME2 pixels labelled MONOCHROME1: a wrong header, displayed inverted."""
    ds = make_chest(**changes)
    ds.PhotometricInterpretation = "MONOCHROME1"
    return ds


def _base_dataset(spec: ChestSpec) -> Dataset:
    sop_class = spec.sop_class or SOP_CLASS_FOR_MODALITY.get(spec.modality,
                                                             SecondaryCaptureImageStorage)
    sop_uid = UID(spec.sop_uid or generate_uid(entropy_srcs=[repr(spec)]))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = spec.study_uid, spec.series_uid
    ds.Modality, ds.Manufacturer = spec.modality, spec.manufacturer
    ds.PatientName, ds.PatientID = spec.patient_name, spec.patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240102", "101500", "ACC-0001"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.SeriesDescription, ds.PatientOrientation = spec.series_description, ["A", "F"]
    if spec.body_part is not None:
        ds.BodyPartExamined = spec.body_part
    if spec.view_position is not None:
        ds.ViewPosition = spec.view_position
    return ds


def _set_pixels(ds: Dataset, spec: ChestSpec) -> None:
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.BitsAllocated, ds.BitsStored = spec.cell_bits, spec.bits_stored
    ds.HighBit = spec.high_bit if spec.high_bit is not None else spec.bits_stored - 1
    ds.PixelRepresentation = int(spec.signed)
    ds.PhotometricInterpretation = spec.photometric
    density = chest_phantom(spec.rows, spec.columns)
    if spec.photometric == "RGB":
        _set_rgb(ds, density, spec)
        return
    ds.SamplesPerPixel = 1
    cells = encode_cells(density, spec, ds)
    if spec.frames > 1:
        others = [encode_cells(1.0 - density * (i / spec.frames), spec, Dataset())
                  for i in range(1, spec.frames)]
        cells = np.stack([cells, *others])
        ds.NumberOfFrames = spec.frames
    ds.PixelData = cells.tobytes()
    ds["PixelData"].VR = "OW" if spec.cell_bits > 8 else "OB"


def _set_rgb(ds: Dataset, density: NDArray[np.float64], spec: ChestSpec) -> None:
    """RGB with equal channels apart from a faint tint, whose luma is the phantom."""
    gray = np.round(density * 255.0)
    tint = np.stack([gray + 2, gray - 1, gray - 2], axis=-1)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.PixelData = np.clip(tint, 0, 255).astype(np.uint8).tobytes()


def encode_cells(density: NDArray[np.float64], spec: ChestSpec, ds: Dataset) -> NDArray[Any]:
    """Stored cells whose presentation is ``density``; sets the LUT/rescale/window tags on ``ds``.

    MONOCHROME1 stores ``1 - density`` (inverted after the VOI LUT, PS3.3
    C.7.6.3.1.2); a Modality or VOI LUT Sequence stores ``density**2`` and
    maps it back through a square-root LUT, so that skipping the LUT is seen.
    """
    level = 1.0 - density if spec.photometric == "MONOCHROME1" else density
    full = (1 << spec.bits_stored) - 1
    curved = spec.modality_lut or spec.voi_lut
    values = np.round((level**2 if curved else level) * full).astype(np.int64)
    if spec.modality_lut:
        ds.ModalityLUTSequence = Sequence([_sqrt_lut(full, "ModalityLUTType")])
    if spec.voi_lut:
        ds.VOILUTSequence = Sequence([_sqrt_lut(full, None)])
    if spec.signed:
        values -= 1 << (spec.bits_stored - 1)
    _set_display_tags(ds, spec)
    return _to_cells(values, spec)


def _sqrt_lut(full: int, type_keyword: str | None) -> Dataset:
    """A 16-bit LUT item (PS3.3 C.11.1 / C.11.2) mapping x to sqrt(x / full) * 65535."""
    item = Dataset()
    item.LUTDescriptor = [(full + 1) % 65536, 0, 16]
    table = np.round(np.sqrt(np.arange(full + 1) / full) * 65535.0).astype("<u2")
    item.LUTData = table.tobytes()
    item["LUTData"].VR = "OW"
    item.LUTExplanation = "square root"
    if type_keyword:
        setattr(item, type_keyword, "OD")
    return item


def _set_display_tags(ds: Dataset, spec: ChestSpec) -> None:
    if spec.rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = spec.rescale
        ds.RescaleType = "US"
    if spec.window is not None:
        ds.WindowCenter, ds.WindowWidth = spec.window
    if spec.voi_function is not None:
        ds.VOILUTFunction = spec.voi_function


def _to_cells(values: NDArray[np.int64], spec: ChestSpec) -> NDArray[Any]:
    """Place stored values in cells (PS3.5 8.1.1): two's complement across the whole cell,
    or shifted below High Bit; ``junk_high_bits`` fills the unused bits as some devices do."""
    bits = spec.cell_bits
    high_bit = spec.high_bit if spec.high_bit is not None else spec.bits_stored - 1
    shift = high_bit + 1 - spec.bits_stored
    stored_mask = ((1 << spec.bits_stored) - 1) << shift
    patterns = values << shift if shift else values
    patterns &= (1 << bits) - 1
    if spec.junk_high_bits:
        junk = (np.arange(values.size, dtype=np.int64).reshape(values.shape) * 7919) % (1 << bits)
        patterns = (patterns & stored_mask) | (junk & ~stored_mask & ((1 << bits) - 1))
    return patterns.astype(np.uint8 if bits == 8 else np.uint16)


def write(ds: Dataset, path: Path) -> Path:
    """Save ``ds`` as a PS3.10 file in its File Meta transfer syntax."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def transcode(src: Path, syntax: UID, dst: Path) -> Path:
    """Write ``src`` in transfer syntax ``syntax`` to ``dst`` (DCMTK, or OpenJPEG for JPEG 2000)."""
    if syntax in (JPEG2000Lossless, JPEG2000):
        return _write_j2k(src, syntax, dst)
    command = DCMTK_COMMANDS[syntax]
    if shutil.which(command[0]) is None:
        raise FileNotFoundError(f"{command[0]} (Debian package dcmtk) is not installed")
    subprocess.run([*command, str(src), str(dst)], check=True, capture_output=True, timeout=60)
    return dst


def _write_j2k(src: Path, syntax: UID, dst: Path) -> Path:
    from pydicom import dcmread

    ds = dcmread(src)
    if syntax == JPEG2000Lossless:
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    else:
        ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_psnr=[60])
        ds.LossyImageCompression = "01"
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_nm(**changes: Any) -> Dataset:
    """A nuclear medicine image: must be skipped for its Modality. Keywords override."""
    return make_chest(**{"modality": "NM", "rows": 256, "columns": 256, "body_part": None,
                         "view_position": None, "series_description": "Thyroid Tc", **changes})


def make_lateral(**changes: Any) -> Dataset:
    """A lateral chest radiograph: must be skipped for its view."""
    return make_chest(**{"view_position": "LL", "series_description": "Chest LAT", **changes})


def make_without_pixels(**changes: Any) -> Dataset:
    """A CR header without Pixel Data."""
    return make_chest(**{"pixels": False, **changes})


def make_tiny(**changes: Any) -> Dataset:
    """A 64x64 CR: too small to be a radiograph the models may see."""
    return make_chest(**{"rows": 64, "columns": 64, **changes})


def make_sr() -> Dataset:
    """A minimal Comprehensive 3D SR header (no pixels): not an image."""
    ds = _base_dataset(ChestSpec(modality="SR", sop_class=Comprehensive3DSRStorage,
                                 body_part=None, view_position=None))
    ds.ValueType = "CONTAINER"
    return ds


def make_gateway_sc(**changes: Any) -> Dataset:
    """A heatmap Secondary Capture as the gateway writes it (RGB, chest body part)."""
    return make_chest(**{"modality": "OT", "photometric": "RGB",
                         "manufacturer": GATEWAY_MANUFACTURER,
                         "series_description": HEATMAP_SERIES_DESCRIPTION, **changes})
