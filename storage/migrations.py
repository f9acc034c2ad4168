"""Numbered schema migrations, the same for SQLite and PostgreSQL (issue 22).

The database records its version in ``schema_version``. Migration *n* moves
it from *n-1* to *n* in one transaction. A database written before versions
were recorded (the journals and outboxes of earlier releases, which added
columns at open time) reads as version 0: every step below only adds what is
absent, so such a journal opens and keeps its rows.

``cxr-gateway db upgrade`` applies the missing steps; a SQLite journal is
upgraded when it is opened (``bin/serve`` needs nothing else), a PostgreSQL
database only by ``db upgrade`` (several nodes share it: an operator decides
when its schema changes). A database at another version than this release's
is refused with both versions named (:class:`SchemaVersionError`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sqlalchemy import (
    Column,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.schema import CreateIndex

from storage.errors import SchemaVersionError

if TYPE_CHECKING:
    from storage.database import Database, Tx

log = logging.getLogger(__name__)

FIRST = MetaData()
"""The tables of the first release (migration 1)."""

Table("instances", FIRST,
      Column("id", Integer, primary_key=True),
      Column("sop_instance_uid", Text, nullable=False, unique=True),
      Column("sop_class_uid", Text, nullable=False),
      Column("study_uid", Text, nullable=False),
      Column("series_uid", Text, nullable=False),
      Column("calling_ae", Text, nullable=False),
      Column("path", Text, nullable=False),
      Column("received_at", Double, nullable=False),
      Column("state", Text, nullable=False),
      Column("reason", Text),
      Column("tb_score", Double),
      Column("finding", Text),
      Column("result_json", Text),
      Column("heatmap_path", Text),
      Column("updated_at", Double, nullable=False),
      Index("instances_study", "study_uid"),
      Index("instances_state", "state"))
Table("jobs", FIRST,
      Column("id", Integer, primary_key=True),
      Column("instance_id", Integer, ForeignKey("instances.id"), nullable=False, unique=True),
      Column("state", Text, nullable=False),
      Column("attempts", Integer, nullable=False, server_default="0"),
      Column("worker", Text),
      Column("claimed_at", Double),
      Column("last_error", Text),
      Index("jobs_state", "state", "id"))
Table("studies", FIRST,
      Column("study_uid", Text, primary_key=True),
      Column("last_received", Double, nullable=False),
      Column("revision", Integer, nullable=False),
      Column("reported_revision", Integer, nullable=False, server_default="0"),
      Column("reported_at", Double))
Table("outbox", FIRST,
      Column("id", Integer, primary_key=True),
      Column("study_uid", Text, nullable=False),
      Column("revision", Integer, nullable=False),
      Column("kind", Text, nullable=False),
      Column("object_uid", Text, nullable=False),
      Column("channel", Text, nullable=False),
      Column("destination", Text, nullable=False),
      Column("payload", Text, nullable=False),
      Column("state", Text, nullable=False),
      Column("attempts", Integer, nullable=False, server_default="0"),
      Column("next_attempt_at", Double, nullable=False),
      Column("last_error", Text),
      Column("created_at", Double, nullable=False),
      Column("updated_at", Double, nullable=False),
      UniqueConstraint("channel", "destination", "object_uid"),
      Index("outbox_due", "state", "next_attempt_at"),
      Index("outbox_lane", "channel", "destination", "state", "study_uid", "id"))
Table("schema_version", FIRST, Column("version", Integer, nullable=False))


def _first(tx: Tx) -> None:
    """Migration 1: the first release's tables and indexes, where absent."""
    FIRST.create_all(tx.conn, checkfirst=True)
    for table in FIRST.tables.values():  # a pre-versioning journal may lack an index
        present = {i["name"] for i in inspect(tx.conn).get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in present:
                tx.conn.execute(CreateIndex(index))


def _columns(table: str, columns: tuple[Column[object], ...]) -> Callable[[Tx], None]:
    """A migration adding ``columns`` to ``table`` where absent (older journals added some)."""
    def migrate(tx: Tx) -> None:
        present = {c["name"] for c in inspect(tx.conn).get_columns(table)}
        for column in columns:
            if column.name in present:
                continue
            declared = column.type.compile(dialect=tx.conn.dialect)
            default = f" DEFAULT {column.server_default.arg}" if column.server_default else ""  # type: ignore[attr-defined]
            null = " NOT NULL" if not column.nullable else ""
            tx.conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column.name} {declared}"
                                    f"{null}{default}")
    return migrate


