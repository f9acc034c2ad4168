"""Run the web app next to the DICOM node: uvicorn in a thread of the ``serve`` process.

The console shares the node's journal (one connection, one lock) and opens
the outbox in the same database. It loads its own inference engine (two
LiteRT interpreters; each is locked per call, so they could be shared, but
the node does not expose its engine); when the models cannot be loaded the
app still starts and ``/readyz`` says why.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Final

import uvicorn

from config.schema import Settings
from delivery.outbox import Outbox, OutboxError
from dicom_node.admission import Refusals
from dicom_node.journal import Journal
from dicom_node.preflight import models_dir
from inference.registry import ModelError
from web.app import create_app
from web.uploads import Predictor

log = logging.getLogger(__name__)

START_TIMEOUT_S: Final = 15.0


class WebStartError(RuntimeError):
    """The web server could not listen (the message names ``web.bind_address``/``web.port``)."""


def load_engine(settings: Settings) -> tuple[Predictor | None, str | None]:
    """Both classifiers, or ``None`` and the reason (shown by ``/readyz``)."""
    from inference.engine import InferenceEngine

    folder = models_dir(settings)
    try:
        engine = InferenceEngine.from_models_dir(folder, settings.inference.thresholds,
                                                 settings.inference.threads_per_model)
    except (ModelError, ValueError, RuntimeError) as err:
        log.warning("web: models not loaded from %s: %s", folder, err)
        return None, f"inference.models_dir ({folder}): {err}"
    return engine, None


@dataclass
class WebServer:
    server: uvicorn.Server
    thread: threading.Thread
    outbox: Outbox
    owns_outbox: bool = True

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=START_TIMEOUT_S)
        if self.owns_outbox:
            self.outbox.close()


def start_web(settings: Settings, journal: Journal, engine: Predictor | None = None,
              outbox: Outbox | None = None, refusals: Refusals | None = None) -> WebServer:
    """Serve the console and API on ``web.bind_address:web.port``; returns once listening.

    ``serve`` passes the engine its workers already loaded and the running outbox,
    so the models are loaded and the database opened once per process.
    """
    owns_outbox = outbox is None
    try:
        outbox = journal.open_sibling(Outbox) if outbox is None else outbox
    except OutboxError as err:
        raise WebStartError(str(err)) from err
    engine, error = (engine, None) if engine is not None else load_engine(settings)
    app = create_app(settings, engine, journal, outbox=outbox, engine_error=error,
                     refusals=refusals)
    config = uvicorn.Config(app, host=settings.web.bind_address, port=settings.web.port,
                            log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="web", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        if owns_outbox:
            outbox.close()
        raise WebStartError(f"web.bind_address/web.port: cannot listen on {settings.web.bind_address}:"
                            f"{settings.web.port}; free the port or change web.port")
    log.info("web console on http://%s:%d/", settings.web.bind_address, settings.web.port)
    return WebServer(server, thread, outbox, owns_outbox)
