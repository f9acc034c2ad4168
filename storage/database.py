"""One database, SQLite or PostgreSQL, behind SQLAlchemy Core (issue 22).

``storage.database`` is either a SQLite file (the embedded default) or a
PostgreSQL URL (``postgresql://user@host:5432/db``); the same statements run
on both. SQLite keeps the behaviour of earlier releases: WAL and
``synchronous=FULL`` (a committed row survives power loss), one connection
behind one lock, write transactions that take the write lock at ``BEGIN
IMMEDIATE``. PostgreSQL goes through psycopg 3 with a connection pool; the
password comes from an environment variable or a file, never from the URL,
and never reaches a log or an error message (:func:`redacted`).

Statements are written with ``?`` placeholders in the subset of SQL both
engines speak (``ON CONFLICT``, ``RETURNING``, ``CASE``); :func:`bind` turns
them into SQLAlchemy bound parameters. Every driver error becomes the
owner's exception naming the database (never the statement's values).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from storage.errors import StorageError

POSTGRES_PREFIXES: Final = ("postgresql://", "postgresql+psycopg://", "postgres://")
SQLITE_TIMEOUT_S: Final = 10.0
POOL_SIZE: Final = 8
POOL_TIMEOUT_S: Final = 10.0
CONNECT_TIMEOUT_S: Final = 5
READ_ONLY: Final = "cxr_read_only"  # execution option: a SQLite read takes no write lock
DEFAULT_LEASE_S: Final = 60.0


def default_node_name() -> str:
    """A node's name when none is set: host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def claimable(alias: str = "") -> str:
    """SQL condition on a leased row (job, study, outbox row): free, held by this node, or its
    holder's lease ran out. Takes two values: this node's name and the time now."""
    col = f"{alias}." if alias else ""
    return f"({col}claimed_by IS NULL OR {col}claimed_by = ? OR {col}lease_until < ?)"


