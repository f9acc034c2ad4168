"""End-to-end result latency: C-STORE of a study -> its SR stored in Orthanc and its HL7 ACK.

Not a test: run ``.venv/bin/python benchmarks/e2e_latency.py [--studies 50] [--size 2048]``.

Starts Orthanc (the PACS), an MLLP listener answering AA (the RIS) and
``cxr-gateway serve`` with the shipped models (``tests/results_rig.py``).
For each study, one at a time: Orthanc C-STOREs a new chest CR to the
gateway (``POST /modalities/gateway/store``, synchronous); t0 is when that
C-STORE has completed. The SR is "stored" when Orthanc answered its C-STORE
with Success, the ORU when the listener's AA arrived: the times the gateway
records on its outbox rows (same clock). Latency = that time - t0 - the
configured quiet period. Prints p50 and p95 of the SR, the ACK, both (the
goal: p50 < 1 s, p95 < 3 s) and the heatmap, and the stages on the way
(classified, results built and queued).

Baseline, measured in the same run: the transport floor of one study --
C-STORE of its SR and heatmap files straight to Orthanc (pynetdicom) plus one
MLLP round trip of its ORU -- and the ratio of the latency to it.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from pydicom import dcmread  # noqa: E402
from pynetdicom import AE  # noqa: E402

from hl7_link.mllp import MllpClient  # noqa: E402
from tests.conftest import MODELS_DIR  # noqa: E402
from tests.gateway_harness import OWN_AE  # noqa: E402
from tests.mllp_listener import MllpListener  # noqa: E402
from tests.orthanc_peer import ORTHANC_AET  # noqa: E402
from tests.results_rig import Rig, chest_study, start_rig, wait_until  # noqa: E402

GOAL_P50_S, GOAL_P95_S = 1.0, 3.0
POLL_S = 0.2  # aggregation.poll_interval_s of config/gateway.yaml (the dispatcher is woken)


def delivered_at(rig: Rig, study_uid: str) -> dict[str, float] | None:
    """When each result of the study was acknowledged ({kind: time}), once all three are."""
    with sqlite3.connect(rig.gateway.database, timeout=10) as db:
        rows = db.execute("SELECT kind, state, updated_at FROM outbox WHERE study_uid = ?",
                          (study_uid,)).fetchall()
    if len(rows) < 3 or any(state != "delivered" for _, state, _ in rows):
        return None
    return {str(kind): float(at) for kind, _, at in rows}


def one_study(rig: Rig, folder: Path, n: int, size: int, quiet_s: float) -> dict[str, float]:
    """Latency of the SR, the ORU and both, beyond the quiet period, for one new study."""
    study, files = chest_study(folder, f"ACC-BENCH-{n:04d}", size=size)
    ids = [rig.orthanc.upload(f) for f in files]
    rig.orthanc.send_to_gateway(ids)
    t0 = time.time()
    done: dict[str, float] = wait_until(lambda: delivered_at(rig, study), 60, f"study {n}",
                                        poll_s=0.02)
    stages = stage_times(rig, study)
    late = {kind: at - t0 - quiet_s for kind, at in done.items()}
    return {**late, "both": max(late["sr"], late["oru"]),
            "classified": stages[0] - t0, "queued": stages[1] - t0 - quiet_s}


def stage_times(rig: Rig, study_uid: str) -> tuple[float, float]:
    """When the study's image was classified and its results queued in the outbox."""
    with sqlite3.connect(rig.gateway.database, timeout=10) as db:
        [(classified,)] = db.execute("SELECT MAX(updated_at) FROM instances WHERE study_uid = ?",
                                     (study_uid,)).fetchall()
        [(queued,)] = db.execute("SELECT MIN(created_at) FROM outbox WHERE study_uid = ?",
                                 (study_uid,)).fetchall()
    return float(classified), float(queued)


def transport_floor(rig: Rig) -> float:
    """Seconds to C-STORE the last study's SR and heatmap to Orthanc and send its ORU once."""
    with sqlite3.connect(rig.gateway.database, timeout=10) as db:
        rows = db.execute("SELECT channel, object_uid, payload FROM outbox ORDER BY id DESC"
                          " LIMIT 3").fetchall()
    start = time.perf_counter()
    for channel, object_uid, payload in rows:
        if channel == "hl7":
            MllpClient("127.0.0.1", rig.listener.port).send(payload, object_uid)
            continue
        ds = dcmread(payload)
        ae = AE(ae_title=OWN_AE)
        ae.add_requested_context(ds.SOPClassUID)
        assoc = ae.associate("127.0.0.1", rig.orthanc.dicom_port, ae_title=ORTHANC_AET)
        assoc.send_c_store(ds)
        assoc.release()
    return time.perf_counter() - start


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def report(latencies: list[dict[str, float]], floors: list[float]) -> None:
    floor = statistics.median(floors)
    for key, label in (("classified", "classified (from t0)"), ("queued", "results queued"),
                       ("sr", "SR stored in Orthanc"), ("oru", "HL7 ACK"),
                       ("heatmap", "heatmap stored"), ("both", "SR and ACK")):
        values = [lat[key] for lat in latencies]
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(f"{label:<22} p50 {p50:6.3f} s  p95 {p95:6.3f} s  max {max(values):6.3f} s"
              f"  p50/floor {p50 / floor:5.1f}")
    both = [lat["both"] for lat in latencies]
    ok = percentile(both, 50) < GOAL_P50_S and percentile(both, 95) < GOAL_P95_S
    print(f"transport floor (direct C-STORE of SR+heatmap, one MLLP round trip): p50 {floor:.3f} s")
    print(f"goal p50 < {GOAL_P50_S} s and p95 < {GOAL_P95_S} s: {'met' if ok else 'NOT met'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--size", type=int, default=2048, help="image rows and columns")
    parser.add_argument("--quiet", type=float, default=1.0, help="aggregation.quiet_period_s")
    parser.add_argument("--poll", type=float, default=POLL_S,
                        help=f"aggregation.poll_interval_s (default {POLL_S}, as shipped)")
    parser.add_argument("--models", type=Path, default=MODELS_DIR,
                        help=f"models folder (default: the shipped {MODELS_DIR})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-e2e-") as tmp, MllpListener() as listener:
        work = Path(tmp)
        rig = start_rig(work, listener, args.quiet, args.models,
                        aggregation={"poll_interval_s": args.poll},
                        delivery={"poll_interval_s": 1.0})
        try:
            print(f"{args.studies} studies, one {args.size}x{args.size} CR each, quiet period "
                  f"{args.quiet} s, aggregation poll {args.poll} s, delivery poll 1 s (woken on queue)")
            latencies, floors = [], []
            for n in range(args.studies):
                latencies.append(one_study(rig, work, n, args.size, args.quiet))
                floors.append(transport_floor(rig))
            report(latencies, floors)
        finally:
            rig.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
