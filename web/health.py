"""``/healthz`` (the process answers), ``/readyz`` (it can do its work) and ``/metrics``.

Ready means: both models loaded, the journal takes a write transaction, and
the spool disk has more free space than ``storage.min_free_mb`` (below it
every C-STORE is refused with 0xA700, PS3.4 B.2.3). A failing check answers
503 with every reason, so hospital IT sees what to fix.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicom_node.worklist import probe_writable
from web.context import WebContext
from web.metrics import NodeLabelled

log = logging.getLogger(__name__)


def _existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def spool_problem(ctx: WebContext) -> str | None:
    """Why the spool is below its watermark, or ``None``."""
    settings = ctx.settings
    folder = _existing(settings.path(settings.storage.spool_dir))
    try:
        free_mb = shutil.disk_usage(folder).free // 2**20
    except OSError as err:
        return f"storage.spool_dir: cannot read free space at {folder} ({err.strerror})"
    if free_mb < settings.storage.min_free_mb:
        return (f"storage.spool_dir: {free_mb} MB free at {folder}, below storage.min_free_mb "
                f"({settings.storage.min_free_mb} MB): new instances are refused")
    return None


def readiness_problems(ctx: WebContext) -> list[str]:
    problems = []
    if ctx.engine is None:
        problems.append(f"models not loaded: {ctx.engine_error or 'no inference engine'}")
    journal = probe_writable(ctx.journal)
    if journal is not None:
        problems.append(f"journal not writable: {journal}")
    spool = spool_problem(ctx)
    if spool is not None:
        problems.append(spool)
    return problems


def health_routes(ctx: WebContext) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="the process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="models loaded, journal writable, spool above its watermark",
                responses={503: {"description": "not ready; 'problems' says why"}})
    def readyz() -> JSONResponse:
        problems = readiness_problems(ctx)
        if problems:
            log.warning("not ready: %s", "; ".join(problems))
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "problems": []})

    @router.get("/metrics", summary="Prometheus metrics (text format)",
                dependencies=[Depends(ctx.access)])
    def metrics() -> Response:
        labelled = NodeLabelled(ctx.registry, ctx.settings.node_name())
        return Response(generate_latest(labelled), media_type=CONTENT_TYPE_LATEST)

    return router
