"""Small real peers for the delivery tests: a pynetdicom Storage SCP and a hung PACS.

:class:`StoreScp` is a real DICOM Storage SCP (pynetdicom) on a free loopback
port that keeps what it receives and answers the status the test chooses, may
support other SOP classes than ours, or reject associations addressed to
another AE title. :class:`HungPeer` accepts TCP connections and never answers
a byte, like a PACS whose DICOM service is stuck.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from types import TracebackType

from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

PACS_AET = "TESTPACS"


class StoreScp:
    """A pynetdicom Storage SCP on a free loopback port that keeps what it receives."""

    def __init__(self, status: int = 0x0000,
                 sop_classes: Sequence[str] = (Comprehensive3DSRStorage,
                                               SecondaryCaptureImageStorage),
                 require_called_aet: bool = False, hold: threading.Event | None = None) -> None:
        self.received: list[Dataset] = []
        self.status = status
        self.hold = hold  # C-STORE answers only once this is set (a PACS stuck mid-store)
        ae = AE(ae_title=PACS_AET)
        ae.require_called_aet = require_called_aet
        for sop_class in (*sop_classes, Verification):
            ae.add_supported_context(sop_class)
        server = ae.start_server(("127.0.0.1", 0), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, self._store)])
        assert isinstance(server, ThreadedAssociationServer)
        self.server = server
        self.port = int(self.server.server_address[1])

    def _store(self, event: evt.Event) -> int:
        if self.hold is not None:
            self.hold.wait(120)
        if self.status == 0x0000:
            self.received.append(event.dataset)
        return self.status

    def close(self) -> None:
        self.server.shutdown()


class HungPeer:
    """Accepts TCP connections on a free loopback port and never sends a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="hung-peer", daemon=True)

    def __enter__(self) -> HungPeer:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the listener and every held connection (the waiting client sees it closed)."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass  # not connected: Linux still wakes accept() on close
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._thread.join(5)
