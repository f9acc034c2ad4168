"""One SQLite database connection shared by the journal and the outbox.

WAL and ``synchronous=FULL`` (a committed row survives power loss), one
connection behind one lock (thread-safe), immediate write transactions, and
every SQLite error turned into the owner's own exception naming the file.
Only the journal and the outbox run SQL; PostgreSQL could replace both here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteDatabase:
    """Base of :class:`dicom_node.journal.Journal` and :class:`delivery.outbox.Outbox`."""

    #: What the owner calls itself in error messages, and the exception it raises.
    label = "database"
    error: type[Exception] = RuntimeError

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(schema)
        except (OSError, sqlite3.Error) as err:
            raise self.error(
                f"{self.label} {path}: cannot open ({err}); check storage.database") from err

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction; any SQLite error becomes the owner's error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise self.error(f"{self.label} {self.path}: {err}") from err
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Rows of one read-only statement, under the lock; SQLite errors become the owner's error."""
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as err:
                raise self.error(f"{self.label} {self.path}: {err}") from err
