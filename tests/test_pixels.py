"""Pixel normalisation: stored values, Modality/VOI LUTs, polarity, codecs, real samples."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing, convert_color_space
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from inference.pixels import (
    SUPPORTED_TRANSFER_SYNTAXES,
    PixelError,
    VoiFunction,
    Window,
    dicom_to_gray,
    file_to_gray,
    linear_coefficients,
    load_dicom,
    lut_lookup,
    pixel_format,
    presentation_table,
    stored_values,
)
from inference.preprocess import preprocess_gray, trim_padding, trim_surround
from tests.conftest import require_shared_data
from tests.dicom_factory import (
    ALL_SYNTAXES,
    LOSSLESS_SYNTAXES,
    ChestSpec,
    chest_phantom,
    make_chest,
    transcode,
    write,
)

SIZE = 256
PHANTOM = chest_phantom(SIZE, SIZE)


def gray(**changes: object) -> NDArray[np.float32]:
    return dicom_to_gray(make_chest(rows=SIZE, columns=SIZE, **changes))  # type: ignore[arg-type]


def with_cells(ds: Dataset, cells: list[int]) -> Dataset:
    """Replace the pixels of ``ds`` by one row of the given 16-bit cells."""
    ds.Rows, ds.Columns = 1, len(cells)
    ds.PixelData = np.array(cells, dtype=np.int64).astype(np.uint16).tobytes()
    return ds


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
@pytest.mark.parametrize("signed", [False, True])
def test_every_bit_depth_gives_back_the_phantom(bits: int, signed: bool) -> None:
    out = gray(bits_stored=bits, signed=signed)
    assert out.dtype == np.float32 and out.shape == (SIZE, SIZE)
    np.testing.assert_allclose(out, PHANTOM, atol=0.51 / ((1 << bits) - 1) + 1e-6)


@pytest.mark.parametrize("bits, mean_levels, p99_levels", [(8, 2.0, 12), (10, 0.6, 3), (12, 0.3, 3)])
def test_bit_depths_give_the_same_model_input(bits: int, mean_levels: float,
                                              p99_levels: float) -> None:
    """Against 16 bits, in 8-bit grey levels of the model input; CLAHE amplifies the
    quantisation of flat 8-bit regions, hence the wider 8-bit tolerance. The phantom's flat
    background is trimmed as padding and its dark sides as surround, so the window spans
    its body only, a narrower grey range in which the steps of fewer bits show more after
    CLAHE (measured: 8 bits mean 1.56 / p99 11 levels, 10 bits 0.49 / 3, 12 bits 0.26 / 3)."""
    diff = np.abs(preprocess_gray(gray(bits_stored=bits)) - preprocess_gray(gray(bits_stored=16)))
    assert diff.mean() * 255 < mean_levels
    assert np.percentile(diff, 99) * 255 < p99_levels + 0.01


def test_monochrome1_is_the_inverted_monochrome2() -> None:
    mono2 = make_chest(rows=SIZE, columns=SIZE)
    relabelled = make_chest(rows=SIZE, columns=SIZE)
    relabelled.PhotometricInterpretation = "MONOCHROME1"
    np.testing.assert_allclose(dicom_to_gray(relabelled), 1.0 - dicom_to_gray(mono2), atol=1e-6)
    np.testing.assert_allclose(gray(photometric="MONOCHROME1"), dicom_to_gray(mono2), atol=1e-6)


def test_monochrome1_inverts_after_the_window() -> None:
    """PS3.3 C.7.6.3.1.2: the window selects values first; the minimum is then white."""
    ds = with_cells(make_chest(window=(1000, 1000), voi_function="LINEAR_EXACT",
                               photometric="MONOCHROME1"), [0, 500, 1000, 1500, 4095])
    np.testing.assert_allclose(dicom_to_gray(ds)[0], [1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_presentation_lut_shape_inverse_with_monochrome1_is_one_inversion() -> None:
    ds = make_chest(rows=SIZE, columns=SIZE, photometric="MONOCHROME1")
    ds.PresentationLUTShape = "INVERSE"
    np.testing.assert_allclose(dicom_to_gray(ds), PHANTOM, atol=1e-3)


def test_rescale_is_applied_before_the_window() -> None:
    """Window in modality units: stored x maps to 2x - 1000 first (PS3.3 C.11.1, C.11.2)."""
    ds = with_cells(make_chest(rescale=(2.0, -1000.0), window=(0.0, 2000.0),
                               voi_function="LINEAR_EXACT"), [0, 250, 500, 1000, 4095])
    np.testing.assert_allclose(dicom_to_gray(ds)[0], [0.0, 0.25, 0.5, 1.0, 1.0], atol=1e-5)


def test_negative_rescale_slope_keeps_the_orientation() -> None:
    """Higher stored values are lower modality values; pydicom 3.0's windowing inverts this."""
    ds = with_cells(make_chest(rescale=(-1.0, 4095.0), window=(2048.0, 4096.0)), [0, 4095])
    np.testing.assert_allclose(dicom_to_gray(ds)[0], [1.0, 0.0], atol=1e-3)


