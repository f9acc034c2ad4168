"""Delivery subcommand: ``cxr-gateway retry [ID ...] [--all-dead]`` re-queues dead letters;
``cxr-gateway retry --reports [STUDY_UID ...]`` builds report-failed studies' reports again.

Works next to a running ``serve`` (the outbox is a table of the journal
database, SQLite or PostgreSQL; its lanes pick the rows up at their next poll).
Exit codes: 0 done, 1 some given IDs were not dead letters, 2 configuration.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from pathlib import Path

from config import DEFAULT_CONFIG, ConfigError, load_settings
from delivery.outbox import OutboxError
from delivery.report import requeue_all, requeue_rows
from delivery.views import RetryOutcome
from storage.errors import JournalError
from storage.journal import Journal

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retry = subparsers.add_parser("retry", help="re-queue dead-lettered results for delivery")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID",
                       help="outbox row IDs (as shown by cxr-gateway status)")
    retry.add_argument("--all-dead", action="store_true", help="every dead-lettered row")
    retry.add_argument("--reports", nargs="*", metavar="STUDY_UID", default=None,
                       help="build again the reports of report-failed studies (all, or those "
                            "given), as shown by cxr-gateway status")
    retry.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                       help=f"YAML settings file (default {DEFAULT_CONFIG})")
    retry.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any setting, e.g. --set storage.database=/data/j.sqlite")
    retry.set_defaults(func=cmd_retry)


def cmd_retry(args: argparse.Namespace) -> int:
    if args.reports is not None:
        return _retry_reports(args)
    if bool(args.ids) == bool(args.all_dead):
        print("retry: give outbox row IDs or --all-dead (one of them)", file=sys.stderr)
        return EXIT_CONFIG
    target = _journal_target(args)
    if isinstance(target, int):
        return target
    database, password = target
    try:
        if args.all_dead:
            print(f"re-queued {requeue_all(database, password)} dead letter(s)")
            return EXIT_OK
        outcomes = requeue_rows(database, list(args.ids), password)
    except OutboxError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    for row_id, outcome in outcomes.items():
        print(f"#{row_id}: {outcome.value}")
    failed = any(o is not RetryOutcome.REQUEUED for o in outcomes.values())
    return EXIT_FAILED if failed else EXIT_OK


def _journal_target(args: argparse.Namespace) -> tuple[Path | str, str | None] | int:
    """The journal database and its password from ``--config``/``--set``, or an exit code
    (after saying why) when the settings are bad or an SQLite journal does not exist yet."""
    try:
        settings = load_settings(args.config, overrides=args.set)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    database, password = settings.database_target(), settings.database_password()
    if isinstance(database, Path) and not database.is_file():
        print(f"no journal at {database} (storage.database): nothing to retry", file=sys.stderr)
        return EXIT_CONFIG
    return database, password


def _retry_reports(args: argparse.Namespace) -> int:
    """``retry --reports``: report-failed studies become due again (the running aggregator
    builds them at its next poll, with ``results.max_attempts`` fresh attempts)."""
    target = _journal_target(args)
    if isinstance(target, int):
        return target
    database, password = target
    try:
        with closing(Journal(database, password=password)) as journal:
            count = journal.retry_reports(list(args.reports) or None)
    except JournalError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    print(f"re-queued the report of {count} study(ies)")
    return EXIT_OK if count or not args.reports else EXIT_FAILED
