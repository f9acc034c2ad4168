"""Subcommands of the DICOM node: ``check-config`` and ``echo``.

``serve`` and ``status`` assemble every part (node, workers, delivery, web) and
live in :mod:`cxr_gateway.serve`, the package that owns the entry point, so that
no package imports the one that assembles it (issue 22).

Exit codes: 0 success, 1 the operation failed (peer did not answer), 2 the
configuration or the environment is unusable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from config import DEFAULT_CONFIG, ConfigError, Settings, load_settings
from dicom_node.echo import EchoError, Peer, send_echo
from dicom_node.errors import NodeError
from dicom_node.preflight import check_environment

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
_FLAG_KEYS = {"port": "dicom.port", "ae_title": "dicom.ae_title", "bind": "dicom.bind_address",
              "workers": "inference.workers"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = subparsers.add_parser("check-config", help="explain every bad setting")
    config_args(check)
    check.set_defaults(func=cmd_check_config)

    echo = subparsers.add_parser("echo", help="C-ECHO a configured DICOM destination or a peer")
    config_args(echo)
    echo.add_argument("name", nargs="?", help="destinations.dicom[].name")
    echo.add_argument("--host", help="peer host (instead of NAME)")
    echo.add_argument("--port", type=int, help="peer port (instead of NAME)")
    echo.add_argument("--aet", help="peer AE title (instead of NAME)")
    echo.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    echo.set_defaults(func=cmd_echo)


def config_args(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set``, shared by every subcommand that reads the settings."""
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"YAML settings file (default {DEFAULT_CONFIG})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. --set dicom.port=11113 (repeatable)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings file with the subcommand's flags (``_FLAG_KEYS``) and ``--set`` applied."""
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in _FLAG_KEYS.items()
                 if getattr(args, flag, None) is not None]
    return load_settings(args.config, overrides=[*overrides, *args.set])


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as err:
        print(f"{args.config}: {len(err.problems)} problem(s)")
        for problem in err.problems:
            print(f"  ERROR {problem}")
        return EXIT_CONFIG
    errors, warnings = check_environment(settings)
    for warning in warnings:
        print(f"  WARNING {warning}")
    for error in errors:
        print(f"  ERROR {error}")
    if errors:
        return EXIT_CONFIG
    print(f"{args.config}: OK ({settings.dicom.ae_title} on "
          f"{settings.dicom.bind_address}:{settings.dicom.port})")
    return EXIT_OK


def cmd_echo(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        peer = _peer(args, settings)
    except (ConfigError, NodeError) as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    try:
        send_echo(settings.dicom.ae_title, peer, args.timeout)
    except EchoError as err:
        print(f"C-ECHO failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"C-ECHO {peer.ae_title}@{peer.host}:{peer.port}: success")
    return EXIT_OK


def _peer(args: argparse.Namespace, settings: Settings) -> Peer:
    if args.name:
        dest = settings.dicom_destination(args.name)
        if dest is None:
            known = ", ".join(d.name for d in settings.destinations.dicom) or "none configured"
            raise NodeError(f"echo: no destinations.dicom entry named {args.name!r} ({known})")
        return Peer(dest.ae_title, dest.host, dest.port)
    if args.host and args.port and args.aet:
        return Peer(args.aet, args.host, args.port)
    raise NodeError("echo: give a destination NAME, or --host, --port and --aet")
