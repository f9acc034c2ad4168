"""The FastAPI application: REST API, web console, health and metrics in one app.

:func:`create_app` takes every dependency as an argument (settings, the
inference engine, the journal, the metrics registry), so tests and the
``serve`` command wire it the same way and nothing lives in module globals.
The OpenAPI description is served at ``/openapi.json``, ``/docs`` and
``/redoc``, and the built manual under ``/manual/`` (web/manual.py), behind the
same access check as the console (web/auth.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Final

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from config.schema import Settings
from delivery.outbox import Outbox
from dicom_node.admission import Refusals
from dicom_node.journal import Journal
from web.api_predict import predict_routes
from web.api_studies import studies_routes
from web.auth import Access
from web.config_view import config_routes
from web.context import WebContext
from web.health import health_routes
from web.images import RenderingCache
from web.manual import SITE_DIR, manual_routes
from web.metrics import ApiMetrics, JournalCollector, RefusalCollector
from web.uploads import Predictor, UploadLimit

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
PAGES: Final = {"/": "upload.html", "/worklist": "worklist.html", "/settings": "settings.html"}
UPLOAD_PATH: Final = "/api/v1/predict"
MULTIPART_OVERHEAD: Final = 2**16  # boundaries and part headers around the file, within the limit
OPENAPI_PATH: Final = "/openapi.json"


def create_app(settings: Settings, engine: Predictor | None, journal: Journal, *,
               outbox: Outbox | None = None,
               registry: CollectorRegistry | None = None, engine_error: str | None = None,
               renderings: RenderingCache | None = None,
               max_upload_bytes: int | None = None,
               refusals: Refusals | None = None,
               manual_dir: Path = SITE_DIR) -> FastAPI:
    """The app for one running gateway; ``engine`` is ``None`` when the models failed to load."""
    if outbox is not None and not outbox.same_database(journal):
        raise ValueError(f"outbox: expected the table in the journal database {journal.path}, "
                         f"got {outbox.path}")
    if max_upload_bytes is None:
        max_upload_bytes = settings.web.max_upload_mb * 2**20
    registry = CollectorRegistry() if registry is None else registry
    registry.register(JournalCollector(journal, outbox))
    if refusals is not None:
        registry.register(RefusalCollector(refusals))
    ctx = WebContext(settings=settings, journal=journal, engine=engine,
                     engine_error=engine_error if engine is None else None,
                     access=Access(settings.web.auth_token), renderings=renderings or RenderingCache(),
                     registry=registry, api_metrics=ApiMetrics(registry), outbox=outbox,
                     max_upload_bytes=max_upload_bytes)
    app = FastAPI(title="CXR gateway", version=version("cxr-gateway"),
                  description="Chest radiograph classification gateway: REST API and console. "
                              "Decision support, not a diagnosis.",
                  docs_url=None, redoc_url=None, openapi_url=None)  # _api_docs: behind access
    for router in (health_routes(ctx), predict_routes(ctx), studies_routes(ctx), config_routes(ctx)):
        app.include_router(router)
    _console(app, ctx)
    _api_docs(app, ctx)
    manual_routes(app, ctx.access, manual_dir)
    app.add_middleware(UploadLimit, limit=max_upload_bytes + MULTIPART_OVERHEAD, path=UPLOAD_PATH)
    return app


def _console(app: FastAPI, ctx: WebContext) -> None:
    """The console pages (behind the same access check) and their scripts and styles."""
    for route, page in PAGES.items():
        app.add_api_route(route, _page(STATIC_DIR / page), methods=["GET"], include_in_schema=False,
                          dependencies=[Depends(ctx.access)])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/index.html", lambda: RedirectResponse("/"), include_in_schema=False)


def _api_docs(app: FastAPI, ctx: WebContext) -> None:
    """``/openapi.json``, ``/docs`` and ``/redoc`` behind the console's access check."""
    guard = [Depends(ctx.access)]
    title = f"{app.title} API"

    def schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=title)

    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=OPENAPI_PATH, title=title)

    for route, endpoint in ((OPENAPI_PATH, schema), ("/docs", swagger), ("/redoc", redoc)):
        app.add_api_route(route, endpoint, methods=["GET"], include_in_schema=False,
                          dependencies=guard)


def _page(path: Path) -> Callable[[], FileResponse]:
    def page() -> FileResponse:
        return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-store"})
    return page
