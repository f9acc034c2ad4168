"""Ingest and classification speed of the DICOM node, against DCMTK ``storescp``.

Not a test: run ``.venv/bin/python benchmarks/ingest.py [--images 200] [--size 2048]``.

1. Writes N synthetic 16-bit chest radiographs (``tests/dicom_factory.py``).
2. Ingest: DCMTK ``storescu`` sends them all on one association to DCMTK
   ``storescp`` (baseline: writes files, no fsync, no journal) and to
   ``cxr-gateway serve`` (fsync per file, SQLite journal with synchronous=FULL)
   -- with one classification worker running in the background when the
   shipped models are present, and intake-only. Prints images/s and ratios.
3. Classification: the gateway classifies the N queued images with 1 and 2
   workers; prints images/s and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import shutil
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
PENDING = "SELECT COUNT(*) FROM instances WHERE state IN ('queued', 'classifying')"


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    base = make_chest(rows=size, columns=size, bits_stored=16, study_uid=generate_uid())
    files = []
    for i in range(count):  # same pixels, a new instance each time (written at once)
        base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
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


def gateway(folder: Path, workers: int, models: Path = MODELS_DIR) -> GatewayProcess:
    inference: dict[str, object] = {"workers": workers, "threads_per_model": 1}
    if workers:
        inference["models_dir"] = str(models)
    return GatewayProcess(folder, gateway_config(folder, free_port(), inference=inference))


def gateway_rate(folder: Path, files: list[Path], workers: int, models: Path) -> float:
    proc = gateway(folder, workers, models).start()
    try:
        seconds = send(proc.port, files, OWN_AE)
        assert proc.rows("SELECT COUNT(*) FROM instances")[0][0] == len(files)
    finally:
        proc.stop(timeout=600)
    return len(files) / seconds


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
    parser.add_argument("--models", type=Path, default=MODELS_DIR,
                        help=f"models folder (default: the shipped {MODELS_DIR})")
    args = parser.parse_args()
    models: Path = args.models
    with tempfile.TemporaryDirectory(prefix="cxr-ingest-") as tmp:
        work = Path(tmp)
        files = make_files(work / "files", args.images, args.size)
        mb = sum(f.stat().st_size for f in files) / 2**20
        print(f"{len(files)} images of {args.size}x{args.size} 16-bit, {mb:.0f} MB")
        base = storescp_rate(work, files)
        print(f"DCMTK storescp:                  {base:7.1f} images/s")
        if models_present(models):
            busy = gateway_rate(work / "gw-busy", files, 1, models)
            print(f"gateway, 1 worker classifying:   {busy:7.1f} images/s  "
                  f"ratio {busy / base:.2f} (goal >= {GOAL_RATIO})")
        else:
            print(f"(models absent in {models}: no background classification)")
        idle = gateway_rate(work / "gw-intake", files, 0, models)
        print(f"gateway, intake only:            {idle:7.1f} images/s  ratio {idle / base:.2f}")
        if not models_present(models):
            print(f"classification throughput skipped: no models in {models}")
            return 0
        for workers in (1, 2):
            rate, peak = classification(work / f"classify-{workers}", files, workers, models)
            print(f"classification, {workers} worker(s):     {rate:7.1f} images/s  "
                  f"peak RSS {peak} MB")
            shutil.rmtree(work / f"classify-{workers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
