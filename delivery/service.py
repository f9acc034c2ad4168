"""Result delivery wired from the settings: the outbox, its sink, the senders and the dispatcher.

``cxr-gateway serve`` calls :func:`start_delivery` before it starts the DICOM
node, passes :attr:`Delivery.sink` to ``start_gateway`` (the aggregator hands
every due study to it) and calls :meth:`Delivery.stop` after the node has
stopped. The outbox lives in the journal database (``storage.database``), so
rows still pending at a stop or a crash are sent after the next start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from config.schema import Settings
from delivery.dispatcher import Dispatcher
from delivery.outbox import Channel, DeliveryPolicy, Outbox, RowState
from delivery.senders import DicomStoreSender, MllpSender, Sender
from delivery.sink import OutboxSink
from results.identity import GatewayIdentity

log = logging.getLogger(__name__)

STOP_TIMEOUT_S: Final = 15.0
"""How long a stop waits for a send in progress; an unfinished row stays pending (sent again)."""


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    """Retry window, backoff and probing from ``delivery.*``."""
    d = settings.delivery
    return DeliveryPolicy(d.retry_window_s, d.backoff_base_s, d.backoff_max_s, d.probe_interval_s)


def gateway_identity(settings: Settings) -> GatewayIdentity:
    """The device that writes the results: our AE title and ``identity.*``."""
    ident = settings.identity
    extra = {} if ident.uid_root is None else {"uid_root": ident.uid_root}
    return GatewayIdentity(name=settings.dicom.ae_title, serial_number=ident.serial_number,
                           institution_name=ident.institution_name, **extra)


def senders(settings: Settings) -> dict[Channel, Sender]:
    """C-STORE and MLLP senders to ``destinations.*`` with the ``delivery.*`` timeouts."""
    d, dest = settings.delivery, settings.destinations
    return {
        Channel.DICOM: DicomStoreSender(settings.dicom.ae_title, {p.name: p for p in dest.dicom},
                                        d.store_timeout_s),
        Channel.HL7: MllpSender({p.name: p for p in dest.hl7}, d.mllp_connect_timeout_s,
                                d.mllp_ack_timeout_s),
    }


def lanes(settings: Settings) -> list[tuple[Channel, str]]:
    """One delivery lane (thread) per configured destination (issue 20, defect 9)."""
    dest = settings.destinations
    return [*((Channel.DICOM, p.name) for p in dest.dicom), *((Channel.HL7, p.name) for p in dest.hl7)]


def build_sink(settings: Settings, outbox: Outbox,
               on_queued: Callable[[], None] | None = None) -> OutboxSink | None:
    """The aggregator's sink, or ``None`` (results only logged) when no destination is set.

    ``on_queued`` (the dispatcher's ``wake``) runs whenever rows were queued,
    so a report goes out at once rather than at the next poll.
    """
    dest = settings.destinations
    if not dest.dicom and not dest.hl7:
        log.warning("destinations: none configured; study results are logged, not sent "
                    "(add destinations.dicom or destinations.hl7)")
        return None
    return OutboxSink(outbox, gateway_identity(settings),
                      settings.path(settings.storage.results_dir),
                      [p.name for p in dest.dicom], list(dest.hl7), settings.inference.heatmap,
                      on_queued, settings.dicom.max_inflated_mb * 2**20)


@dataclass
class Delivery:
    """A started delivery stage; :meth:`stop` after the DICOM node has stopped."""

    outbox: Outbox
    sink: OutboxSink | None
    dispatcher: Dispatcher
    stop_event: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stop_event.set()
        self.dispatcher.wake()
        self.dispatcher.join(STOP_TIMEOUT_S)
        if self.dispatcher.is_alive():
            log.warning("delivery: a send was still running at stop; it is retried after restart")
        self.outbox.close()


def start_delivery(settings: Settings) -> Delivery:
    """Open the outbox, build the sink and start the dispatcher (pending rows resume)."""
    outbox = Outbox(settings.database_target(), password=settings.database_password(),
                    node=settings.node_name(), lease_s=settings.storage.lease_s,
                    results_root=settings.path(settings.storage.results_dir))
    stop = threading.Event()
    dispatcher = Dispatcher(outbox, senders(settings), delivery_policy(settings), stop,
                            settings.delivery.poll_interval_s, lanes(settings))
    delivery = Delivery(outbox, build_sink(settings, outbox, dispatcher.wake), dispatcher, stop)
    dispatcher.start()
    pending = outbox.counts()
    log.info("delivery: %d pending, %d dead-lettered in the outbox", pending[RowState.PENDING],
             pending[RowState.DEAD])
    return delivery
