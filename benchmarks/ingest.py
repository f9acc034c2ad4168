"""Ingest and classification speed of the DICOM node, against DCMTK ``storescp``.

Not a test: run ``.venv/bin/python benchmarks/ingest.py [--images 200] [--size 2048]``.

1. Writes N synthetic 16-bit chest radiographs (``tests/dicom_factory.py``).
2. Ingest: DCMTK ``storescu`` sends them all on one association to DCMTK
   ``storescp`` (baseline: writes files, no fsync, no journal) and to
   ``cxr-gateway serve`` (fsync per file, SQLite journal with synchronous=FULL)
   with the worker idle (``inference.workers: 0``) and with the worker busy:
   one worker classifying a backlog of ``--backlog`` other images queued
   before the measurement, each its own study, so that study results (SR,
   heatmap SC, ORU, built by the aggregator) are due during the measurement
   too, for a destination that refuses connections. Idle and busy alternate
   ``--repeat`` times (the machine is shared: single runs vary by 2x); prints
   each images/s, the median ratio busy / idle (issue 20 defect 10: goal
   >= 0.8, "intake has priority") and how much backlog was left (the worker
   was busy throughout when it is above 0).
3. Classification: the gateway classifies the N queued images with 1 and 2
   workers; prints images/s and the peak resident memory of the process.

``--only-priority`` runs storescp and step 2 only.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from pydicom.uid import generate_uid  # noqa: E402

from tests.conftest import MODELS_DIR  # noqa: E402
from tests.dicom_factory import make_chest, write  # noqa: E402
from tests.gateway_harness import (  # noqa: E402
    OWN_AE,
    GatewayProcess,
    dcmtk_tool,
    free_port,
    gateway_config,
)

GOAL_RATIO = 0.8  # issue 3: ingest while classifying, relative to storescp
PRIORITY_GOAL = 0.8  # issue 20 defect 10: ingest with the worker busy, relative to idle
PENDING = "SELECT COUNT(*) FROM instances WHERE state IN ('queued', 'classifying')"


def make_files(folder: Path, count: int, size: int, studies: bool = False) -> list[Path]:
    """``count`` files of one study (or each of its own study when ``studies``)."""
    base = make_chest(rows=size, columns=size, bits_stored=16, study_uid=generate_uid(),
                      series_uid=generate_uid())
    files = []
    for i in range(count):  # same pixels, a new instance each time (written at once)
        base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if studies:
            base.StudyInstanceUID, base.SeriesInstanceUID = generate_uid(), generate_uid()
        files.append(write(base, folder / f"{i:04d}.dcm"))
    return files


def send(port: int, files: list[Path], called: str) -> float:
    """Seconds storescu needs to send every file on one association."""
    start = time.perf_counter()
    done = subprocess.run([dcmtk_tool("storescu") or "storescu", "-aec", called, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-2000:]}")
    return elapsed


def storescp_rate(work: Path, files: list[Path]) -> float:
    out = work / "storescp"
    out.mkdir()
    port = free_port()
    server = subprocess.Popen([dcmtk_tool("storescp") or "storescp", "-od", str(out), str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        seconds = send(port, files, "STORESCP")
    finally:
        server.terminate()
        server.wait(10)
    assert len(list(out.iterdir())) == len(files)
    return len(files) / seconds


THREADS_PER_MODEL = {"value": 2}  # --threads-per-model; 2 is the shipped default


def gateway(folder: Path, workers: int, models: Path = MODELS_DIR,
            **sections: dict[str, object]) -> GatewayProcess:
    inference: dict[str, object] = {"workers": workers,
                                    "threads_per_model": THREADS_PER_MODEL["value"]}
    if workers:
        inference["models_dir"] = str(models)
    return GatewayProcess(folder, gateway_config(folder, free_port(), inference=inference,
                                                 **sections))


REPORTING: dict[str, dict[str, object]] = {
    "aggregation": {"quiet_period_s": 0.5, "poll_interval_s": 0.2},
    "destinations": {"dicom": [{"name": "pacs", "ae_title": "CLOSED", "host": "127.0.0.1",
                                "port": 9}]},
}
"""The busy gateway also builds each study's results (for a PACS that refuses connections)."""


def gateway_rate(folder: Path, files: list[Path], workers: int, models: Path) -> float:
    proc = gateway(folder, workers, models).start()
    try:
        seconds = send(proc.port, files, OWN_AE)
        assert proc.rows("SELECT COUNT(*) FROM instances")[0][0] == len(files)
    finally:
        proc.stop(timeout=600)
    return len(files) / seconds


