"""An uploaded file to a prediction: sniff the type, decode, gate, classify.

PNG and JPEG go through :func:`inference.pixels.file_to_gray` (the same
reader training used); DICOM through :func:`inference.pixels.load_dicom`,
the quality gate (:func:`inference.quality.check_quality`: frontal chest CR
or DX) and :func:`inference.pixels.dicom_to_gray`. The type is told from the
content (PNG and JPEG signatures, the PS3.10 ``DICM`` prefix, else a DICOM
parse), never from the file name.

Every refusal is an :class:`UploadError` carrying the HTTP status and a
sentence for the person who uploaded the file.

Limits (issue 20, defect 6): :class:`UploadLimit` counts the request body as
it streams in and answers 413 once it passes ``web.max_upload_mb``, so the
multipart parser never spools more than the limit (a chunked upload has no
Content-Length to check in advance), and :func:`read_limited` holds the spooled
file itself to the limit exactly; a decoded image is bounded by
``inference.max_pixels`` read from its header (422) and a Deflated DICOM by
``dicom.max_inflated_mb`` (413).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from enum import StrEnum
from http import HTTPStatus
from typing import Any, BinaryIO, Final, Protocol

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from starlette.exceptions import HTTPException

from inference.pixels import (
    DEFAULT_MAX_INFLATED_BYTES,
    DEFAULT_MAX_PIXELS,
    InflateLimitError,
    PixelError,
    PixelLimitError,
    dicom_to_gray,
    file_to_gray,
    load_dicom,
)
from inference.preprocess import PreprocessError
from inference.quality import QualityVerdict, check_quality, verdict_for_pixel_error
from inference.results import Prediction
from web.intended_use import upload_age_verdict

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


@dataclass(frozen=True)
class DecodeLimits:
    """``inference.max_pixels`` and ``dicom.max_inflated_mb`` (bytes) for uploads."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised into the app's body reader once the counted body passed the limit: a 413
    (an HTTPException, so the framework answers it rather than calling it a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(limit))


def _too_large(limit: int) -> str:
    return (f"the file is larger than {limit // 2**20} MB (web.max_upload_mb); "
            "upload one chest radiograph")


def read_limited(file: BinaryIO, limit: int) -> bytes:
    """The uploaded file's bytes; 413 when it is over ``limit``. :class:`UploadLimit` bounds
    the whole request body (the file and the multipart framing around it) as it streams;
    this is the exact check of the file alone, once the parser has spooled it."""
    data = file.read(limit + 1)
    if len(data) > limit:
        raise UploadError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(limit))
    return data


class UploadLimit:
    """ASGI middleware: refuse an upload over ``limit`` bytes with 413, counting as it streams.

    A declared Content-Length over the limit is refused before reading; any
    other body is passed on chunk by chunk and cut off at the limit: the app
    sees :class:`BodyTooLarge` from ``receive`` and the client gets 413.
    """

    def __init__(self, app: Asgi, limit: int, path: str) -> None:
        self.app = app
        self.limit = limit
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        counted = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal counted
            message = await receive()
            counted += len(message.get("body", b""))
            if counted > self.limit:
                log.info("upload refused (413): body passed web.max_upload_mb (%d MB) while "
                         "streaming", self.limit // 2**20)
                raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        log.info("upload refused (413): larger than web.max_upload_mb (%d MB)", self.limit // 2**20)
        body = json.dumps({"detail": _too_large(self.limit)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def sniff(data: bytes) -> UploadKind:
    """The upload's type from its first bytes: PNG, JPEG, else a DICOM candidate that
    :func:`read_dicom` confirms by parsing it (415 when it does not parse)."""
    if data.startswith(PNG_SIGNATURE):
        return UploadKind.PNG
    if data.startswith(JPEG_SIGNATURE):
        return UploadKind.JPEG
    return UploadKind.DICOM


def read_dicom(data: bytes, max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> Dataset:
    """Parse a DICOM upload, once: 413 past ``dicom.max_inflated_mb``, 415 when unreadable.

    Without the PS3.10 ``DICM`` prefix the upload is DICOM only if it parses; if it
    does not, it is none of the accepted formats.
    """
    try:
        return load_dicom(data, max_inflated_bytes)
    except PixelError as err:
        if data[DICOM_PREFIX_OFFSET:DICOM_PREFIX_OFFSET + 4] != b"DICM":
            raise UploadError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              "not a PNG, JPEG or DICOM file; upload a chest radiograph in one "
                              "of these formats") from None
        status = (HTTPStatus.REQUEST_ENTITY_TOO_LARGE if isinstance(err, InflateLimitError)
                  else HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        raise UploadError(status, str(err)) from err


def dicom_gray(ds: Dataset, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.float32]:
    """Decode a DICOM upload after the quality gate; 422 when the gate or decoding refuses it."""
    _require(check_quality(ds, min_age_years=0))  # age: classify_upload, with a stated age
    try:
        return dicom_to_gray(ds, max_pixels)
    except PixelError as err:
        raise _not_classified(verdict_for_pixel_error(err).reason) from err


def picture_gray(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> NDArray[np.float32]:
    """Decode a PNG or JPEG upload with the training reader (it takes a file path)."""
    fd, name = tempfile.mkstemp(suffix=".img")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return file_to_gray(name, max_pixels)
    except PixelLimitError as err:
        raise _not_classified(str(err)) from err
    except PixelError as err:
        raise UploadError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                          "the file looks like a PNG or JPEG but cannot be decoded; "
                          "upload an intact grayscale or colour image") from err
    finally:
        os.unlink(name)


def _not_classified(reason: str) -> UploadError:
    return UploadError(HTTPStatus.UNPROCESSABLE_ENTITY, f"not classified: {reason}")


def _require(verdict: QualityVerdict) -> tuple[str, ...]:
    """The verdict's notes when it accepts; the 422 :class:`UploadError` when it refuses."""
    if not verdict.ok:
        raise _not_classified(verdict.reason)
    return verdict.notes


def classify_upload(data: bytes, predictor: Predictor, timer: StageTimer,
                    limits: DecodeLimits = DecodeLimits(), *, age_years: float | None = None,
                    min_age_years: float = 0.0) -> UploadResult:
    """Sniff, decode (with the age rule, and the quality gate for DICOM) and run both
    classifiers; the prediction's ``notes`` are the age rule's (:mod:`web.intended_use`)."""
    if not data:
        raise UploadError(HTTPStatus.BAD_REQUEST, "the uploaded file is empty")
    kind = sniff(data)
    with timer("decode"):
        ds = read_dicom(data, limits.max_inflated_bytes) if kind is UploadKind.DICOM else None
        notes = _require(upload_age_verdict(ds, age_years, min_age_years))
        gray = picture_gray(data, limits.max_pixels) if ds is None else dicom_gray(ds, limits.max_pixels)
    verdict = predictor.check_pixels(gray)
    if verdict is not None:
        raise _not_classified(verdict.reason)
    try:
        with timer("inference"):
            prediction = predictor.predict_gray(gray, heatmap=True)
    except PreprocessError as err:
        raise UploadError(HTTPStatus.UNPROCESSABLE_ENTITY,
                          f"the image cannot be classified: {err}") from err
    log.info("upload classified (%s, %dx%d): %s", kind.value, gray.shape[1], gray.shape[0],
             prediction.finding.value)
    return UploadResult(kind, gray, replace(prediction, notes=notes))