def test_linear_window_follows_ps3_3_c_11_2_1_2_1() -> None:
    """c=100, w=11: x <= 94.5 -> 0, x > 104.5 -> 1, linear between."""
    ds = with_cells(make_chest(window=(100.0, 11.0)), [0, 94, 95, 100, 104, 105, 4095])
    expected = [0.0, 0.0, 0.05, 0.55, 0.95, 1.0, 1.0]
    np.testing.assert_allclose(dicom_to_gray(ds)[0], expected, atol=1e-5)


def test_the_first_of_several_windows_is_used() -> None:
    ds = with_cells(make_chest(), [0, 1000, 2000])
    ds.WindowCenter, ds.WindowWidth = [1000, 3000], [1000, 100]
    ds.VOILUTFunction = "LINEAR_EXACT"
    np.testing.assert_allclose(dicom_to_gray(ds)[0], [0.0, 0.5, 1.0], atol=1e-6)


def test_sigmoid_window_is_half_at_the_centre() -> None:
    ds = with_cells(make_chest(window=(2048.0, 1000.0), voi_function="SIGMOID"), [0, 2048, 4095])
    out = dicom_to_gray(ds)
    assert abs(out[0, 1] - 0.5) < 0.01 and out[0, 0] < 0.01 and out[0, 2] > 0.99


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("rescale", [(1.0, 0.0), (0.5, -1024.0)])
def test_window_agrees_with_pydicom_for_positive_slopes(function: str,
                                                        rescale: tuple[float, float]) -> None:
    ds = make_chest(rescale=rescale, window=(800.0, 900.0), voi_function=function)
    modality = np.arange(4096, dtype=np.float64) * rescale[0] + rescale[1]
    theirs = apply_windowing(modality.copy(), ds)
    low, high = rescale[1], 4095 * rescale[0] + rescale[1]
    ours = Window(800.0, 900.0, VoiFunction(function)).apply(modality)
    np.testing.assert_allclose(ours, (theirs - low) / (high - low), atol=1e-9)


@pytest.mark.parametrize("window", [(2048.0, 0.0), (9000.0, 100.0)], ids=["width-0", "outside"])
def test_unusable_window_is_ignored(window: tuple[float, float]) -> None:
    """Width below the minimum, or every stored value on one side of the window."""
    ds = make_chest(rows=SIZE, columns=SIZE, window=window)
    np.testing.assert_allclose(dicom_to_gray(ds), PHANTOM, atol=1e-3)


@pytest.mark.parametrize("lut", ["modality_lut", "voi_lut"])
def test_lut_sequences_are_applied(lut: str) -> None:
    """The factory stores density**2 and a square-root LUT: skipping the LUT shows."""
    out = gray(**{lut: True})
    np.testing.assert_allclose(out, PHANTOM, atol=0.02)
    assert np.abs(out - PHANTOM**2).max() > 0.2


