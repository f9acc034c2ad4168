"""The running node: spool, journal, workers, aggregator and SCP wired together.

Start order makes a restart after a crash safe: open the journal, re-queue
jobs a crash left running, clean the spool of half-written files, start the
workers and aggregator, and only then accept associations. Stop order is the
reverse: stop accepting, let open associations finish (bounded), stop the
workers after their current image, close the journal.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from dataclasses import dataclass, field

from pynetdicom.transport import ThreadedAssociationServer

from config.schema import Settings
from dicom_node.aggregation import Aggregator, LoggingSink, ReportPolicy, ResultSink
from dicom_node.errors import PersistError, StartupError
from dicom_node.gate import GatedServer
from dicom_node.intake import Intake, IntakeActivity, IntakeLimits
from dicom_node.journal import Journal
from dicom_node.preflight import models_dir
from dicom_node.scp import start_scp
from dicom_node.spool import Spool
from dicom_node.worker import Pipeline, Predictor, Worker
from inference.age import DEFAULT_MIN_AGE_YEARS
from inference.preprocess import PreprocessError
from inference.registry import ModelError

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0
SHARED_SWEEP_AGE_S = 3600.0
"""On a shared spool, a temp or unrecorded file is swept at start only once this old."""


def build_pipeline(settings: Settings) -> Pipeline:
    """The real per-instance steps: quality gate, pixel decoding, both LiteRT models."""
    from inference.engine import InferenceEngine

    folder = models_dir(settings)
    try:
        engine = InferenceEngine.from_models_dir(folder, settings.inference.thresholds,
                                                 settings.inference.threads_per_model)
    except (ModelError, ValueError, RuntimeError) as err:
        raise StartupError(f"inference.models_dir ({folder}): cannot load the models ({err}); "
                           "export them there or set inference.workers: 0") from err
    return with_limits(engine_pipeline(engine, settings.inference.heatmap,
                                       settings.inference.min_patient_age_years), settings)


def with_limits(pipeline: Pipeline, settings: Settings) -> Pipeline:
    """The pipeline reading and decoding within ``dicom.max_inflated_mb`` and
    ``inference.max_pixels`` (issue 20, defect 6)."""
    from inference.pixels import dicom_to_gray, load_dicom

    return dataclasses.replace(
        pipeline,
        load=functools.partial(load_dicom, max_inflated_bytes=settings.dicom.max_inflated_mb * 2**20),
        to_gray=functools.partial(dicom_to_gray, max_pixels=settings.inference.max_pixels))


def intake_limits(settings: Settings) -> IntakeLimits:
    return IntakeLimits(settings.dicom.max_instance_mb * 2**20, settings.dicom.max_inflated_mb * 2**20)


def engine_pipeline(engine: Predictor, heatmap: bool,
                    min_age_years: float = DEFAULT_MIN_AGE_YEARS) -> Pipeline:
    """The worker pipeline of the real parts: quality gate (with the intended-use age),
    pixel normalisation, ``engine``."""
    from inference.pixels import PixelError, dicom_to_gray
    from inference.quality import check_quality, verdict_for_pixel_error

    gate = functools.partial(check_quality, min_age_years=min_age_years)
    return Pipeline(check_quality=gate, to_gray=dicom_to_gray, predictor=engine,
                    heatmap=heatmap, undecodable=(PixelError,),
                    explain_undecodable=verdict_for_pixel_error, unusable=(PreprocessError,))


@dataclass
class Gateway:
    """A started node; call :meth:`stop` to shut it down cleanly."""

    settings: Settings
    journal: Journal
    server: GatedServer  # server.admission.refusals: refused connections, for /metrics
    threads: list[threading.Thread]
    stop_event: threading.Event = field(default_factory=threading.Event)
    pipeline: Pipeline | None = None  # its predictor is the loaded engine, shared with the web app

    def stop(self) -> None:
        log.info("stopping: no new associations")
        self.server.shutdown()
        _drain(self.server)
        self.stop_event.set()
        for thread in self.threads:
            thread.join()
        self.journal.close()
        log.info("stopped")


def start_gateway(settings: Settings, sink: ResultSink | None = None,
                  pipeline: Pipeline | None = None) -> Gateway:
    """Start everything; raise :class:`StartupError` naming the setting at fault."""
    spool = Spool(settings.path(settings.storage.spool_dir), settings.storage.min_free_mb * 2**20)
    try:
        spool.ensure()
        journal = Journal(settings.database_target(), password=settings.database_password(),
                          node=settings.node_name(), lease_s=settings.storage.lease_s,
                          spool_root=spool.root)
    except OSError as err:
        raise StartupError(f"storage.spool_dir ({spool.root}): cannot create ({err})") from err
    except PersistError as err:
        raise StartupError(str(err)) from err
    _recover(journal, spool)
    if settings.inference.workers and pipeline is None:
        pipeline = build_pipeline(settings)
    stop = threading.Event()
    activity = IntakeActivity()  # background work gives way to intake (issue 20, defect 10)
    threads = _start_threads(settings, journal, pipeline, sink or LoggingSink(), stop, activity)
    try:
        server = start_scp(settings, Intake(spool, journal, intake_limits(settings), activity))
    except StartupError:
        stop.set()
        for thread in threads:
            thread.join()
        journal.close()
        raise
    return Gateway(settings, journal, server, threads, stop, pipeline)


def _recover(journal: Journal, spool: Spool) -> None:
    requeued = journal.requeue_interrupted()
    # a shared spool (several nodes): leave files other nodes may be writing right now
    older_than = time.time() - SHARED_SWEEP_AGE_S if journal.shared else None
    removed, orphans = spool.sweep(journal.spool_paths(), older_than)
    if requeued or removed or orphans:
        log.warning("recovered after an unclean stop: %d job(s) re-queued, %d temp file(s) "
                    "removed, %d unrecorded file(s) moved to orphans/", requeued, removed, orphans)


def _start_threads(settings: Settings, journal: Journal, pipeline: Pipeline | None,
                   sink: ResultSink, stop: threading.Event,
                   activity: IntakeActivity) -> list[threading.Thread]:
    threads: list[threading.Thread] = []
    if pipeline is not None:
        threads = [Worker(f"worker-{n + 1}", journal, pipeline, settings.inference.max_attempts,
                          stop, pause=functools.partial(activity.wait_quiet, stop))
                   for n in range(settings.inference.workers)]
    else:
        log.warning("inference.workers is 0: instances are received and queued, not classified")
    report = settings.results
    threads.append(Aggregator(journal, sink, settings.aggregation.quiet_period_s, stop,
                              settings.aggregation.poll_interval_s,
                              ReportPolicy(report.max_attempts, report.retry_delay_s,
                                           report.report_not_analysed),
                              pause=functools.partial(activity.wait_quiet, stop)))
    for thread in threads:
        thread.start()
    return threads


def _drain(server: ThreadedAssociationServer) -> None:
    """Let open associations finish for a while, then abort the rest."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    for assoc in server.active_associations:
        log.warning("aborting association with %s at shutdown", assoc.requestor.ae_title)
        assoc.abort()
