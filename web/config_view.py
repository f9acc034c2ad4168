"""A read-only view of the running configuration for the console: never secrets.

Shown: AE titles, ports and bind addresses, allowed senders, destinations,
thresholds and model versions, storage watermark, whether TLS and web
authentication are on. Never shown: ``web.auth_token`` and the contents of
key files (only whether a key file is set).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends

from config.schema import Settings, SiteThreshold
from dicom_node.preflight import models_dir
from inference.registry import ModelError, load_registry
from web.context import WebContext

log = logging.getLogger(__name__)


def _dicom(settings: Settings) -> dict[str, Any]:
    d = settings.dicom
    return {
        "ae_title": d.ae_title, "bind_address": d.bind_address, "port": d.port,
        "check_called_ae": d.check_called_ae, "accept_any_caller": d.accept_any_caller,
        "allowed_callers": [{"ae_title": c.ae_title, "host": c.host} for c in d.allowed_callers],
        "max_associations": d.max_associations,
        "max_associations_per_host": d.per_host_limit, "reserved_associations": d.reserved_slots,
        "establishment_timeout_s": d.timeouts.establishment,
        "tls": {"enabled": d.tls.enabled, "require_client_cert": d.tls.require_client_cert,
                "cert_file": None if d.tls.cert_file is None else str(d.tls.cert_file),
                "key_file_set": d.tls.key_file is not None},
    }


def _models(settings: Settings) -> dict[str, Any]:
    folder = models_dir(settings)
    try:
        specs = load_registry(folder, settings.inference.thresholds)
    except ModelError as err:
        return {"folder": str(folder), "error": str(err), "classifiers": {}}
    return {"folder": str(folder), "error": None, "classifiers": {
        task: {"name": s.name, "version": s.version, "architecture": s.architecture,
               "input_size": s.input_size, "threshold": s.threshold,
               "threshold_overridden": task in settings.inference.thresholds,
               "threshold_calibrated_for": _calibrated_for(settings, task)}
        for task, s in specs.items()}}


def _calibrated_for(settings: Settings, task: str) -> str | None:
    """The model version a site threshold names (None: the model's own, or a bare number)."""
    setting = settings.inference.thresholds.get(task)
    return setting.model_version if isinstance(setting, SiteThreshold) else None


def public_config(settings: Settings) -> dict[str, Any]:
    """The settings hospital IT checks, with every secret left out."""
    dest = settings.destinations
    return {
        "dicom": _dicom(settings),
        "storage": {"spool_dir": str(settings.path(settings.storage.spool_dir)),
                    "min_free_mb": settings.storage.min_free_mb},
        "inference": {"workers": settings.inference.workers, "heatmap": settings.inference.heatmap,
                      "max_attempts": settings.inference.max_attempts,
                      "min_patient_age_years": settings.inference.min_patient_age_years,
                      "models": _models(settings)},
        "aggregation": {"quiet_period_s": settings.aggregation.quiet_period_s},
        "destinations": {
            "dicom": [{"name": d.name, "ae_title": d.ae_title, "host": d.host, "port": d.port}
                      for d in dest.dicom],
            "hl7": [{"name": h.name, "host": h.host, "port": h.port,
                     "receiving_application": h.receiving_application,
                     "receiving_facility": h.receiving_facility} for h in dest.hl7]},
        "web": {"bind_address": settings.web.bind_address, "port": settings.web.port,
                "authentication": "token" if settings.web.auth_token else "loopback only"},
    }


def config_routes(ctx: WebContext) -> APIRouter:
    router = APIRouter(tags=["config"], dependencies=[Depends(ctx.access)])

    @router.get("/api/v1/config", summary="the running configuration, without secrets")
    def config() -> dict[str, Any]:
        return public_config(ctx.settings)

    return router
