"""Issue 20 defect 11: every kind of delivery failure is named, against real peers on loopback.

A refused connection, a timeout, a rejected association (with its reason), an
association without our presentation context and a failed C-STORE status
(named) each read differently in the row's last error, ``cxr-gateway
status`` and the console row; the HL7 side likewise. Peers: pynetdicom
Storage SCPs (tests/delivery_peers.py), a hung TCP peer, the hl7apy MLLP
listener.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage

from config.schema import DicomDestination, Hl7Destination
from delivery.dispatcher import Dispatcher
from delivery.failures import DeliveryError, Failure
from delivery.outbox import Channel, DeliveryPolicy, Kind, Outbox, OutboxRow, RowState
from delivery.report import outbox_report
from delivery.senders import DicomStoreSender, MllpSender, Sender
from delivery.sink import OutboxSink
from delivery.views import public_row
from tests.delivery_peers import PACS_AET, HungPeer, StoreScp
from tests.gateway_harness import OWN_AE, free_port
from tests.mllp_listener import Answer, MllpListener
from tests.results_support import IDENTITY
from tests.test_delivery import _study

pytestmark = pytest.mark.slow


@pytest.fixture
def sr_row(tmp_path: Path) -> Iterator[OutboxRow]:
    """A real SR queued for a destination called ``pacs``."""
    outbox = Outbox(tmp_path / "journal.sqlite")
    OutboxSink(outbox, IDENTITY, tmp_path / "results", ["pacs"], [],
               heatmap=False).study_ready(_study(tmp_path))
    [row] = outbox.rows()
    yield row
    outbox.close()


def _store_error(row: OutboxRow, port: int, ae_title: str = PACS_AET,
                 timeout_s: float = 10.0) -> DeliveryError:
    peer = DicomDestination(name="pacs", ae_title=ae_title, host="127.0.0.1", port=port)
    with pytest.raises(DeliveryError) as caught:
        DicomStoreSender(OWN_AE, {"pacs": peer}, timeout_s).send(row)
    return caught.value


def test_refused_connection(sr_row: OutboxRow) -> None:
    err = _store_error(sr_row, free_port())
    assert err.failure is Failure.REFUSED and err.failure.unreachable
    assert str(err).startswith(f"pacs ({PACS_AET}@127.0.0.1:") and "connection refused" in str(err)


def test_association_not_answered_is_a_timeout(sr_row: OutboxRow) -> None:
    with HungPeer() as hung:
        err = _store_error(sr_row, hung.port, timeout_s=0.5)
    assert err.failure is Failure.TIMEOUT
    assert "timeout: no answer to the association request within 0.5 s" in str(err)


def test_rejected_association_names_the_reason(sr_row: OutboxRow) -> None:
    scp = StoreScp(require_called_aet=True)
    try:
        err = _store_error(sr_row, scp.port, ae_title="NOTTHEPACS")
    finally:
        scp.close()
    assert err.failure is Failure.REJECTED
    assert "association rejected: Rejected Permanent by the Service User: Called AE title not " \
           "recognised" in str(err)


def test_no_accepted_presentation_context(sr_row: OutboxRow) -> None:
    scp = StoreScp(sop_classes=[CTImageStorage])  # a PACS configured for CT only
    try:
        err = _store_error(sr_row, scp.port)
    finally:
        scp.close()
    assert err.failure is Failure.NO_CONTEXT and not err.failure.unreachable
    assert "no accepted presentation context: Comprehensive 3D SR Storage" in str(err)
    assert "Abstract Syntax Not Supported" in str(err)
    assert "connection refused" not in str(err) and "rejected" not in str(err)


def test_failed_store_status_is_named(sr_row: OutboxRow) -> None:
    scp = StoreScp(status=0xA700)
    try:
        err = _store_error(sr_row, scp.port)
    finally:
        scp.close()
    assert err.failure is Failure.STORE_FAILED
    assert f"C-STORE failed: sr {sr_row.object_uid} answered 0xA700 Refused: Out of Resources" \
           in str(err)


def test_store_not_answered_is_a_timeout(sr_row: OutboxRow) -> None:
    release = threading.Event()
    scp = StoreScp(hold=release)
    try:
        err = _store_error(sr_row, scp.port, timeout_s=0.5)
    finally:
        release.set()
        scp.close()
    assert err.failure is Failure.TIMEOUT
    assert f"no C-STORE response for sr {sr_row.object_uid} within 0.5 s" in str(err)


def test_c_echo_probe() -> None:
    scp = StoreScp()
    port = scp.port
    try:
        sender = DicomStoreSender(OWN_AE, {"pacs": DicomDestination(
            name="pacs", ae_title=PACS_AET, host="127.0.0.1", port=port)}, 5.0)
        sender.probe("pacs")  # answers
    finally:
        scp.close()
    with pytest.raises(DeliveryError) as caught:
        sender.probe("pacs")
    assert caught.value.failure is Failure.REFUSED
    with pytest.raises(DeliveryError, match="no longer configured in destinations.dicom"):
        sender.probe("gone")


def test_hl7_failures_are_named_and_shown_by_status(tmp_path: Path) -> None:
    """Refused, silent, AE and closed RIS peers through the dispatcher, then status and console."""
    outbox = Outbox(tmp_path / "journal.sqlite")
    with MllpListener(Answer.SILENT) as silent, MllpListener(Answer.ERROR) as erring, \
            MllpListener(Answer.CLOSE) as closing:
        peers = {"down": free_port(), "silent": silent.port, "erring": erring.port,
                 "closing": closing.port}
        hl7 = [Hl7Destination(name=n, host="127.0.0.1", port=p) for n, p in peers.items()]
        OutboxSink(outbox, IDENTITY, tmp_path / "r", [], hl7,
                   heatmap=False).study_ready(_study(tmp_path))
        senders: dict[Channel, Sender] = {Channel.HL7: MllpSender({h.name: h for h in hl7},
                                                                   2.0, 0.5)}
        Dispatcher(outbox, senders, DeliveryPolicy(), threading.Event()).run_once()
        silent.released.set()
    errors = {r.destination: str(r.last_error) for r in outbox.rows()}
    assert "connection refused" in errors["down"]
    assert "timeout: " in errors["silent"] and "no ACK within 0.5 s" in errors["silent"]
    assert "negative acknowledgement: answered AE (error & retry)" in errors["erring"]
    assert "connection closed: " in errors["closing"]
    report = outbox_report(tmp_path / "journal.sqlite")
    shown = "\n".join(report.lines())
    assert "retrying (the last attempt failed" in shown
    assert all(error in shown for error in errors.values())
    assert {r["last_error"] for r in report.as_json()["failing"]} == set(errors.values())
    assert {public_row(r)["last_error"] for r in outbox.rows(RowState.PENDING)} == \
        set(errors.values())
    outbox.close()


def test_unconfigured_destination_is_a_local_problem(sr_row: OutboxRow) -> None:
    with pytest.raises(DeliveryError) as caught:
        DicomStoreSender(OWN_AE, {}).send(sr_row)
    assert caught.value.failure is Failure.LOCAL and "no longer configured" in str(caught.value)
    assert Kind.SR is sr_row.kind
