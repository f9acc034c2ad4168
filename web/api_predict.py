"""``POST /api/v1/predict`` and the PNGs it links to.

The upload is classified in the request (both classifiers, heatmap); the
radiograph and the heatmap overlay are kept as PNGs in the short-lived
:class:`web.images.RenderingCache` and linked from the answer. Nothing about
the upload is written to the journal or to disk beyond a temporary file.
An optional ``age_years`` form field states the patient's age
(:mod:`web.intended_use`): below ``inference.min_patient_age_years`` the
upload is refused (422), and with no known age the answer's ``notes`` say so.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Response, UploadFile
from fastapi.responses import JSONResponse

from inference.results import prediction_to_dict
from web.context import NOTICE, WebContext
from web.images import render
from web.uploads import DecodeLimits, UploadError, UploadResult, classify_upload, read_limited

log = logging.getLogger(__name__)

PREFIX = "/api/v1/predictions"


def _limits(ctx: WebContext) -> DecodeLimits:
    """``inference.max_pixels`` and ``dicom.max_inflated_mb`` as upload decode limits."""
    return DecodeLimits(ctx.settings.inference.max_pixels, ctx.settings.dicom.max_inflated_mb * 2**20)


def _answer(result: UploadResult, key: str, has_heatmap: bool, ttl_s: float) -> dict[str, Any]:
    rows, columns = (int(n) for n in result.gray.shape)
    return {
        **prediction_to_dict(result.prediction),
        "input": {"kind": result.kind.value, "rows": rows, "columns": columns,
                  "quality_gate": "passed" if result.kind.value == "dicom"
                  else "not applicable (PNG/JPEG has no DICOM header)"},
        "image_url": f"{PREFIX}/{key}/image.png",
        "heatmap_url": f"{PREFIX}/{key}/heatmap.png" if has_heatmap else None,
        "links_expire_in_s": ttl_s,
        "notice": NOTICE,
    }


def predict_routes(ctx: WebContext) -> APIRouter:
    router = APIRouter(tags=["predict"], dependencies=[Depends(ctx.access)])

    @router.post("/api/v1/predict", summary="classify an uploaded chest radiograph",
                 responses={400: {}, 413: {}, 415: {}, 422: {}, 503: {}})
    def predict(file: UploadFile,
                age_years: Annotated[float | None, Form(ge=0, le=130, description=(
                    "the patient's age in years; a DICOM file's own age is used when absent"))]
                = None) -> JSONResponse:
        if ctx.engine is None:
            raise HTTPException(503, f"models not loaded: {ctx.engine_error}")
        try:
            data = read_limited(file.file, ctx.max_upload_bytes)
            result = classify_upload(data, ctx.engine, ctx.api_metrics.timer, _limits(ctx),
                                     age_years=age_years,
                                     min_age_years=ctx.settings.inference.min_patient_age_years)
        except UploadError as err:
            log.info("upload refused (%d): %s", err.status, err)
            raise HTTPException(int(err.status), str(err)) from err
        with ctx.api_metrics.timer("render"):
            rendering = render(result.gray, result.prediction)
        key = ctx.renderings.put(rendering)
        return JSONResponse(_answer(result, key, rendering.heatmap is not None,
                                    ctx.renderings.ttl_s))

    @router.get(PREFIX + "/{key}/{which}.png", summary="a rendering of a recent prediction",
                response_class=Response, responses={404: {}})
    def rendering(key: str, which: Literal["image", "heatmap"]) -> Response:
        found = ctx.renderings.get(key)
        png = None if found is None else found.image if which == "image" else found.heatmap
        if png is None:
            raise HTTPException(404, "no such rendering (links expire after "
                                     f"{ctx.renderings.ttl_s:.0f} s); upload the image again")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    return router
