"""The storage layer (issue 22): two engines, numbered migrations, schema checks, claims.

SQLite and PostgreSQL both (the ``database`` fixture of tests/conftest.py starts
a throw-away PostgreSQL cluster); the old-journal migrations are SQLite files as
earlier releases wrote them.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from config import load_settings
from cxr_gateway.cli import main
from dicom_node.errors import JournalError, PersistError
from dicom_node.journal import InstanceState, Journal, NewInstance
from storage.database import Database, redacted
from storage.errors import StorageError
from storage.migrations import LATEST, schema_version
from tests.postgres_cluster import Cluster

FIRST_RELEASE = """
CREATE TABLE instances (id INTEGER PRIMARY KEY, sop_instance_uid TEXT NOT NULL UNIQUE,
  sop_class_uid TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL,
  calling_ae TEXT NOT NULL, path TEXT NOT NULL, received_at REAL NOT NULL, state TEXT NOT NULL,
  reason TEXT, tb_score REAL, finding TEXT, result_json TEXT, heatmap_path TEXT,
  updated_at REAL NOT NULL);
CREATE INDEX instances_study ON instances (study_uid);
CREATE TABLE jobs (id INTEGER PRIMARY KEY, instance_id INTEGER NOT NULL UNIQUE REFERENCES instances (id),
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, claimed_at REAL,
  last_error TEXT);
CREATE TABLE studies (study_uid TEXT PRIMARY KEY, last_received REAL NOT NULL,
  revision INTEGER NOT NULL, reported_revision INTEGER NOT NULL DEFAULT 0, reported_at REAL);
INSERT INTO instances VALUES (1, '1.1', '1.2.840.10008.5.1.4.1.1.1', '1.2.3', '1.2.3.1', 'PACS',
  '/spool/a.dcm', 100.0, 'queued', NULL, NULL, NULL, NULL, NULL, 100.0);
INSERT INTO jobs (id, instance_id, state) VALUES (1, 1, 'queued');
INSERT INTO studies VALUES ('1.2.3', 100.0, 1, 0, NULL);
"""
"""A journal as the first release wrote it: no version table, none of the later columns."""


def _new(sop: str) -> NewInstance:
    return NewInstance(sop, "1.2.840.10008.5.1.4.1.1.1", "1.2.3", "1.2.3.1", "PACS", Path(f"/{sop}.dcm"))


def test_first_release_journal_opens_migrated_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_RELEASE)
    journal = Journal(path)  # SQLite: upgraded on open, so bin/serve needs nothing else
    assert schema_version(journal) == LATEST
    job = journal.claim_job("w1")
    assert job is not None and job.sop_instance_uid == "1.1"
    assert journal.admit_instance(_new("1.1")).outcome.value == "replaced"  # sha256/replaced exist
    assert journal.report_failures() == []  # the report columns exist
    journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    assert "failing_since" in columns


def test_sqlite_keeps_wal_and_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    with journal.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    journal.close()


def test_newer_schema_is_refused_naming_both_versions(database: Path | str) -> None:
    Journal(database).close()
    db = Database(database)
    with db.transaction() as tx:
        tx.execute("UPDATE schema_version SET version = ?", (LATEST + 1,))
    db.close()
    with pytest.raises(JournalError) as refused:
        Journal(database)
    assert f"schema version {LATEST + 1} is newer than this release's ({LATEST})" in str(refused.value)
    assert isinstance(refused.value, PersistError)  # the node answers 0xA700, never Success


def test_postgres_needs_db_upgrade_then_opens(postgres: Cluster, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres.new_database()  # empty: no schema yet
    with pytest.raises(JournalError, match="run `cxr-gateway db upgrade`"):
        Journal(url)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"dicom:\n  accept_any_caller: true\nstorage:\n  database: {url}\n")
    assert main(["check-config", "--config", str(config)]) == 2
    assert f"schema version 0, this release needs {LATEST}" in capsys.readouterr().out
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert f"upgraded to schema version {LATEST}" in capsys.readouterr().out
    journal = Journal(url)
    assert journal.add_instance(_new("1.1")) and journal.counts()[InstanceState.QUEUED] == 1
    journal.close()
    assert main(["db", "version", "--config", str(config)]) == 0
    assert f"schema version {LATEST} (this release: {LATEST})" in capsys.readouterr().out


def test_concurrent_claims_never_take_the_same_job(database: Path | str) -> None:
    """Four workers (PostgreSQL: four pooled connections, FOR UPDATE SKIP LOCKED) share 60 jobs."""
    journal = Journal(database)
    for n in range(60):
        journal.add_instance(_new(f"1.{n}"))
    taken: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        while (job := journal.claim_job(name)) is not None:
            with lock:
                taken.append(job.sop_instance_uid)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    assert sorted(taken) == sorted(f"1.{n}" for n in range(60))


def test_password_never_in_the_url_nor_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("s3cret-Pa55\n")
    config = tmp_path / "gateway.yaml"
    config.write_text("dicom:\n  accept_any_caller: true\nstorage:\n"
                      "  database: postgresql://gw@127.0.0.1:1/cxr\n"
                      f"  password_file: {secret}\n")
    settings = load_settings(config)
    assert settings.database_password() == "s3cret-Pa55"
    monkeypatch.setenv("CXR_GATEWAY_DB_PASSWORD", "from-env")
    without_file = settings.model_copy(update={"storage": settings.storage.model_copy(
        update={"password_file": None})})
    assert without_file.database_password() == "from-env"
    with pytest.raises(StorageError) as refused:  # nothing listens on port 1
        Database(settings.database_target(), password="s3cret-Pa55")
    assert "s3cret" not in str(refused.value) and "gw@127.0.0.1:1/cxr" in str(refused.value)
    assert "s3cret" not in redacted("postgresql://gw@127.0.0.1:1/cxr")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  accept_any_caller: true\nstorage:\n"
                   "  database: postgresql://gw:s3cret@db/cxr\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    said = capsys.readouterr()
    assert "put no password in the URL" in said.out and "s3cret" not in said.out + said.err