def test_voi_lut_of_8_bit_entries_longer_than_256() -> None:
    """pydicom 3.0's apply_voi wraps these indices at 256; ours clips at the last entry."""
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTData = [i // 16 for i in range(4096)]
    ds = make_chest()
    values = np.array([0.0, 255.0, 256.0, 300.0, 4095.0, 9999.0])
    np.testing.assert_array_equal(lut_lookup(values, item, ds), [0, 15, 16, 18, 255, 255])


def test_unused_high_bits_are_ignored() -> None:
    np.testing.assert_array_equal(gray(junk_high_bits=True), gray())
    np.testing.assert_array_equal(gray(junk_high_bits=True, signed=True), gray(signed=True))


def test_high_bit_above_bits_stored_is_honoured() -> None:
    """PS3.5 8.1.1: 12 stored bits in bits 4-15 of the cell."""
    np.testing.assert_allclose(gray(high_bit=15), gray(), atol=1e-6)


def test_signed_pixels_span_the_range() -> None:
    ds = with_cells(make_chest(signed=True), [-2048 & 0xFFFF, 0, 2047])
    np.testing.assert_allclose(dicom_to_gray(ds)[0], [0.0, 2048 / 4095, 1.0], atol=1e-6)


@pytest.mark.parametrize("spec", [
    ChestSpec(), ChestSpec(signed=True, bits_stored=16), ChestSpec(rescale=(-0.5, 100.0)),
    ChestSpec(window=(1500.0, 800.0)), ChestSpec(high_bit=13),
    ChestSpec(window=(-300.0, 900.0), signed=True, voi_function="LINEAR_EXACT"),
    ChestSpec(photometric="MONOCHROME1", rescale=(3.0, -7.0), window=(5000.0, 4000.0)),
])
def test_affine_fast_path_equals_the_table(spec: ChestSpec) -> None:
    ds = make_chest(spec, rows=4, columns=4)
    fmt = pixel_format(ds)
    coefficients = linear_coefficients(ds, fmt)
    assert coefficients is not None
    patterns = np.arange(1 << fmt.bits_allocated)
    fast = np.clip(stored_values(patterns, fmt) * coefficients[0] + coefficients[1], 0.0, 1.0)
    np.testing.assert_allclose(fast, presentation_table(ds, fmt), atol=1e-5)


@pytest.mark.parametrize("spec", [
    ChestSpec(window=(200.0, 1.0)), ChestSpec(window=(9000.0, 100.0)),
    ChestSpec(window=(200.0, 100.0), voi_function="SIGMOID"), ChestSpec(voi_lut=True),
    ChestSpec(modality_lut=True),
], ids=["threshold", "window-outside", "sigmoid", "voi-lut", "modality-lut"])
def test_non_linear_headers_take_the_table(spec: ChestSpec) -> None:
    ds = make_chest(spec, rows=4, columns=4)
    assert linear_coefficients(ds, pixel_format(ds)) is None


def test_multi_frame_uses_the_first_frame() -> None:
    np.testing.assert_allclose(gray(frames=3), gray(), atol=0)


def test_rgb_is_converted_to_luma() -> None:
    np.testing.assert_allclose(gray(photometric="RGB", modality="SC"), PHANTOM, atol=2.5 / 255)


def test_ybr_from_jpeg_baseline_is_converted(tmp_path: Path) -> None:
    _need_dcmtk()
    src = write(make_chest(rows=SIZE, columns=SIZE, photometric="RGB"), tmp_path / "rgb.dcm")
    ds = load_dicom(transcode(src, JPEGBaseline8Bit, tmp_path / "ybr.dcm"))
    assert ds.PhotometricInterpretation.startswith("YBR")
    assert np.abs(dicom_to_gray(ds) - PHANTOM).mean() < 0.01


def test_native_ybr_full_is_converted() -> None:
    ds = make_chest(rows=SIZE, columns=SIZE, photometric="RGB", modality="SC")
    rgb = np.frombuffer(ds.PixelData, np.uint8).reshape(SIZE, SIZE, 3)
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    np.testing.assert_allclose(dicom_to_gray(ds), PHANTOM, atol=3.5 / 255)


def test_palette_colour_is_expanded_then_converted() -> None:
    ds = make_chest(rows=SIZE, columns=SIZE, bits_stored=8, modality="SC")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ramp = (np.arange(256) * 257).astype("<u2").tobytes()
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", ramp)
    np.testing.assert_allclose(dicom_to_gray(ds), PHANTOM, atol=0.6 / 255)


@pytest.mark.parametrize("lut", ["modality_lut", "voi_lut"])
def test_lut_data_is_read_in_big_endian_files(lut: str, tmp_path: Path) -> None:
    _need_dcmtk()
    flags: dict[str, Any] = {lut: True}
    src = write(make_chest(rows=64, columns=64, **flags), tmp_path / "le.dcm")
    big = load_dicom(transcode(src, ExplicitVRBigEndian, tmp_path / "be.dcm"))
    assert big.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    np.testing.assert_array_equal(dicom_to_gray(big), dicom_to_gray(load_dicom(src)))


def _need_dcmtk() -> None:
    if shutil.which("dcmcjpeg") is None:
        pytest.skip("DCMTK (Debian package dcmtk) is not installed: dcmcjpeg not on PATH")


def test_factory_covers_every_supported_transfer_syntax() -> None:
    assert set(ALL_SYNTAXES) == set(SUPPORTED_TRANSFER_SYNTAXES)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, bool], Path]:
    folder = tmp_path_factory.mktemp("originals")
    return {(bits, signed): write(make_chest(rows=SIZE, columns=SIZE, bits_stored=bits,
                                             signed=signed), folder / f"{bits}-{signed}.dcm")
            for bits in (8, 12, 16) for signed in (False, True)}


