"""``cxr-gateway serve`` and ``cxr-gateway status``: the whole process assembled.

The node (SCP, workers, aggregation), the results outbox and dispatcher, and the
web console are started here, in the package that owns the entry point, so
that ``dicom_node``, ``delivery`` and ``web`` never import each other to be
wired together (issue 22; tests/test_layering.py keeps it so).

Exit codes: 0 success, 1 the operation failed, 2 the configuration or the
environment is unusable.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from config import ConfigError, Settings
from delivery.outbox import OutboxError
from delivery.report import outbox_report
from delivery.service import Delivery, start_delivery
from dicom_node.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, config_args, settings_from_args
from dicom_node.errors import JournalError, StartupError
from dicom_node.journal import Journal
from dicom_node.preflight import check_environment
from dicom_node.service import Gateway, start_gateway
from storage.nodes import Heartbeat, NodeStatus, nodes
from web.server import WebServer, WebStartError, start_web

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser("serve", help="run the DICOM node (SCP, workers)")
    config_args(serve)
    serve.add_argument("--port", type=int, help="dicom.port")
    serve.add_argument("--ae-title", help="dicom.ae_title")
    serve.add_argument("--bind", help="dicom.bind_address")
    serve.add_argument("--workers", type=int, help="inference.workers")
    serve.set_defaults(func=cmd_serve)

    status = subparsers.add_parser("status", help="queue counts and recent results")
    config_args(status)
    status.add_argument("--limit", type=int, default=10, help="recent instances to show")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)


def cmd_serve(args: argparse.Namespace) -> int:
    if not getattr(args, "verbose", False):  # one line per instance from us is enough
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        settings = settings_from_args(args)
    except ConfigError as err:
        log.error("%s", err)
        return EXIT_CONFIG
    errors, warnings = check_environment(settings)
    for warning in warnings:
        log.warning("%s", warning)
    if errors:
        log.error("cannot start:\n  %s", "\n  ".join(errors))
        return EXIT_CONFIG
    stop = threading.Event()
    _on_signals(stop)
    delivery = _start_delivery(settings)  # results outbox and dispatcher (issue 4)
    if delivery is None:
        return EXIT_CONFIG
    try:
        gateway = start_gateway(settings, sink=delivery.sink)
    except StartupError as err:
        log.error("cannot start: %s", err)
        delivery.stop()
        return EXIT_CONFIG
    web = _start_web(settings, gateway, delivery)  # web console and REST API (issue 5, see web/server.py)
    if web is None:
        gateway.stop()
        delivery.stop()
        return EXIT_CONFIG
    heartbeat = Heartbeat(gateway.journal, settings.node_name(), settings.storage.lease_s,
                          threading.Event())
    heartbeat.start()  # renews this node's leases; `cxr-gateway status` lists the node
    stop.wait()
    heartbeat.stop.set()
    web.stop()
    gateway.stop()
    delivery.stop()
    return EXIT_OK


def _start_delivery(settings: Settings) -> Delivery | None:
    """Outbox, result sink and dispatcher; ``None`` (logged) when unusable."""
    try:
        return start_delivery(settings)
    except OutboxError as err:
        log.error("cannot start: %s", err)
        return None


def _start_web(settings: Settings, gateway: Gateway, delivery: Delivery) -> WebServer | None:
    """The web app next to the SCP; ``None`` (logged) when it cannot listen."""
    try:
        engine = gateway.pipeline.predictor if gateway.pipeline is not None else None
        return start_web(settings, gateway.journal, engine, delivery.outbox,
                         gateway.server.admission.refusals)
    except WebStartError as err:
        log.error("cannot start: %s", err)
        return None


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    db_path, password = settings.database_target(), settings.database_password()
    if isinstance(db_path, Path) and not db_path.is_file():
        print(f"no journal at {db_path} yet (storage.database): nothing received")
        return EXIT_OK
    try:
        journal = Journal(db_path, password=password)
    except JournalError as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    try:
        counts = {str(k): v for k, v in journal.counts().items()}
        recent = journal.recent(args.limit)
        report_failures = journal.report_failures(args.limit)
        node_rows = nodes(journal)
    finally:
        journal.close()
    outbox = outbox_report(db_path, args.limit, password)  # deliveries and dead letters (issue 4)
    if args.json:
        rows = [{"sop_instance_uid": r.sop_instance_uid, "study_uid": r.study_uid,
                 "state": str(r.state), "reason": r.reason, "result": r.result_json and
                 json.loads(r.result_json)} for r in recent]
        failed = [asdict(f) for f in report_failures]
        print(json.dumps({"counts": counts, "recent": rows, "outbox": outbox.as_json(),
                          "report_failures": failed,
                          "nodes": [asdict(n) for n in node_rows]}, indent=2))
        return EXIT_OK
    print("queue: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for line in _node_lines(node_rows, settings.storage.lease_s):
        print(line)
    for r in recent:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.received_at))
        result = json.loads(r.result_json) if r.result_json else None
        detail = (f"{result['finding']} TB {result['tb_vs_normal']['score']:.3f}" if result
                  else r.reason or "")
        print(f"  {when}  {r.state:<11} {r.sop_instance_uid}  {detail}")
    print("\n".join(outbox.lines()))
    if report_failures:
        print("reports failed (try again with: cxr-gateway retry --reports [STUDY_UID ...]):")
    for f in report_failures:
        print(f"  study {f.study_uid} revision {f.revision}  {f.attempts} attempt(s)  {f.reason}")
    return EXIT_OK


def _node_lines(rows: list[NodeStatus], lease_s: float, now: float | None = None) -> list[str]:
    """One line per node: name, last heartbeat (and whether its leases ran out), what it holds."""
    now = time.time() if now is None else now
    lines = ["nodes:"] if rows else []
    for n in rows:
        age = now - n.heartbeat_at
        state = "alive" if age <= lease_s else "silent: its work is taken over"
        lines.append(f"  {n.name:<24} last heartbeat {age:.0f} s ago ({state})  jobs {n.jobs},"
                     f" reports {n.reports}, deliveries {n.deliveries}")
    return lines
