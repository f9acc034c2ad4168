"""The proof of issue 22 (item 6): three nodes on one PostgreSQL, one dies, nothing lost or doubled.

Three ``cxr-gateway serve`` processes share one PostgreSQL database (a
throw-away cluster, tests/postgres_cluster.py) and one spool and results
folder; Orthanc is the PACS, an MLLP listener the RIS. Concurrent senders
send chest radiograph studies round-robin over the three nodes' DICOM ports
(each image of a study to another node, as a load balancer would); a sender
whose node does not answer sends the image to the next node, as a PACS with
several destinations does. A third of the way in, node 2 is killed with
SIGKILL; two thirds in, node 3 is stopped and started again. Then:

* every instance answered Success is in the journal, classified, and no node
  logged classifying it twice;
* every study has exactly one SR (one revision) in Orthanc, a heatmap per
  classified image, and exactly one ORU control ID at the listener;
* after ``storage.lease_s`` nothing is held by the dead node.

The issue's size: 100 studies of 3 images (300 images, 256 x 256), about 90 s
on the shared 2-core machine (3 nodes with 1 worker each); ``CXR_NODES_STUDIES``
changes the number of studies.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydicom.dataset import Dataset

from dicom_node.status import StoreStatus
from tests.conftest import PG_TEMPLATE
from tests.gateway_harness import OWN_AE, GatewayProcess, free_port, store
from tests.mllp_listener import MllpListener
from tests.nodes_rig import chest_studies, node_process
from tests.orthanc_peer import ORTHANC_AET, OrthancPeer
from tests.postgres_cluster import Cluster
from tests.results_rig import results_in_orthanc, wait_until

pytestmark = pytest.mark.slow

STUDIES = int(os.environ.get("CXR_NODES_STUDIES", "100"))
IMAGES_PER_STUDY = 3
LEASE_S = 5.0
SENDERS = 3
DONE_TIMEOUT_S = 900.0


class Senders:
    """Send every study, image k of study s to node (s + k) mod 3, failing over to the next."""

    def __init__(self, nodes: list[GatewayProcess], studies: list[list[Dataset]]) -> None:
        self.nodes, self.studies = nodes, studies
        self.acked: dict[str, str] = {}  # SOP Instance UID -> study UID
        self.failovers = 0
        self.lock = threading.Lock()

    def send(self, first: int) -> None:
        for s in range(first, len(self.studies), SENDERS):
            for k, ds in enumerate(self.studies[s]):
                self._one(ds, (s + k) % len(self.nodes))

    def _one(self, ds: Dataset, start: int) -> None:
        for attempt in range(60):
            node = self.nodes[(start + attempt) % len(self.nodes)]
            try:
                answered = store(node.port, [ds])
            except ConnectionError:  # the node is down: the next one
                answered = []
            if answered == [StoreStatus.SUCCESS]:
                with self.lock:
                    self.acked[ds.SOPInstanceUID] = ds.StudyInstanceUID
                return
            with self.lock:
                self.failovers += 1
            time.sleep(0.2)
        raise AssertionError(f"no node stored {ds.SOPInstanceUID}")

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def _rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def _settled(url: str, acked: int) -> bool:
    """Every acknowledged image has an outcome, every study is reported, the outbox is empty."""
    decided = _rows(url, "SELECT COUNT(*) FROM instances WHERE state NOT IN ('queued', 'classifying')")
    unreported = _rows(url, "SELECT COUNT(*) FROM studies WHERE reported_revision < revision")[0][0]
    pending = _rows(url, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0]
    return bool(decided[0][0] >= acked and unreported == 0 and pending == 0)


def _chaos(senders: Senders, nodes: list[GatewayProcess], total: int, events: list[str]) -> None:
    """Kill node 2 a third of the way in; restart node 3 two thirds in."""
    wait_until(lambda: senders.count() >= total // 3, 600, "a third sent", poll_s=0.05)
    nodes[1].kill9()
    events.append(f"node-2 killed after {senders.count()} acknowledged")
    wait_until(lambda: senders.count() >= 2 * total // 3, 600, "two thirds sent", poll_s=0.05)
    assert nodes[2].stop() == 0
    nodes[2].start()
    events.append(f"node-3 restarted after {senders.count()} acknowledged")


def _control_id(message: str) -> str:
    return re.split(r"[\r\n]+", message)[0].split("|")[9]  # MSH-10


def _oru_control_ids(listener: MllpListener, study_uid: str) -> set[str]:
    return {_control_id(m) for m in listener.received if study_uid in m}


def test_three_nodes_one_killed_nothing_lost_nothing_doubled(postgres: Cluster, tmp_path: Path) -> None:
    url = postgres.new_database(template=PG_TEMPLATE)
    studies = chest_studies(STUDIES, IMAGES_PER_STUDY, "ACC")
    total = STUDIES * IMAGES_PER_STUDY
    shared = tmp_path / "shared"  # the spool and results folders every node mounts
    with MllpListener() as listener:
        orthanc = OrthancPeer(tmp_path / "orthanc", OWN_AE, free_port()).start()
        callers = {"allowed_callers": [{"ae_title": t, "host": "127.0.0.1"}
                                       for t in (ORTHANC_AET, "ECHOSCU", "TESTSCU")]}
        nodes = [node_process(tmp_path, shared, f"node-{n}", url, orthanc, listener, workers=1,
                              quiet_period_s=4.0, storage={"lease_s": LEASE_S}, dicom=callers)
                 for n in (1, 2, 3)]
        try:
            for node in nodes:
                node.start()
            senders, events = Senders(nodes, studies), list[str]()
            threads = [threading.Thread(target=senders.send, args=(n,)) for n in range(SENDERS)]
            chaos = threading.Thread(target=_chaos, args=(senders, nodes, total, events))
            for thread in [*threads, chaos]:
                thread.start()
            for thread in [*threads, chaos]:
                thread.join(DONE_TIMEOUT_S)
            assert len(events) == 2, events
            assert senders.count() == total, "every image was stored by some node"
            wait_until(lambda: _settled(url, total), DONE_TIMEOUT_S, "every image decided, "
                       "every study reported and delivered", poll_s=1.0)
            _assert_exactly_once(url, senders, nodes, orthanc, listener)
        finally:
            for node in nodes:
                node.ensure_stopped()
            orthanc.stop(graceful=False)


def _assert_exactly_once(url: str, senders: Senders, nodes: list[GatewayProcess],
                         orthanc: OrthancPeer, listener: MllpListener) -> None:
    states = {uid: (state, reason) for uid, state, reason in
              _rows(url, "SELECT sop_instance_uid, state, reason FROM instances")}
    wrong = {uid: states.get(uid) for uid in senders.acked if states.get(uid, ("",))[0] != "classified"}
    assert wrong == {}, "every acknowledged image classified"
    logs = "".join(node.log() for node in nodes)
    doubled = [uid for uid in senders.acked if logs.count(f"{uid} classified:") > 1]
    assert doubled == [], "classified twice"
    for study_uid in set(senders.acked.values()):
        found = results_in_orthanc(orthanc, study_uid)
        assert len(found.get("SR", [])) == 1, study_uid
        images = sum(1 for s in senders.acked.values() if s == study_uid)
        heatmaps = found.get("OT", []) + found.get("SC", [])
        assert len(heatmaps) == images, (study_uid, len(heatmaps))
        assert len(_oru_control_ids(listener, study_uid)) == 1, study_uid
    sent_again = len(listener.received) - len({_control_id(m) for m in listener.received})
    assert sent_again <= 1, "only the ORU the killed node was sending may arrive twice"
    time.sleep(LEASE_S)  # then nothing may still be held by the dead node
    held = [_rows(url, f"SELECT COUNT(*) FROM {table} WHERE claimed_by = 'node-2' AND {live}")[0][0]
            for table, live in (("jobs", "state = 'running'"), ("studies", "claimed_by IS NOT NULL"),
                                ("outbox", "state = 'pending'"))]
    assert held == [0, 0, 0]
