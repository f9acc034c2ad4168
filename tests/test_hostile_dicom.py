"""Hostile DICOM over C-STORE (issue 20): every bad instance ends in a defined outcome.

A seeded set of bad instances (truncated, wrong value lengths, a transfer
syntax that does not match the bytes, an unknown transfer syntax, no Pixel
Data, huge Rows/Columns, undefined-length garbage, deflate bombs and corrupt
deflate streams, Bits Stored > Bits Allocated, missing UIDs, random bytes, an
instance over ``dicom.max_instance_mb``) is sent, each as its bytes are
(pynetdicom's chunked send, no re-encoding), to one running gateway. Each
must end in a named status (0xA700, 0xA900, 0xC210), a refused presentation
context, or be stored and then ``skipped``/``failed`` with a reason (or
classified, for the few that are still readable radiographs) -- never queued
for ever; and the gateway must still answer C-ECHO afterwards.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from dicom_node.status import StoreStatus
from tests.bomb_factory import encode_dataset, file_start, store_file_as_is
from tests.conftest import require_shipped_models
from tests.dicom_factory import make_chest
from tests.gateway_harness import GatewayProcess, echo, free_port, gateway_config

SEED = 20201
FINAL = ("skipped", "failed", "classified")
REFUSED_CONTEXT = -1  # no presentation context accepted for the proposed transfer syntax
BOGUS_SYNTAX = UID("1.2.826.0.1.3680043.8.498.999.1")
CR = UID("1.2.840.10008.5.1.4.1.1.1")


@dataclass(frozen=True)
class Case:
    """One hostile instance: the file to send, its context's syntax, what may come of it."""

    name: str
    sop_uid: str
    path: Path
    syntax: UID
    statuses: tuple[int, ...]  # acceptable answers; SUCCESS means: then a final state
    states: tuple[str, ...] = FINAL


def _chest(**changes: Any) -> Dataset:
    ds = make_chest(rows=256, columns=256, sop_uid=generate_uid(), **changes)
    return ds


def _write(folder: Path, name: str, ds: Dataset, body: bytes, syntax: UID) -> Path:
    path = folder / f"{name}.dcm"
    path.write_bytes(file_start(ds, syntax) + body)
    return path


def _case(folder: Path, name: str, ds: Dataset, body: bytes, statuses: tuple[int, ...],
          syntax: UID = ExplicitVRLittleEndian, states: tuple[str, ...] = FINAL) -> Case:
    sop_uid = str(ds.file_meta.MediaStorageSOPInstanceUID)
    return Case(name, sop_uid, _write(folder, name, ds, body, syntax), syntax, statuses, states)


STORED_OR_CANNOT = (StoreStatus.SUCCESS, StoreStatus.CANNOT_UNDERSTAND)


