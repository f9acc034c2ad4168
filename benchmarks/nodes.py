"""Throughput and result latency of 1 SQLite node, 1 PostgreSQL node and 2 PostgreSQL nodes.

Not a test: run ``.venv/bin/python benchmarks/nodes.py [--studies 30] [--workers 1]``.

Each set-up runs in the same process, one after the other, against the same
peers' code: Orthanc as the PACS, an MLLP listener as the RIS, ``cxr-gateway
serve`` with the shipped models (1 worker per node by default), a shared spool
and results folder; PostgreSQL is a throw-away cluster started here
(tests/postgres_cluster.py, ``fsync=off`` like a tuned test server, so the
numbers compare the storage code, not the disk). Two senders send the same
workload (``--studies`` studies of 3 chest CRs, 256 x 256) round-robin to the
set-up's nodes.

Printed per set-up: images/s (acknowledged images / time from the first send
to the last image classified) and the median and p95 result latency (a study's
SR and ORU both acknowledged, after its last image was acknowledged, minus
the quiet period); then the ratios to 1 SQLite node, measured in this run
(goal: 1 PostgreSQL node >= 0.9x SQLite). On a 2-core machine 2 nodes cannot
be 2x: both nodes' workers and the senders share the same two cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from pydicom.dataset import Dataset  # noqa: E402

from storage.database import Database  # noqa: E402
from tests.gateway_harness import OWN_AE, GatewayProcess, free_port, store  # noqa: E402
from tests.mllp_listener import MllpListener  # noqa: E402
from tests.nodes_rig import chest_studies, node_process  # noqa: E402
from tests.orthanc_peer import OrthancPeer  # noqa: E402
from tests.postgres_cluster import Cluster, why_unavailable  # noqa: E402
from tests.results_rig import wait_until  # noqa: E402

QUIET_S = 2.0
IMAGES_PER_STUDY = 3
SENDERS = 2


@dataclass(frozen=True)
class Outcome:
    label: str
    images_per_s: float
    latency_p50_s: float
    latency_p95_s: float


def start_nodes(folder: Path, database: str, count: int, workers: int, orthanc: OrthancPeer,
                listener: MllpListener) -> list[GatewayProcess]:
    return [node_process(folder, folder, f"node-{n + 1}", database, orthanc, listener,
                         workers=workers, quiet_period_s=QUIET_S).start() for n in range(count)]


def send_all(nodes: list[GatewayProcess], work: list[list[Dataset]]) -> dict[str, float]:
    """Send every study round-robin; when each study's last image was acknowledged."""
    acked: dict[str, float] = {}
    lock = threading.Lock()

    def sender(first: int) -> None:
        for s in range(first, len(work), SENDERS):
            for k, ds in enumerate(work[s]):
                assert store(nodes[(s + k) % len(nodes)].port, [ds]) == [0]
            with lock:
                acked[work[s][0].StudyInstanceUID] = time.time()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acked


def measure(label: str, folder: Path, database: str | Path, nodes_count: int, workers: int,
            work: list[list[Dataset]]) -> Outcome:
    images = sum(len(s) for s in work)
    with MllpListener() as listener:
        orthanc = OrthancPeer(folder / "orthanc", OWN_AE, free_port()).start()
        nodes = start_nodes(folder, str(database), nodes_count, workers, orthanc, listener)
        db = Database(database)
        try:
            t0 = time.time()
            acked = send_all(nodes, work)
            wait_until(lambda: db.query("SELECT COUNT(*) FROM outbox WHERE kind IN ('sr', 'oru')"
                                        " AND state = 'delivered'")[0][0] == 2 * len(work),
                       1800, f"{label}: every SR and ORU delivered", poll_s=0.5)
            last = float(db.query("SELECT MAX(updated_at) FROM instances")[0][0])
            done = dict(db.query("SELECT study_uid, MAX(updated_at) FROM outbox WHERE kind IN"
                                 " ('sr', 'oru') GROUP BY study_uid"))
        finally:
            db.close()
            for node in nodes:
                node.stop()
            orthanc.stop(graceful=False)
    latencies = sorted(float(done[s]) - at - QUIET_S for s, at in acked.items())
    return Outcome(label, images / (last - t0), statistics.median(latencies),
                   latencies[round(0.95 * (len(latencies) - 1))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=30, help="studies of 3 images per set-up")
    parser.add_argument("--workers", type=int, default=1, help="inference.workers per node")
    args = parser.parse_args(argv)
    reason = why_unavailable()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    cluster = Cluster().start()
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cxr-nodes-") as tmp:
            root = Path(tmp)
            setups: list[tuple[str, Any, int]] = [
                ("1 node, SQLite", root / "sqlite" / "journal.sqlite", 1),
                ("1 node, PostgreSQL", "pg1", 1), ("2 nodes, PostgreSQL", "pg2", 2)]
            for label, database, count in setups:
                if isinstance(database, str):
                    cluster.sql(f"CREATE DATABASE {database}")
                    database = cluster.url(database)
                    Database(database, upgrade=True).close()
                outcomes.append(measure(label, root / label.replace(" ", "_").replace(",", ""),
                                        database, count, args.workers,
                                        chest_studies(args.studies, IMAGES_PER_STUDY, "BENCH")))
    finally:
        cluster.stop()
    report(outcomes, args)
    return 0


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    base = outcomes[0]
    print(f"{args.studies} studies x {IMAGES_PER_STUDY} images (256 x 256), {args.workers} worker(s)"
          f" per node, {SENDERS} senders, quiet period {QUIET_S:g} s")
    print(f"{'set-up':<22} {'images/s':>9} {'ratio':>6} {'latency p50':>12} {'p95':>7} {'ratio p50':>10}")
    for o in outcomes:
        print(f"{o.label:<22} {o.images_per_s:9.2f} {o.images_per_s / base.images_per_s:6.2f}"
              f" {o.latency_p50_s:11.2f}s {o.latency_p95_s:6.2f}s"
              f" {o.latency_p50_s / base.latency_p50_s:10.2f}")


if __name__ == "__main__":
    sys.exit(main())
