"""The spool: one durable file per received instance.

A file is written under ``tmp/``, flushed and fsynced, then renamed into a
day folder and the folder fsynced, so a file in a day folder is always whole.
The name carries the SOP Instance UID and a random suffix, so two concurrent
receptions of the same instance never overwrite each other (the journal keeps
one of them, the other is discarded).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from dicom_node.errors import SpoolFullError, SpoolWriteError

log = logging.getLogger(__name__)

TMP_DIR = "tmp"
ORPHAN_DIR = "orphans"
SUFFIX = ".dcm"
_UID_CHARS = re.compile(r"[^0-9.]")


class Spool:
    """Atomic, fsynced writes of received datasets below ``root``."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self._tmp = root / TMP_DIR

    def ensure(self) -> None:
        """Create the spool folders (raises ``OSError`` when impossible)."""
        self._tmp.mkdir(parents=True, exist_ok=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def write(self, data: bytes, sop_instance_uid: str) -> Path:
        """Store ``data`` durably and return its final path.

        Raises :class:`SpoolFullError` when the write would leave less than
        the watermark free, :class:`SpoolWriteError` on any I/O failure; in
        both cases nothing is left behind.
        """
        try:
            free = self.free_bytes()
        except OSError as err:
            raise SpoolWriteError(f"spool {self.root}: cannot read free space ({err})") from err
        if free - len(data) < self.min_free_bytes:
            raise SpoolFullError(
                f"spool {self.root}: {free // 2**20} MB free, storage.min_free_mb is "
                f"{self.min_free_bytes // 2**20} MB")
        name = f"{_safe(sop_instance_uid)}_{secrets.token_hex(4)}{SUFFIX}"
        tmp = self._tmp / name
        final_dir = self.root / time.strftime("%Y%m%d")
        try:
            _write_synced(tmp, data)
            final_dir.mkdir(exist_ok=True)
            os.replace(tmp, final_dir / name)
            _fsync_dir(final_dir)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise SpoolWriteError(f"spool {self.root}: cannot write {name} ({err})") from err
        return final_dir / name

    def discard(self, path: Path) -> None:
        """Remove a file that the journal did not accept."""
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            log.error("spool: cannot remove unaccepted file %s: %s", path, err)

    def discard_replaced(self, path: Path | None) -> None:
        """Remove the file of an instance that a changed re-send replaced, with what was
        derived from it beside it (``<name>.heatmap.npy``). A crash before this leaves the
        old file unknown to the journal: the next start moves it to ``orphans/``."""
        if path is None:
            return
        for derived in path.parent.glob(f"{path.name}.*"):
            self.discard(derived)
        self.discard(path)

    def sweep(self, known: Iterable[Path], older_than: float | None = None) -> tuple[int, int]:
        """Clean up after a crash: delete temp files, move files unknown to the journal.

        Such files were never answered with Success, so the sender still has
        them; they are kept in ``orphans/`` for inspection, not deleted.
        ``older_than`` (a time): touch only files last modified before it -- a
        spool shared by several nodes holds files other nodes are writing or
        about to journal right now (issue 22).
        Returns ``(temp files removed, orphans moved)``.
        """
        def stale(path: Path) -> bool:
            try:
                return older_than is None or path.stat().st_mtime < older_than
            except FileNotFoundError:  # renamed or removed by its writer meanwhile
                return False

        removed = 0
        for tmp in self._tmp.glob(f"*{SUFFIX}"):
            if stale(tmp):
                tmp.unlink(missing_ok=True)
                removed += 1
        known_set = {p.resolve() for p in known}
        orphans = [p for p in self._day_files() if p.resolve() not in known_set and stale(p)]
        if orphans:
            (self.root / ORPHAN_DIR).mkdir(exist_ok=True)
        for path in orphans:
            os.replace(path, self.root / ORPHAN_DIR / path.name)
        return removed, len(orphans)

    def _day_files(self) -> list[Path]:
        days = [d for d in self.root.iterdir() if d.is_dir() and d.name.isdigit()]
        return [f for d in days for f in d.glob(f"*{SUFFIX}")]


def _safe(uid: str) -> str:
    """A UID fit for a file name (UIDs are digits and dots, PS3.5 9.1)."""
    cleaned = _UID_CHARS.sub("_", uid.strip())[:64]
    return cleaned or "no-uid"


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