def _truncated(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    body = encode_dataset(ds)
    return _case(folder, "truncated", ds, body[:rng.randrange(len(body) // 2, len(body) - 10)],
                 STORED_OR_CANNOT)


def _wrong_length(folder: Path, rng: random.Random) -> Case:
    """Photometric Interpretation with a value length that swallows the Pixel Data header."""
    ds = _chest()
    body = bytearray(encode_dataset(ds))
    at = body.find(b"\x28\x00\x04\x00CS")  # (0028,0004) CS, 2-byte length follows
    assert at > 0
    body[at + 6:at + 8] = struct.pack("<H", 0xFFF0)
    return _case(folder, "wrong-vr-length", ds, bytes(body), STORED_OR_CANNOT,
                 states=("skipped", "failed"))


def _implicit_on_explicit(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    return _case(folder, "implicit-bytes-explicit-context", ds, encode_dataset(ds, implicit=True),
                 STORED_OR_CANNOT)


def _unknown_syntax(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    return _case(folder, "unknown-transfer-syntax", ds, encode_dataset(ds), (REFUSED_CONTEXT,),
                 syntax=BOGUS_SYNTAX)


def _no_pixels(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    del ds.PixelData
    return _case(folder, "no-pixel-data", ds, encode_dataset(ds), (StoreStatus.SUCCESS,),
                 states=("skipped", "failed"))


def _huge_rows(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    ds.Rows = ds.Columns = 65535
    return _case(folder, "huge-rows-columns", ds, encode_dataset(ds), STORED_OR_CANNOT,
                 states=("skipped", "failed"))


def _undefined_length_garbage(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    del ds.PixelData
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    body = encode_dataset(ds) + b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" + garbage
    return _case(folder, "undefined-length-garbage", ds, body, STORED_OR_CANNOT,
                 states=("skipped", "failed"))


def _deflate_bomb(folder: Path, rng: random.Random) -> Case:
    """64 MB of zeros deflated to about 64 KB; dicom.max_inflated_mb is 16 here."""
    ds = _chest()
    del ds.PixelData
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    size = 64 * 2**20
    parts = [deflater.compress(encode_dataset(ds)),
             deflater.compress(b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", size))]
    parts += [deflater.compress(bytes(2**20)) for _ in range(size // 2**20)]
    body = b"".join(parts) + deflater.flush()
    return _case(folder, "deflate-bomb", ds, body, (StoreStatus.OUT_OF_RESOURCES,),
                 syntax=DeflatedExplicitVRLittleEndian)


def _corrupt_deflate(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    garbage = bytes(rng.randrange(256) for _ in range(2048))
    return _case(folder, "corrupt-deflate", ds, b"\xff\xff" + garbage,
                 (StoreStatus.CANNOT_UNDERSTAND,), syntax=DeflatedExplicitVRLittleEndian)


def _bits_stored_over_allocated(folder: Path, rng: random.Random) -> Case:
    ds = _chest(bits_stored=8)
    ds.BitsStored, ds.HighBit = 12, 11
    return _case(folder, "bits-stored-over-allocated", ds, encode_dataset(ds),
                 (StoreStatus.SUCCESS,), states=("skipped", "failed"))


def _no_sop_instance_uid(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    del ds.SOPInstanceUID
    return _case(folder, "no-sop-instance-uid", ds, encode_dataset(ds),
                 (StoreStatus.CANNOT_UNDERSTAND,))


def _sop_class_mismatch(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    body = encode_dataset(ds)
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")  # DX: request
    return _case(folder, "sop-class-mismatch", ds, body,
                 (StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,))


def _random_bytes(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(16, 4096)))
    return _case(folder, "random-bytes", ds, garbage, STORED_OR_CANNOT)


def _bad_photometric(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    ds.PhotometricInterpretation = "HSV"
    return _case(folder, "bad-photometric", ds, encode_dataset(ds), (StoreStatus.SUCCESS,),
                 states=("skipped", "failed"))


def _garbage_jpeg(folder: Path, rng: random.Random) -> Case:
    ds = _chest(bits_stored=8)
    del ds.PixelData
    fragment = b"\xff\xd8\xff\xdb" + bytes(rng.randrange(256) for _ in range(1000)) + b"\xff\xd9"
    body = (encode_dataset(ds) + b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
            + b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
            + b"\xfe\xff\x00\xe0" + struct.pack("<I", len(fragment)) + fragment
            + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return _case(folder, "garbage-jpeg", ds, body, (StoreStatus.SUCCESS,),
                 syntax=JPEGBaseline8Bit, states=("skipped", "failed"))


def _zero_rescale_slope(folder: Path, rng: random.Random) -> Case:
    ds = _chest()
    ds.RescaleSlope, ds.RescaleIntercept = 0, 0
    return _case(folder, "zero-rescale-slope", ds, encode_dataset(ds), (StoreStatus.SUCCESS,))


def _over_max_instance(folder: Path, rng: random.Random) -> Case:
    """12 MB of pixels; dicom.max_instance_mb is 8 here."""
    ds = make_chest(rows=8, columns=8, sop_uid=generate_uid())
    ds.Rows = ds.Columns = 2450
    ds.PixelData = bytes(2450 * 2450 * 2)
    return _case(folder, "over-max-instance", ds, encode_dataset(ds),
                 (StoreStatus.OUT_OF_RESOURCES,))


def _implicit_syntax_bytes_deflated(folder: Path, rng: random.Random) -> Case:
    """A valid dataset whose deflated bytes are sent on an Implicit VR context."""
    ds = _chest()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflater.compress(encode_dataset(ds)) + deflater.flush()
    return _case(folder, "deflated-bytes-implicit-context", ds, body, STORED_OR_CANNOT,
                 syntax=ImplicitVRLittleEndian)


BUILDERS: tuple[Callable[[Path, random.Random], Case], ...] = (
    _truncated, _wrong_length, _implicit_on_explicit, _unknown_syntax, _no_pixels, _huge_rows,
    _undefined_length_garbage, _deflate_bomb, _corrupt_deflate, _bits_stored_over_allocated,
    _no_sop_instance_uid, _sop_class_mismatch, _random_bytes, _random_bytes, _bad_photometric,
    _garbage_jpeg, _zero_rescale_slope, _over_max_instance, _implicit_syntax_bytes_deflated,
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    models = require_shipped_models()
    folder = tmp_path_factory.mktemp("hostile")
    config = gateway_config(folder, free_port(), dicom={"max_instance_mb": 8, "max_inflated_mb": 16},
                            inference={"workers": 1, "threads_per_model": 1,
                                       "models_dir": str(models)})
    proc = GatewayProcess(folder, config).start()
    try:
        yield proc
    finally:
        proc.stop()
        proc.ensure_stopped()


def _send(port: int, case: Case) -> int:
    try:
        status = store_file_as_is(port, case.path, case.syntax)
    except (ValueError, ConnectionError):  # no presentation context accepted for the syntax
        return REFUSED_CONTEXT
    assert status is not None, f"{case.name}: no C-STORE response"
    return status


def test_every_hostile_instance_ends_in_a_defined_outcome(gateway: GatewayProcess,
                                                          tmp_path: Path) -> None:
    rng = random.Random(SEED)
    cases = [build(tmp_path, rng) for build in BUILDERS]
    stored = []
    for case in cases:
        status = _send(gateway.port, case)
        assert status in case.statuses, f"{case.name}: status 0x{status & 0xFFFF:04X}"
        assert gateway.alive(), f"{case.name} stopped the gateway:\n{gateway.log()[-3000:]}"
        if status == StoreStatus.SUCCESS:
            stored.append(case)
        else:
            assert not gateway.rows("SELECT 1 FROM instances WHERE sop_instance_uid = ?",
                                    (case.sop_uid,)), f"{case.name}: refused but recorded"
    gateway.wait_for("SELECT COUNT(*) FROM instances WHERE state IN ('queued', 'classifying')",
                     0, timeout=120)
    for case in stored:
        [(state, reason)] = gateway.rows(
            "SELECT state, reason FROM instances WHERE sop_instance_uid = ?", (case.sop_uid,))
        assert state in case.states, (case.name, state, reason)
        assert state == "classified" or reason, f"{case.name}: {state} without a reason"
    assert echo(gateway.port) == 0
