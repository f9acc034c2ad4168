"""An uploaded file to a prediction: sniff the type, decode, gate, classify.

PNG and JPEG go through :func:`inference.pixels.file_to_gray` (the same
reader training used); DICOM through :func:`inference.pixels.load_dicom`,
the quality gate (:func:`inference.quality.check_quality`: frontal chest CR
or DX) and :func:`inference.pixels.dicom_to_gray`. The type is told from the
content (PNG and JPEG signatures, the PS3.10 ``DICM`` prefix, else a DICOM
parse), never from the file name.

Every refusal is an :class:`UploadError` carrying the HTTP status and a
sentence for the person who uploaded the file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from inference.pixels import PixelError, dicom_to_gray, file_to_gray, load_dicom
from inference.preprocess import PreprocessError
from inference.quality import QualityVerdict, check_quality, verdict_for_pixel_error
from inference.results import Prediction

log = logging.getLogger(__name__)

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
DICOM_PREFIX_OFFSET: Final = 128


class UploadKind(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    DICOM = "dicom"


class UploadError(ValueError):
    """An upload that cannot be classified; ``status`` is the HTTP answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Predictor(Protocol):
    def predict_gray(self, gray: NDArray[np.generic], heatmap: bool = True) -> Prediction: ...

    def check_pixels(self, gray: NDArray[np.generic]) -> QualityVerdict | None: ...


StageTimer = Callable[[str], AbstractContextManager[None]]


@dataclass(frozen=True)
class UploadResult:
    kind: UploadKind
    gray: NDArray[np.float32]
    prediction: Prediction


def sniff(data: bytes) -> UploadKind:
    """The upload's type from its first bytes; :class:`UploadError` (415) if none fits."""
    if data.startswith(PNG_SIGNATURE):
        return UploadKind.PNG
    if data.startswith(JPEG_SIGNATURE):
        return UploadKind.JPEG
    if data[DICOM_PREFIX_OFFSET:DICOM_PREFIX_OFFSET + 4] == b"DICM":
        return UploadKind.DICOM
    try:
        load_dicom(data)
    except PixelError:
        raise UploadError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                          "not a PNG, JPEG or DICOM file; upload a chest radiograph in one "
                          "of these formats") from None
    return UploadKind.DICOM


def dicom_gray(data: bytes) -> NDArray[np.float32]:
    """Decode a DICOM upload after the quality gate; 422 when the gate or decoding refuses it."""
    try:
        ds = load_dicom(data)
    except PixelError as err:
        raise UploadError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(err)) from err
    verdict = check_quality(ds)
    if not verdict.ok:
        raise UploadError(HTTPStatus.UNPROCESSABLE_ENTITY, f"not classified: {verdict.reason}")
    try:
        return dicom_to_gray(ds)
    except PixelError as err:
        reason = verdict_for_pixel_error(err).reason
        raise UploadError(HTTPStatus.UNPROCESSABLE_ENTITY, f"not classified: {reason}") from err


def picture_gray(data: bytes) -> NDArray[np.float32]:
    """Decode a PNG or JPEG upload with the training reader (it takes a file path)."""
    fd, name = tempfile.mkstemp(suffix=".img")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return file_to_gray(name)
    except PixelError as err:
        raise UploadError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                          "the file looks like a PNG or JPEG but cannot be decoded; "
                          "upload an intact grayscale or colour image") from err
    finally:
        os.unlink(name)


def classify_upload(data: bytes, predictor: Predictor, timer: StageTimer) -> UploadResult:
    """Sniff, decode (with the quality gate for DICOM) and run both classifiers."""
    if not data:
        raise UploadError(HTTPStatus.BAD_REQUEST, "the uploaded file is empty")
    kind = sniff(data)
    with timer("decode"):
        gray = dicom_gray(data) if kind is UploadKind.DICOM else picture_gray(data)
    verdict = predictor.check_pixels(gray)
    if verdict is not None:
        raise UploadError(HTTPStatus.UNPROCESSABLE_ENTITY, f"not classified: {verdict.reason}")
    try:
        with timer("inference"):
            prediction = predictor.predict_gray(gray, heatmap=True)
    except PreprocessError as err:
        raise UploadError(HTTPStatus.UNPROCESSABLE_ENTITY,
                          f"the image cannot be classified: {err}") from err
    log.info("upload classified (%s, %dx%d): %s", kind.value, gray.shape[1], gray.shape[0],
             prediction.finding.value)
    return UploadResult(kind, gray, prediction)
