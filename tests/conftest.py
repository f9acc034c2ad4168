"""Shared fixtures: paths to the project and to the optional real data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_cluster import Cluster, why_unavailable

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
MODELS_DIR = PROJECT_ROOT / "models"
PG_TEMPLATE = "cxr_template"  # a database with this release's schema, copied for each test


def require_shared_data(sub: str) -> Path:
    """Path to ``../shared/data/<sub>``, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not present: {path} (only on machines with ../shared/data)")
    return path


def require_shipped_models() -> Path:
    """The shipped ``models/`` folder with both classifiers, or skip with the reason."""
    from inference.registry import missing_models

    reason = missing_models(MODELS_DIR)
    if reason is not None:
        pytest.skip(f"shipped models not usable: {reason}")
    return MODELS_DIR


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A throw-away PostgreSQL cluster for the session (tests/postgres_cluster.py), or skip."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = Cluster().start()
    try:
        from storage.database import Database

        cluster.sql(f"CREATE DATABASE {PG_TEMPLATE}")
        Database(cluster.url(PG_TEMPLATE), upgrade=True).close()  # this release's schema
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """``storage.database`` of both kinds: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "db" / "journal.sqlite"
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.new_database(template=PG_TEMPLATE)