@pytest.mark.parametrize("syntax", ALL_SYNTAXES, ids=lambda s: UID(s).keyword)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_every_transfer_syntax_decodes_to_the_original(
        syntax: UID, signed: bool, originals: dict[tuple[int, bool], Path], tmp_path: Path) -> None:
    _need_dcmtk()
    if signed and syntax == JPEGLSNearLossless:
        pytest.skip("dcmcjpls cannot write signed near-lossless JPEG-LS")
    bits = 8 if syntax == JPEGBaseline8Bit else 12 if syntax == JPEGExtended12Bit else 16
    src = originals[(bits, signed)]
    ds = load_dicom(transcode(src, syntax, tmp_path / "out.dcm"))
    assert ds.file_meta.TransferSyntaxUID == syntax
    out, ref = dicom_to_gray(ds), dicom_to_gray(load_dicom(src))
    if syntax in LOSSLESS_SYNTAXES:
        np.testing.assert_array_equal(out, ref)
    else:
        diff = np.abs(out - ref)
        assert diff.mean() < 0.01 and diff.max() < 0.08, (diff.mean(), diff.max())


def test_load_dicom_reads_a_dataset_without_file_meta(tmp_path: Path) -> None:
    ds = make_chest(rows=SIZE, columns=SIZE, bits_stored=10, photometric="MONOCHROME1")
    path = tmp_path / "bare.dcm"
    del ds.file_meta
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    loaded = load_dicom(path)
    np.testing.assert_allclose(dicom_to_gray(loaded), PHANTOM, atol=1e-3)
    np.testing.assert_allclose(dicom_to_gray(load_dicom(path.read_bytes())), PHANTOM, atol=1e-3)


def test_load_dicom_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("not a DICOM file at all, just words\n" * 10)
    with pytest.raises(PixelError, match="not"):
        load_dicom(path)


@pytest.mark.parametrize("change, match", [
    ({"pixels": False}, "no Pixel Data"),
    ({"bits_stored": 12, "bits_allocated": 32}, "Bits Allocated 32"),
    ({"high_bit": 16}, "High Bit 16"),
])
def test_unsupported_pixel_formats_raise(change: dict[str, object], match: str) -> None:
    with pytest.raises(PixelError, match=match):
        dicom_to_gray(make_chest(rows=8, columns=8, **change))  # type: ignore[arg-type]


def test_unsupported_transfer_syntax_and_corrupt_data_raise() -> None:
    ds = make_chest(rows=8, columns=8)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    with pytest.raises(PixelError, match="MPEG2"):
        dicom_to_gray(ds)
    ds.file_meta.TransferSyntaxUID = RLELossless
    with pytest.raises(PixelError, match="cannot be decoded"):
        dicom_to_gray(ds)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = ds.PixelData[:10]
    with pytest.raises(PixelError):
        dicom_to_gray(ds)


@pytest.mark.parametrize("depth", [np.uint8, np.uint16])
def test_file_to_gray_reads_png_and_jpeg(depth: type[np.unsignedinteger], tmp_path: Path) -> None:
    peak = np.iinfo(depth).max
    cv2.imwrite(str(tmp_path / "x.png"), np.round(PHANTOM * peak).astype(depth))
    np.testing.assert_allclose(file_to_gray(tmp_path / "x.png"), PHANTOM, atol=0.51 / peak + 1e-6)
    cv2.imwrite(str(tmp_path / "x.jpg"), np.round(PHANTOM * 255).astype(np.uint8))
    assert np.abs(file_to_gray(tmp_path / "x.jpg") - PHANTOM).mean() < 0.01
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(PixelError):
        file_to_gray(tmp_path / "bad.png")


