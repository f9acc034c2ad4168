"""The one entry point: ``cxr-gateway SUBCOMMAND ...``.

Each area registers its own subcommands (``register(subparsers)`` in its
``cli`` module), so the parts stay apart and this file only wires them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cxr_gateway import __version__, log_privacy

# Modules with a ``register(subparsers)`` function; each adds its subcommands.
COMMAND_MODULES = (
    "training.cli",  # train, evaluate, export
    "inference.cli",  # predict
    "cxr_gateway.serve",  # serve, status (the whole process assembled)
    "dicom_node.cli",  # check-config, echo
    "delivery.cli",  # retry
    "storage.cli",  # db upgrade, db version
)

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cxr-gateway {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command as given, recorded in model cards
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log_privacy.install()  # no patient data from third-party loggers and tracebacks either
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
