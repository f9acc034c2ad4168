"""What the web app's routes need, passed in once by :func:`web.app.create_app` (no module globals)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry

from config.schema import Settings
from delivery.outbox import Outbox
from dicom_node.journal import Journal
from web.auth import Access
from web.images import RenderingCache
from web.metrics import ApiMetrics
from web.uploads import Predictor

log = logging.getLogger(__name__)

NOTICE: Final = ("Decision support, not a diagnosis: a radiologist or physician must review "
                 "the image and make the diagnosis.")


@dataclass(frozen=True)
class WebContext:
    """The running gateway as the web app sees it."""

    settings: Settings
    journal: Journal
    engine: Predictor | None  # None when the models could not be loaded (see engine_error)
    engine_error: str | None
    access: Access
    renderings: RenderingCache
    registry: CollectorRegistry
    api_metrics: ApiMetrics
    max_upload_bytes: int  # web.max_upload_mb, unless create_app was given another
    outbox: Outbox | None = None  # the results outbox, when delivery is configured
