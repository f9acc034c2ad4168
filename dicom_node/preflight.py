"""Checks beyond the schema that ``check-config`` and ``serve`` run before starting.

Each problem names the setting and the fix: folders that cannot be created,
TLS files that do not load, models that are missing when workers are on.
Warnings (the start goes on): the spool disk below its watermark, and a node
open to any caller on a network interface.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from config.schema import Settings, is_loopback_address
from dicom_node.errors import StartupError
from dicom_node.scp import server_ssl_context
from inference.registry import ModelError, ThresholdMismatch, default_models_dir, load_registry

log = logging.getLogger(__name__)


def models_dir(settings: Settings) -> Path:
    """``inference.models_dir`` resolved; the shipped ``models/`` when not set."""
    folder = settings.inference.models_dir
    return default_models_dir() if folder is None else settings.path(folder)


def check_environment(settings: Settings) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` about the machine the settings are meant to run on."""
    errors = [p for p in (
        _writable_dir(settings.path(settings.storage.spool_dir), "storage.spool_dir"),
        _database(settings),
        _tls(settings),
        _models(settings),
    ) if p]
    warnings = [w for w in (_free_space(settings), _open_to_anyone(settings)) if w]
    return errors, warnings


def _database(settings: Settings) -> str | None:
    """A SQLite journal's folder is writable; a database is at this release's schema version
    (SQLite: older ones are upgraded at start; PostgreSQL: by ``cxr-gateway db upgrade``)."""
    from storage.database import Database
    from storage.errors import SchemaVersionError, StorageError

    target = settings.database_target()
    if isinstance(target, Path):
        problem = _writable_dir(target.parent, "storage.database")
        if problem or not target.is_file():
            return problem
    try:
        Database(target, password=settings.database_password(), upgrade=False).close()
    except (StorageError, OSError) as err:
        older = err.__cause__ if isinstance(err.__cause__, SchemaVersionError) else None
        if isinstance(target, Path) and older is not None and older.found < older.expected:
            return None  # a SQLite journal of an older release: upgraded when the node starts
        return f"storage.database: {err}"
    return None


def _writable_dir(folder: Path, key: str) -> str | None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{key}: {existing} is not a folder; point {key} at a folder path"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{key}: {existing} is not writable by this user; fix its permissions or move it"
    return None


def _tls(settings: Settings) -> str | None:
    if not settings.dicom.tls.enabled:
        return None
    try:
        server_ssl_context(settings.dicom.tls, settings)
    except StartupError as err:
        return str(err)
    return None


def _models(settings: Settings) -> str | None:
    if settings.inference.workers == 0:
        return None
    folder = models_dir(settings)
    try:
        load_registry(folder, settings.inference.thresholds)
    except ThresholdMismatch as err:
        return str(err)  # the models are fine; the setting names its own key and fix
    except ModelError as err:
        return (f"inference.models_dir: {err}; put the exported models in {folder}, point "
                "inference.models_dir at them, or set inference.workers: 0 (receive only)")
    return None


def _free_space(settings: Settings) -> str | None:
    folder = settings.path(settings.storage.spool_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free_mb = shutil.disk_usage(folder).free // 2**20
    if free_mb < settings.storage.min_free_mb:
        return (f"storage.min_free_mb: only {free_mb} MB free at {folder}, below the watermark "
                f"{settings.storage.min_free_mb} MB: every C-STORE will be refused (0xA700)")
    return None


def _open_to_anyone(settings: Settings) -> str | None:
    """Any host on the network may store into the gateway: say so loudly (issue 20, 11)."""
    dicom = settings.dicom
    if not dicom.accept_any_caller or is_loopback_address(dicom.bind_address):
        return None
    return (f"dicom.accept_any_caller is true and dicom.bind_address is {dicom.bind_address}: "
            "ANY host that reaches this port may open associations and store instances "
            "(filling the spool and the queue). For testing only: list the PACS in "
            "dicom.allowed_callers (with host) and set dicom.accept_any_caller: false, or bind "
            "to 127.0.0.1")