def is_postgres(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(POSTGRES_PREFIXES)


def postgres_url(target: str, password: str | None = None) -> URL:
    """The SQLAlchemy URL of a PostgreSQL target (psycopg 3 driver), with ``password`` set."""
    url = make_url(target)
    if url.password is not None:
        raise StorageError("storage.database: put no password in the URL; give it in the file "
                           "storage.password_file or the variable named by storage.password_env")
    url = url.set(drivername="postgresql+psycopg")
    return url if password is None else url.set(password=password)


def redacted(target: str | Path) -> str:
    """The database as it may appear in a log: a path, or a URL without its password."""
    if is_postgres(target):
        return make_url(str(target)).set(password=None).render_as_string(hide_password=True)
    return str(target)


def stored_path(path: Path, root: Path | None) -> str:
    """How a shared-folder path is recorded: relative to ``root`` when under it, so every node
    that mounts the folder elsewhere finds it (issue 22)."""
    if root is not None and path.is_relative_to(root):
        return str(path.relative_to(root))
    return str(path)


def local_path(stored: object, root: Path | None) -> Path:
    """A recorded path on this node: relative ones joined to ``root``."""
    path = Path(str(stored))
    return path if path.is_absolute() or root is None else root / path


def bind(sql: str, args: Sequence[object]) -> tuple[Any, dict[str, object]]:
    """``?`` placeholders -> named bound parameters; enums by value, paths as text."""
    parts = sql.split("?")
    if len(parts) - 1 != len(args):
        raise StorageError(f"{len(parts) - 1} placeholders for {len(args)} values")
    named = parts[0] + "".join(f":p{i}{part}" for i, part in enumerate(parts[1:]))
    return text(named), {f"p{i}": _value(v) for i, v in enumerate(args)}


def _value(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


class Tx:
    """One open transaction: ``execute(sql, args)`` with ``?`` placeholders."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        statement, params = bind(sql, args)
        return self.conn.execute(statement, params)


def _sqlite_engine(path: Path) -> Engine:
    """One shared connection (callers serialise on a lock), WAL, FULL sync, BEGIN IMMEDIATE."""
    engine = create_engine(f"sqlite:///{path}", poolclass=StaticPool,
                           connect_args={"check_same_thread": False, "timeout": SQLITE_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN, not the driver
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=FULL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: URL) -> Engine:
    return create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE,
                         pool_timeout=POOL_TIMEOUT_S, pool_pre_ping=True,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


D = TypeVar("D", bound="Database")


class Database:
    """The connection(s) of one owner (journal, outbox); thread-safe.

    ``label`` and ``error``: what the owner calls itself in error messages and the
    exception it raises. ``path`` is the SQLite file or the redacted URL.
    ``node``: this node's name in the rows it claims (default: host and process
    id); a claim not renewed for ``lease_s`` is taken over by another node (issue 22).
    """

    label = "database"
    error: type[Exception] = StorageError

    def __init__(self, target: str | Path, password: str | None = None,
                 upgrade: bool | None = None, *, node: str | None = None,
                 lease_s: float = DEFAULT_LEASE_S) -> None:
        from storage.migrations import ensure_schema

        self.path: Path | str = target if isinstance(target, Path) else redacted(target)
        self._target, self._password = target, password
        self.node = node or default_node_name()
        self.lease_s = lease_s
        self._lock = threading.RLock()
        self._local = threading.local()
        try:
            if is_postgres(target):
                self.engine = _postgres_engine(postgres_url(str(target), password))
            else:
                path = Path(target)
                path.parent.mkdir(parents=True, exist_ok=True)
                self.engine = _sqlite_engine(path)
            ensure_schema(self, upgrade=not is_postgres(target) if upgrade is None else upgrade)
        except (OSError, SQLAlchemyError) as err:
            raise self.error(f"{self.label} {self.path}: cannot open ({_reason(err)});"
                             " check storage.database") from err
        except StorageError as err:
            raise self.error(f"{self.label} {self.path}: {err}") from err

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def shared(self) -> bool:
        """Several nodes may use this database at once (PostgreSQL)."""
        return self.dialect == "postgresql"

    def open_sibling(self, kind: type[D]) -> D:
        """Another owner (e.g. the outbox of this journal) on the same database, as the same node."""
        return kind(self._target, password=self._password, node=self.node, lease_s=self.lease_s)

    def same_database(self, other: Database) -> bool:
        """Both objects use one database (the same SQLite file or PostgreSQL URL)."""
        mine, theirs = self.path, other.path
        if isinstance(mine, Path) and isinstance(theirs, Path):
            return mine.resolve() == theirs.resolve()
        return mine == theirs

    def close(self) -> None:
        with self._lock:
            self.engine.dispose()

    @contextmanager
    def _serial(self) -> Iterator[None]:
        """SQLite's one connection is used by one thread at a time; PostgreSQL pools."""
        if self.shared:
            yield
        else:
            with self._lock:
                yield

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One write transaction (nested calls join it); driver errors become the owner's error."""
        active: Tx | None = getattr(self._local, "tx", None)
        if active is not None:
            yield active
            return
        with self._serial():
            try:
                with self.engine.begin() as conn:
                    self._local.tx = Tx(conn)
                    try:
                        yield self._local.tx
                    finally:
                        self._local.tx = None
            except SQLAlchemyError as err:
                raise self.error(f"{self.label} {self.path}: {_reason(err)}") from err

    def query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only statement (inside the caller's transaction if one is open)."""
        active: Tx | None = getattr(self._local, "tx", None)
        try:
            if active is not None:
                return [tuple(r) for r in active.execute(sql, args)]
            with self._serial(), self.engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                statement, params = bind(sql, args)
                rows = [tuple(r) for r in conn.execute(statement, params)]
                conn.rollback()
                return rows
        except SQLAlchemyError as err:
            raise self.error(f"{self.label} {self.path}: {_reason(err)}") from err


def _reason(err: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's, which quotes the statement and its values)."""
    orig = getattr(err, "orig", None)
    lines = str(err if orig is None else orig).strip().splitlines()
    return lines[0] if lines else type(err).__name__
