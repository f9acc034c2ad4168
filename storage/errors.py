"""The storage layer's own exception (owners raise their subclasses' kin, see Database.error)."""

from __future__ import annotations


class StorageError(RuntimeError):
    """The database cannot be opened, is at another schema version, or refused a statement."""


class SchemaVersionError(StorageError):
    """The database's schema is not the one this release uses (names both versions)."""

    def __init__(self, message: str, found: int, expected: int) -> None:
        super().__init__(message)
        self.found, self.expected = found, expected


class JournalError(StorageError):
    """The journal (instances, jobs, studies) refused a read or write; names the database."""


class OutboxError(StorageError):
    """The outbox cannot be opened or written; names the database."""
