"""The manual (docs/, built by ``mkdocs build`` into ``site/``) served under ``/manual/``.

An operator on the hospital network reads the conformance statement, the HL7
specification and the operations guide from the gateway itself, without
internet (issue 24). The pages sit behind the console's access check
(web/auth.py). The site is looked up at each request, so building it does not
need a restart; while it is not built every ``/manual`` page answers 404 with a
page saying how to build it (never a 500), and pointing at the API reference.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

log = logging.getLogger(__name__)

MANUAL_PATH: Final = "/manual"
SITE_DIR: Final = Path(__file__).resolve().parents[1] / "site"
"""Where ``mkdocs build`` (mkdocs.yml ``site_dir``) writes the manual, beside the packages."""
BUILD_COMMAND: Final = ".venv/bin/mkdocs build"
NOT_BUILT_STATUS: Final = 404


def manual_routes(app: FastAPI, access: Callable[..., object], site_dir: Path = SITE_DIR) -> None:
    """``/manual`` (redirect) and ``/manual/{path}`` behind ``access``."""
    guard = [Depends(access)]

    def index() -> RedirectResponse:
        return RedirectResponse(f"{MANUAL_PATH}/")

    def page(path: str = "") -> Response:
        return _serve(site_dir, path)

    app.add_api_route(MANUAL_PATH, index, methods=["GET"], include_in_schema=False, dependencies=guard)
    app.add_api_route(f"{MANUAL_PATH}/{{path:path}}", page, methods=["GET"], include_in_schema=False,
                      dependencies=guard)


def _serve(site_dir: Path, path: str) -> Response:
    root = site_dir.resolve()
    if not (root / "index.html").is_file():
        return _not_built(site_dir)
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise HTTPException(404, "no such page of the manual")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        raise HTTPException(404, "no such page of the manual")
    return FileResponse(target)


def _not_built(site_dir: Path) -> HTMLResponse:
    log.info("manual requested but not built: %s has no index.html", site_dir)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<title>Manual not built</title><link rel="stylesheet" href="/static/style.css"></head>'
        '<body><main><h1>The manual is not built on this installation</h1>'
        f"<p>In the gateway's folder run <code>{html.escape(BUILD_COMMAND)}</code> (it writes "
        f"<code>{html.escape(str(site_dir))}</code>; <code>bin/setup --dev</code> installs MkDocs), "
        "then reload this page: no restart is needed. The same pages are in <code>docs/</code> "
        "of the source as Markdown.</p>"
        '<p>The REST API reference is served at <a href="/docs">/docs</a>.</p>'
        '<p><a href="/">Back to the console</a></p></main></body></html>'
    )
    return HTMLResponse(body, status_code=NOT_BUILT_STATUS)
