"""Delivery wiring without peers: settings, identity, sink choice, status lines, retry, dispatcher wake."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from config import ConfigError, Settings, load_settings
from cxr_gateway.cli import main
from delivery.dispatcher import Dispatcher
from delivery.outbox import Channel, DeliveryPolicy, Kind, NewDelivery, Outbox, OutboxRow, RowState
from delivery.report import outbox_report, requeue_all, requeue_rows
from delivery.service import build_sink, delivery_policy, gateway_identity
from delivery.views import RetryOutcome

CALLERS = {"dicom": {"allowed_callers": [{"ae_title": "PACS"}]}}
ONE_ATTEMPT = DeliveryPolicy(retry_window_s=0)


def settings(tmp_path: Path, **sections: Any) -> Settings:
    return Settings.model_validate({"base_dir": str(tmp_path), **CALLERS, **sections})


def test_bad_delivery_and_identity_values_name_their_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={}, overrides=[
            "dicom.accept_any_caller=true", "delivery.backoff_base_s=60",
            "delivery.backoff_max_s=10", "identity.uid_root=1.02.3",
            "delivery.retry_window_s=-1"])
    text = "\n".join(caught.value.problems)
    assert "identity.uid_root: " in text and "ending in '.'" in text
    assert "delivery.retry_window_s: " in text


def test_the_replaced_attempt_count_names_the_new_key(tmp_path: Path) -> None:
    """Issue 20 defect 9: an old config with max_attempts is refused, never silently ignored."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={}, overrides=[
            "dicom.accept_any_caller=true", "delivery.max_attempts=8"])
    [problem] = caught.value.problems
    assert problem.startswith("delivery: ") and "delivery.retry_window_s" in problem
    config = tmp_path / "gateway.yaml"
    config.write_text("dicom: {accept_any_caller: true}\ndelivery: {max_attempts: 8}\n")
    assert main(["check-config", "--config", str(config)]) == 2


def test_backoff_order_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"delivery: backoff_max_s \(10.0\) is below"):
        load_settings(None, environ={}, overrides=[
            "dicom.accept_any_caller=true", "delivery.backoff_base_s=60",
            "delivery.backoff_max_s=10"])


def test_identity_and_policy_come_from_the_settings(tmp_path: Path) -> None:
    s = settings(tmp_path, identity={"uid_root": "1.2.826.0.1.3680043.8.498.",
                                     "serial_number": "SN-7", "institution_name": "St. Test"},
                 delivery={"retry_window_s": 60, "backoff_base_s": 2, "backoff_max_s": 5,
                           "probe_interval_s": 3})
    identity = gateway_identity(s)
    assert (identity.name, identity.serial_number, identity.institution_name) == (
        "CXRGATEWAY", "SN-7", "St. Test")
    assert identity.device_uid.startswith("1.2.826.0.1.3680043.8.498.")
    assert delivery_policy(s) == DeliveryPolicy(60.0, 2.0, 5.0, 3.0)
    assert [delivery_policy(s).delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 5.0]


def test_sink_only_when_a_destination_is_configured(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "journal.sqlite")
    try:
        assert build_sink(settings(tmp_path), outbox) is None
        sink = build_sink(settings(tmp_path, destinations={"dicom": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}]},
            storage={"results_dir": "out"}), outbox)
        assert sink is not None and sink.results_dir == tmp_path / "out"
        assert list(sink.dicom_destinations) == ["pacs"] and not sink.hl7_destinations
    finally:
        outbox.close()


def _outbox_with_rows(path: Path) -> list[int]:
    """Three rows: one dead, one pending, one delivered; their IDs in that order."""
    outbox = Outbox(path)
    outbox.enqueue([NewDelivery("1.2.3", 1, kind, f"1.2.3.{n}", Channel.DICOM, "pacs", "x")
                    for n, kind in enumerate((Kind.SR, Kind.HEATMAP, Kind.ORU))])
    ids = [r.id for r in sorted(outbox.rows(), key=lambda r: r.id)]
    outbox.mark_failed(ids[0], "pacs: association rejected", ONE_ATTEMPT)
    outbox.mark_delivered(ids[2])
    outbox.close()
    return ids


def test_report_lists_dead_letters_with_their_error(tmp_path: Path) -> None:
    dead, _, _ = _outbox_with_rows(tmp_path / "journal.sqlite")
    report = outbox_report(tmp_path / "journal.sqlite")
    assert report.counts[RowState.DEAD] == 1 and report.counts[RowState.PENDING] == 1
    lines = report.lines()
    assert lines[0] == "outbox: pending 1, delivered 1, dead 1, superseded 0"
    assert f"#{dead}" in lines[2] and "association rejected" in lines[2]
    assert report.as_json()["dead"][0]["last_error"] == "pacs: association rejected"


def test_requeue_rows_says_what_happened_to_each(tmp_path: Path) -> None:
    dead, pending, delivered = _outbox_with_rows(tmp_path / "journal.sqlite")
    outcomes = requeue_rows(tmp_path / "journal.sqlite", [dead, pending, delivered, 999])
    assert outcomes == {dead: RetryOutcome.REQUEUED, pending: RetryOutcome.NOT_DEAD,
                        delivered: RetryOutcome.NOT_DEAD, 999: RetryOutcome.NOT_FOUND}
    assert requeue_all(tmp_path / "journal.sqlite") == 0


def test_retry_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"base_dir: {tmp_path}\ndicom: {{accept_any_caller: true}}\n"
                      "storage: {database: journal.sqlite}\n")
    assert main(["retry", "--config", str(config)]) == 2  # neither IDs nor --all-dead
    assert main(["retry", "--all-dead", "--config", str(config)]) == 2  # no journal yet
    dead, pending, _ = _outbox_with_rows(tmp_path / "journal.sqlite")
    assert main(["retry", str(pending), "--config", str(config)]) == 1
    assert main(["retry", "--all-dead", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"#{pending}: not-dead" in out and "re-queued 1 dead letter(s)" in out
    outbox = Outbox(tmp_path / "journal.sqlite")
    try:
        row = next(r for r in outbox.rows() if r.id == dead)
        assert (row.state, row.attempts) == (RowState.PENDING, 0)
    finally:
        outbox.close()


@dataclass
class RecordingSender:
    """Takes every row at once and remembers it (the real senders are tested with real peers)."""

    sent: list[int] = field(default_factory=list)

    def send(self, row: OutboxRow) -> None:
        self.sent.append(row.id)

    def probe(self, destination: str) -> None:
        return None


def test_wake_sends_queued_rows_without_waiting_for_the_poll(database: Path | str) -> None:
    outbox, stop, sender = Outbox(database), threading.Event(), RecordingSender()
    dispatcher = Dispatcher(outbox, {Channel.DICOM: sender}, ONE_ATTEMPT, stop, poll_s=60.0)
    dispatcher.start()
    try:
        outbox.enqueue([NewDelivery("1.2.3", 1, Kind.SR, "1.2.3.1", Channel.DICOM, "pacs", "x")])
        dispatcher.wake()
        deadline = time.monotonic() + 5
        while not sender.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sender.sent) == 1 and outbox.counts()[RowState.DELIVERED] == 1
    finally:
        stop.set()
        dispatcher.wake()
        dispatcher.join(5)
        outbox.close()
    assert not dispatcher.is_alive()  # stop + wake ends the thread long before its 60 s poll
