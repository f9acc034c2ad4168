"""The worklist API: received studies, their images and results.

``GET /api/v1/studies`` pages through the journal's studies (filter by status
and finding, newest first or highest TB score first); ``GET
/api/v1/studies/{uid}`` gives every image's state and result and the
study-level result chosen by the aggregation rule
(:func:`dicom_node.aggregation.build_study_result`: the image with the
highest TB-vs-normal score represents the study).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from delivery.outbox import Outbox
from delivery.views import RetryOutcome, public_row, retry_row, retry_study, study_rows
from dicom_node.aggregation import build_study_result
from dicom_node.journal import InstanceRecord
from dicom_node.worker import load_heatmap, prediction_from_json
from dicom_node.worklist import MAX_PAGE_SIZE, StudyQuery, StudySort, StudyStatus, list_studies, study_summary
from inference.pixels import PixelError, dicom_to_gray, load_dicom
from inference.results import Finding, prediction_to_dict
from web.context import NOTICE, WebContext
from web.images import render

log = logging.getLogger(__name__)


def _image(record: InstanceRecord) -> dict[str, Any]:
    result = None if record.result_json is None else prediction_from_json(record.result_json)
    has_heatmap = record.heatmap_path is not None and record.heatmap_path.is_file()
    return {
        "sop_instance_uid": record.sop_instance_uid, "series_uid": record.series_uid,
        "sop_class_uid": record.sop_class_uid, "calling_ae": record.calling_ae,
        "received_at": record.received_at, "state": record.state.value, "reason": record.reason,
        "result": None if result is None else prediction_to_dict(result),
        "heatmap_url": f"/api/v1/instances/{record.sop_instance_uid}/heatmap.png"
        if has_heatmap else None,
    }


def study_detail(ctx: WebContext, study_uid: str) -> dict[str, Any] | None:
    summary = study_summary(ctx.journal, study_uid)
    if summary is None:
        return None
    records = ctx.journal.study_instances(study_uid)
    result = build_study_result(study_uid, 0, [r for r in records if r.result_json])
    return {
        "study": asdict(summary),
        "result": None if result is None else {
            **prediction_to_dict(result.prediction),
            "representative_sop_instance_uid": result.representative.sop_instance_uid},
        "images": [_image(r) for r in records],
        "deliveries": None if ctx.outbox is None
        else [public_row(r) for r in study_rows(ctx.outbox, study_uid)],
        "notice": NOTICE,
    }


def _instance_heatmap(ctx: WebContext, sop_instance_uid: str) -> bytes:
    record = ctx.journal.instance(sop_instance_uid)
    heatmap = None if record is None else load_heatmap(record.heatmap_path)
    if record is None or heatmap is None or record.result_json is None:
        raise HTTPException(404, f"no heatmap for instance {sop_instance_uid}")
    prediction = prediction_from_json(record.result_json, heatmap)
    try:
        ds = load_dicom(record.path, ctx.settings.dicom.max_inflated_mb * 2**20)
        gray = dicom_to_gray(ds, ctx.settings.inference.max_pixels)
    except (PixelError, OSError) as err:
        raise HTTPException(410, f"the spool file of {sop_instance_uid} cannot be read ({err})") from err
    png = render(gray, prediction).heatmap
    assert png is not None  # render draws the overlay whenever a heatmap is given
    return png


def _outbox(ctx: WebContext) -> Outbox:
    if ctx.outbox is None:
        raise HTTPException(503, "result delivery is not configured (no outbox)")
    return ctx.outbox


def studies_routes(ctx: WebContext) -> APIRouter:
    router = APIRouter(tags=["studies"], dependencies=[Depends(ctx.access)])

    @router.get("/api/v1/studies", summary="received studies, paged and filtered")
    def studies(page: Annotated[int, Query(ge=1)] = 1,
                page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 25,
                status: StudyStatus | None = None, finding: Finding | None = None,
                sort: StudySort = StudySort.NEWEST) -> dict[str, Any]:
        query = StudyQuery(page, page_size, status, None if finding is None else finding.value, sort)
        items, total = list_studies(ctx.journal, query)
        return {"items": [asdict(s) for s in items], "page": page, "page_size": page_size,
                "total": total, "sort": sort.value}

    @router.get("/api/v1/studies/{study_uid}", summary="one study: images, results, deliveries",
                responses={404: {}})
    def study(study_uid: str) -> dict[str, Any]:
        detail = study_detail(ctx, study_uid)
        if detail is None:
            raise HTTPException(404, f"no study {study_uid} in the journal")
        return detail

    @router.post("/api/v1/studies/{study_uid}/retry", summary="retry the study's dead letters",
                 responses={404: {}, 409: {}, 503: {}})
    def retry_study_deliveries(study_uid: str) -> dict[str, Any]:
        outbox = _outbox(ctx)
        if study_summary(ctx.journal, study_uid) is None:
            raise HTTPException(404, f"no study {study_uid} in the journal")
        requeued = retry_study(outbox, study_uid)
        if not requeued:
            raise HTTPException(409, f"study {study_uid} has no dead-lettered delivery")
        return {"study_uid": study_uid, "requeued": requeued}

    @router.post("/api/v1/deliveries/{delivery_id}/retry", summary="retry one dead-lettered delivery",
                 responses={404: {}, 409: {}, 503: {}})
    def retry_delivery(delivery_id: int) -> dict[str, Any]:
        outcome = retry_row(_outbox(ctx), delivery_id)
        if outcome is RetryOutcome.NOT_FOUND:
            raise HTTPException(404, f"no delivery {delivery_id} in the outbox")
        if outcome is RetryOutcome.NOT_DEAD:
            raise HTTPException(409, f"delivery {delivery_id} is not dead-lettered; only dead "
                                     "letters are retried by hand")
        return {"id": delivery_id, "state": "pending"}

    @router.get("/api/v1/instances/{sop_instance_uid}/heatmap.png", response_class=Response,
                summary="heatmap overlay of a classified instance", responses={404: {}, 410: {}})
    def instance_heatmap(sop_instance_uid: str) -> Response:
        return Response(_instance_heatmap(ctx, sop_instance_uid), media_type="image/png")

    return router