NODES = MetaData()
Table("nodes", NODES,
      Column("name", Text, primary_key=True),
      Column("host", Text, nullable=False),
      Column("pid", Integer, nullable=False),
      Column("started_at", Double, nullable=False),
      Column("heartbeat_at", Double, nullable=False))


def _leases(tx: Tx) -> None:
    """Migration 5: who holds a job, a study report or a delivery, until when; the nodes."""
    for table in ("jobs", "studies", "outbox"):
        _columns(table, (Column("claimed_by", Text), Column("lease_until", Double)))(tx)
    NODES.create_all(tx.conn, checkfirst=True)


MIGRATIONS: Final[tuple[tuple[str, Callable[[Tx], None]], ...]] = (
    ("the first release's tables", _first),
    ("re-send columns of instances (issue 20 defect 8)", _columns("instances", (
        Column("sha256", Text),
        Column("replaced", Integer, nullable=False, server_default="0")))),
    ("report attempts of studies (issue 20 defect 1)", _columns("studies", (
        Column("report_attempts", Integer, nullable=False, server_default="0"),
        Column("report_attempt_revision", Integer, nullable=False, server_default="0"),
        Column("report_error", Text),
        Column("report_retry_at", Double),
        Column("report_failed_revision", Integer, nullable=False, server_default="0")))),
    ("retry window of outbox rows (issue 20 defect 9)", _columns("outbox", (
        Column("failing_since", Double),))),
    ("leases of jobs, studies and deliveries; nodes (issue 22)", _leases),
)
"""(what it does, how) for versions 1, 2, ...; append only, never edit a released step."""

LATEST: Final = len(MIGRATIONS)


def apply_migrations(db: Database) -> list[int]:
    """Apply the missing migrations, each in its own transaction; returns the versions applied."""
    applied: list[int] = []
    while True:
        with db.transaction() as tx:
            if tx.dialect == "postgresql":  # one upgrading node at a time
                tx.conn.exec_driver_sql("SELECT pg_advisory_xact_lock(2202)")
            version = _version(tx.conn)
            if version >= LATEST:
                return applied
            what, step = MIGRATIONS[version]
            step(tx)
            tx.execute("DELETE FROM schema_version")
            tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version + 1,))
        log.info("database %s: schema version %d (%s)", db.path, version + 1, what)
        applied.append(version + 1)


def _version(conn: Connection) -> int:
    """The version recorded in ``schema_version`` (0 when the table is absent or empty)."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar() or 0)


def ensure_schema(db: Database, upgrade: bool) -> None:
    """Upgrade (``upgrade``) or check the schema; refuse another release's version by name."""
    version = schema_version(db)
    if version > LATEST:
        raise SchemaVersionError(
            f"schema version {version} is newer than this release's ({LATEST}): "
            "run the release that upgraded it, or a newer one", version, LATEST)
    if version < LATEST and upgrade:
        apply_migrations(db)
    elif version < LATEST:
        raise SchemaVersionError(
            f"schema version {version}, this release needs {LATEST}: "
            "run `cxr-gateway db upgrade` once (with the nodes of the older release stopped)",
            version, LATEST)


def schema_version(db: Database) -> int:
    """The version the database records (0: none recorded, empty or written before versions)."""
    from storage.database import READ_ONLY

    with db.engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        return _version(conn)
