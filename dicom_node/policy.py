"""Association policy: who may open an association with the node.

Checked when an A-ASSOCIATE-RQ arrives (pynetdicom ``EVT_REQUESTED``): the
calling AE title (and, when configured, the peer's IP address) must be in
``dicom.allowed_callers``, and with ``dicom.check_called_ae`` the called AE
title must be ours. Otherwise the node answers A-ASSOCIATE-RJ, rejected
permanent, source service user, with the PS3.8 9.3.4 diagnostic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pynetdicom.events import Event

from config.schema import AllowedCaller, DicomSettings
from dicom_node.admission import Refusal, Refusals
from dicom_node.status import RejectReason, RejectResult, RejectSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssociationPolicy:
    """The rule, independent of the network, so it can be tested as a pure function."""

    own_ae_title: str
    allowed: tuple[AllowedCaller, ...]
    accept_any_caller: bool
    check_called_ae: bool
    refusals: Refusals = field(default_factory=Refusals, compare=False)

    @classmethod
    def from_settings(cls, dicom: DicomSettings,
                      refusals: Refusals | None = None) -> AssociationPolicy:
        return cls(dicom.ae_title, dicom.allowed_callers, dicom.accept_any_caller,
                   dicom.check_called_ae, Refusals() if refusals is None else refusals)

    def decide(self, calling_ae: str, called_ae: str, peer_address: str) -> RejectReason | None:
        """``None`` to accept, else the reason to reject."""
        if self.check_called_ae and called_ae.strip() != self.own_ae_title:
            return RejectReason.CALLED_AE_NOT_RECOGNIZED
        if self.accept_any_caller:
            return None
        calling = calling_ae.strip()
        for peer in self.allowed:
            if peer.ae_title == calling and (peer.host is None or peer.host == peer_address):
                return None
        return RejectReason.CALLING_AE_NOT_RECOGNIZED

    def handle_requested(self, event: Event) -> None:
        """``EVT_REQUESTED`` handler: reject a peer the policy does not know. Never raises."""
        try:
            request = event.assoc.requestor
            primitive = request.primitive
            calling = primitive.calling_ae_title if primitive else ""
            called = primitive.called_ae_title if primitive else ""
            reason = self.decide(calling, called, request.address)
            if reason is None:
                return
            log.warning("association rejected (%s): calling AE %r from %s, called AE %r",
                        reason.name, calling, request.address, called)
            self.refusals.count(Refusal.POLICY)
            event.assoc.acse.send_reject(RejectResult.PERMANENT, RejectSource.SERVICE_USER, reason)
            event.assoc.kill()  # as pynetdicom does: lets the DUL send the A-ASSOCIATE-RJ
        except Exception:
            log.exception("association policy check failed; aborting the association")
            event.assoc.abort()