def busy_rate(folder: Path, files: list[Path], backlog: list[Path],
              models: Path) -> tuple[float, int]:
    """Images/s received while one worker classifies ``backlog`` (queued beforehand), and the
    backlog still pending when the last image was acknowledged."""
    intake = gateway(folder, 0, models, **REPORTING).start()
    send(intake.port, backlog, OWN_AE)
    intake.stop()
    proc = gateway(folder, 1, models, **REPORTING).start()
    try:
        proc.wait_for("SELECT COUNT(*) FROM studies WHERE reported_at IS NOT NULL", 1, timeout=120)
        seconds = send(proc.port, files, OWN_AE)
        left = int(proc.rows(PENDING)[0][0]) - len(files)
    finally:
        proc.stop(timeout=600)
    return len(files) / seconds, left


def priority(work: Path, files: list[Path], backlog: list[Path], models: Path,
             base: float, repeat: int) -> None:
    """Step 2: ingest with the worker idle and busy, alternating, and the median ratio."""
    if not models_present(models):
        print(f"(models absent in {models}: no busy worker to measure against)")
        return
    ratios = []
    for n in range(repeat):
        idle = gateway_rate(work / f"gw-idle-{n}", files, 0, models)
        busy, left = busy_rate(work / f"gw-busy-{n}", files, backlog, models)
        ratios.append(busy / idle)
        print(f"run {n + 1}: worker idle {idle:6.1f} images/s (storescp ratio {idle / base:.2f}), "
              f"worker busy {busy:6.1f} images/s (backlog left {left} of {len(backlog)}), "
              f"busy / idle {busy / idle:.2f}")
        shutil.rmtree(work / f"gw-idle-{n}")
        shutil.rmtree(work / f"gw-busy-{n}")
    print(f"intake priority, median busy / idle: {statistics.median(ratios):.2f}  "
          f"(goal >= {PRIORITY_GOAL}; storescp goal >= {GOAL_RATIO})")


def classification(folder: Path, files: list[Path], workers: int,
                   models: Path) -> tuple[float, int]:
    """Images/s of ``workers`` classifying the queued files, and peak RSS in MB."""
    intake = gateway(folder, 0).start()
    send(intake.port, files, OWN_AE)
    intake.stop()
    proc = gateway(folder, workers, models).start(wait=False)
    assert proc.proc is not None
    try:
        start = time.perf_counter()
        proc.wait_for(PENDING, 0, timeout=3600)
        seconds = time.perf_counter() - start
        peak = _peak_rss_mb(proc.proc.pid)
    finally:
        proc.stop(timeout=600)
    return len(files) / seconds, peak


def _peak_rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def models_present(models: Path) -> bool:
    from inference.registry import missing_models

    return missing_models(models) is None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--backlog", type=int, default=100,
                        help="images queued for the busy worker before measuring (default 100)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="idle/busy pairs measured, alternating (default 3)")
    parser.add_argument("--only-priority", action="store_true",
                        help="storescp and the idle/busy ingest only")
    parser.add_argument("--threads-per-model", type=int, default=2,
                        help="inference.threads_per_model of the gateway (default 2, as shipped)")
    parser.add_argument("--models", type=Path, default=MODELS_DIR,
                        help=f"models folder (default: the shipped {MODELS_DIR})")
    args = parser.parse_args()
    models: Path = args.models
    THREADS_PER_MODEL["value"] = args.threads_per_model
    with tempfile.TemporaryDirectory(prefix="cxr-ingest-") as tmp:
        work = Path(tmp)
        files = make_files(work / "files", args.images, args.size)
        backlog = make_files(work / "backlog", args.backlog, args.size, studies=True)
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"{len(files)} images of {args.size}x{args.size} 16-bit, {mb:.0f} MB")
        base = storescp_rate(work, files)
        print(f"DCMTK storescp:                  {base:7.1f} images/s")
        priority(work, files, backlog, models, base, args.repeat)
        if args.only_priority or not models_present(models):
            return 0
        for workers in (1, 2):
            rate, peak = classification(work / f"classify-{workers}", files, workers, models)
            print(f"classification, {workers} worker(s):     {rate:7.1f} images/s  "
                  f"peak RSS {peak} MB")
            shutil.rmtree(work / f"classify-{workers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
