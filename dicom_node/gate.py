"""The association server with admission control: pynetdicom's server, subclassed, not patched.

pynetdicom's ``AssociationServer`` accepts in one loop and, with TLS, runs
the handshake there with no timeout: one silent peer stops every new
association. :class:`GatedServer` accepts only; each connection's thread
(:class:`GatedRequestHandler`) asks :class:`~dicom_node.admission.Admission`
for a slot, does the TLS handshake against the establishment deadline, then
runs the association as pynetdicom's ``RequestHandler`` does and holds the
slot until it ends.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from datetime import datetime
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.admission import Admission, Refusal, Ticket

log = logging.getLogger(__name__)


class GatedRequestHandler(RequestHandler):
    """One connection: admission, TLS handshake with a deadline, then the association."""

    server: GatedServer

    def handle(self) -> None:
        gate = self.server
        raw = self.request
        assert isinstance(raw, socket.socket)
        ticket = gate.admission.admit(raw, str(self.client_address[0]))
        if ticket is None:
            _close(raw)
            return
        try:
            if gate.tls is None or self._handshake(gate.tls, ticket):
                self._associate(ticket)
        finally:
            gate.admission.release(ticket)

    def _associate(self, ticket: Ticket) -> None:
        """Run the association as ``RequestHandler.handle`` does, and wait for its end."""
        ticket.phase = "A-ASSOCIATE-RQ"
        assoc = self._create_association()
        # Until established, pynetdicom's own wait for the A-ASSOCIATE-RQ (and its ARTIM timer)
        # ends with the deadline too, so a closed or expired connection's thread ends with it.
        left = ticket.opened + self.server.admission.limits.deadline_s - time.monotonic()
        assoc.acse_timeout = max(min(self.ae.acse_timeout or left, left), 0.1)
        assoc.bind(evt.EVT_ESTABLISHED, self.server.on_established, [ticket])
        assoc.bind(evt.EVT_CONN_CLOSE, self.server.on_closed, [ticket])
        try:
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
        finally:
            _stop_transport(assoc, ticket)

    def _handshake(self, context: ssl.SSLContext, ticket: Ticket) -> bool:
        """TLS server handshake (PS3.15 B.1) within what is left of the deadline."""
        ticket.phase = "TLS handshake"
        raw = self.request
        assert isinstance(raw, socket.socket)
        left = ticket.opened + self.server.admission.limits.deadline_s - time.monotonic()
        raw.settimeout(max(left, 0.01))
        try:
            wrapped = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as err:  # refused certificate, plain DICOM, silence
            self.server.admission.fail(ticket, Refusal.TLS_HANDSHAKE,
                                       f"TLS handshake failed ({err}); connection closed")
            _close(raw)
            return False
        wrapped.settimeout(None)  # as pynetdicom's accepted sockets: its reactor polls
        self.request = wrapped
        return True


class GatedServer(ThreadedAssociationServer):
    """``ThreadedAssociationServer`` whose connections pass :class:`Admission` first."""

    daemon_threads = True  # stopping does not wait for connections; the service drains them
    block_on_close = False

    def __init__(self, ae: AE, address: tuple[str, int], ae_title: str,
                 contexts: list[PresentationContext], ssl_context: ssl.SSLContext | None = None,
                 evt_handlers: list[evt.EventHandlerType] | None = None, *,
                 admission: Admission, tls: ssl.SSLContext | None = None) -> None:
        self.admission = admission
        self.tls = tls  # used by each connection's thread, never by the accept loop
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers=evt_handlers,
                         request_handler=GatedRequestHandler)

    def on_established(self, event: Event, ticket: Ticket) -> None:
        """``EVT_ESTABLISHED`` (bound per association with its ticket): the caller passed the
        policy; its slot is no longer pending."""
        self.admission.established(ticket)
        event.assoc.acse_timeout = self.ae.acse_timeout  # dicom.timeouts.acse from now on

    def on_closed(self, event: Event, ticket: Ticket) -> None:
        """``EVT_CONN_CLOSE``: the slot is free now, not when pynetdicom's thread ends."""
        self.admission.release(ticket)


def serve_gated(ae: AE, address: tuple[str, int], handlers: list[evt.EventHandlerType],
                admission: Admission, tls: ssl.SSLContext | None) -> GatedServer:
    """Start a :class:`GatedServer` in a background thread, as ``AE.start_server`` does."""
    server: Any = ae.make_server(address, evt_handlers=handlers, server_class=GatedServer,
                                 admission=admission, tls=tls)
    assert isinstance(server, GatedServer)
    stamp = datetime.now().strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{stamp}",
                              daemon=True)
    thread.start()
    ae._servers.append(server)  # as start_server does: AE.shutdown and server.shutdown use it
    return server


def _stop_transport(assoc: Association, ticket: Ticket) -> None:
    """After the association's thread ended, however it ended: no DUL thread, no connection.

    pynetdicom's association thread can die of an exception on malformed
    P-DATA (seen with fuzzed PDUs); its DUL thread would then poll on forever.
    """
    if assoc.dul.is_alive():
        log.warning("association with %s ended abnormally; closing its connection", ticket.host)
        assoc.dul.kill_dul()
        try:
            ticket.control.shutdown(socket.SHUT_RDWR)
        except OSError as err:  # closed already
            log.debug("closing the connection from %s: %s", ticket.host, err)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError as err:  # the peer has gone already
        log.debug("closing a refused connection: %s", err)
    sock.close()
