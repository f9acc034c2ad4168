"""The node's exception hierarchy; messages name what failed and what was expected."""

from __future__ import annotations

from storage import errors as storage_errors


class NodeError(Exception):
    """Base of every error raised by :mod:`dicom_node`."""


class PersistError(NodeError):
    """A received instance cannot be made durable; the SCP answers 0xA700 (PS3.4 B.2.3)."""


class SpoolFullError(PersistError):
    """The spool file system is below its free-space watermark (``storage.min_free_mb``)."""


class SpoolWriteError(PersistError):
    """Writing, syncing or renaming a spool file failed."""


class JournalError(PersistError, storage_errors.JournalError):
    """The journal database refused a read or write (a :class:`PersistError`: the SCP answers
    0xA700 rather than acknowledging what it cannot journal)."""


class StartupError(NodeError):
    """The node cannot start; the message names the setting and the fix."""
