"""``cxr-gateway db upgrade`` and ``cxr-gateway db version``: the database's schema.

A SQLite journal is upgraded when a node opens it; a PostgreSQL database shared
by several nodes is upgraded only here, once, by an operator (issue 22).
Exit codes: 0 done, 2 the configuration or the database is unusable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config import DEFAULT_CONFIG, ConfigError, load_settings
from storage.database import Database
from storage.errors import SchemaVersionError, StorageError
from storage.migrations import LATEST, schema_version

EXIT_OK, EXIT_CONFIG = 0, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser("db", help="database schema: upgrade, version")
    db.add_argument("action", choices=("upgrade", "version"),
                    help="upgrade: apply this release's migrations; version: show the schema version")
    db.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                    help=f"YAML settings file (default {DEFAULT_CONFIG})")
    db.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any setting, e.g. --set storage.database=postgresql://gw@db/cxr")
    db.set_defaults(func=cmd_db)


def cmd_db(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, overrides=args.set)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    target, password = settings.database_target(), settings.database_password()
    try:
        database = Database(target, password=password, upgrade=False)
    except StorageError as err:
        if args.action == "version" or not _upgradable(err):
            print(err, file=sys.stderr)
            return EXIT_CONFIG
        return _upgrade(target, password)
    try:  # opened without upgrading: already at this release's version
        version = schema_version(database)
    finally:
        database.close()
    print(f"{database.path}: schema version {version} (this release: {LATEST})")
    return EXIT_OK


def _upgrade(target: str | Path, password: str | None) -> int:
    """Open with ``upgrade``: the missing migrations run (:func:`storage.migrations.ensure_schema`)."""
    try:
        database = Database(target, password=password, upgrade=True)
    except StorageError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    database.close()
    print(f"{database.path}: upgraded to schema version {LATEST}")
    return EXIT_OK


def _upgradable(err: StorageError) -> bool:
    cause = err.__cause__
    return isinstance(cause, SchemaVersionError) and cause.found < cause.expected