def test_jpeg2000_lossy_is_lossy_but_close(originals: dict[tuple[int, bool], Path],
                                          tmp_path: Path) -> None:
    ds = load_dicom(transcode(originals[(16, False)], JPEG2000, tmp_path / "j2k.dcm"))
    out = dicom_to_gray(ds)
    assert 0 < np.abs(out - dicom_to_gray(load_dicom(originals[(16, False)]))).max() < 0.05


def test_jpeg_lossless_of_signed_16_bit_keeps_negative_values(
        originals: dict[tuple[int, bool], Path], tmp_path: Path) -> None:
    _need_dcmtk()
    ds = load_dicom(transcode(originals[(16, True)], JPEGLossless, tmp_path / "jl.dcm"))
    np.testing.assert_allclose(dicom_to_gray(ds), PHANTOM, atol=1e-4)


# Real samples from ../shared/data/dicom (skipped when the folder is absent).

def _sample(name: str) -> Dataset:
    return load_dicom(require_shared_data("dicom") / name)


@pytest.mark.realdata
@pytest.mark.parametrize("name", [
    "chest/cr-jpeg-baseline-mono2.dcm", "chest/cr-jpeg-baseline-relabelled-mono1.dcm",
    "chest/cr-mono1-10bit-no-file-meta.dcm", "chest/dx-implicit-vr-8bit.dcm",
    "not-chest/cr-dental-jpeg-lossless-mono1.dcm",
])
def test_real_samples_decode(name: str) -> None:
    ds = _sample(name)
    out = dicom_to_gray(ds)
    assert out.shape == (ds.Rows, ds.Columns) and 0.0 <= out.min() < out.max() <= 1.0
    assert preprocess_gray(out).shape == (224, 224)


CHEST_SAMPLES = [
    "chest/cr-jpeg-baseline-mono2.dcm", "chest/cr-mono1-10bit-no-file-meta.dcm",
    "chest/dx-implicit-vr-8bit.dcm",
]


@pytest.mark.realdata
@pytest.mark.parametrize("name", CHEST_SAMPLES)
def test_real_chest_samples_have_no_padding_to_trim(name: str) -> None:
    """Real radiographs without a canvas keep every pixel (air at the edge is not flat)."""
    out = dicom_to_gray(_sample(name))
    assert trim_padding(out).shape == out.shape


@pytest.mark.realdata
@pytest.mark.parametrize("name", CHEST_SAMPLES)
def test_real_chest_samples_keep_the_chest_after_the_surround_trim(name: str) -> None:
    """These radiographs are framed to the chest: the surround trim takes at most a sliver."""
    out = dicom_to_gray(_sample(name))
    h, w = trim_surround(out).shape
    assert h >= 0.95 * out.shape[0] and w >= 0.95 * out.shape[1]


@pytest.mark.realdata
def test_real_relabelled_monochrome1_is_the_inverted_monochrome2() -> None:
    mono2 = dicom_to_gray(_sample("chest/cr-jpeg-baseline-mono2.dcm"))
    mono1 = dicom_to_gray(_sample("chest/cr-jpeg-baseline-relabelled-mono1.dcm"))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)


@pytest.mark.realdata
def test_real_monochrome1_chest_has_bright_mediastinum() -> None:
    """Presentation sense: the spine/mediastinum column is brighter than the lung fields."""
    out = dicom_to_gray(_sample("chest/cr-mono1-10bit-no-file-meta.dcm"))
    h, w = out.shape
    centre = out[h // 4: 3 * h // 4, w // 2 - w // 20: w // 2 + w // 20].mean()
    lungs = out[h // 4: 3 * h // 4, w // 5: w // 3].mean()
    assert centre > lungs + 0.1


@pytest.mark.realdata
def test_real_modality_lut_sequence_is_applied() -> None:
    ds = _sample("not-chest/cr-dental-jpeg-lossless-mono1.dcm")
    lut = np.frombuffer(ds.ModalityLUTSequence[0].LUTData, "<u2").astype(np.float64)
    stored = ds.pixel_array.astype(np.int64) & 0x3FF
    expected = 1.0 - (lut[stored] - lut.min()) / (lut.max() - lut.min())
    np.testing.assert_allclose(dicom_to_gray(ds), expected, atol=1e-6)
