"""``cxr-gateway echo`` names why a peer could not be verified (issue 20, defect 11).

A refused connection, a silent host, a peer that hangs up and a peer without
Verification are different faults for IT. Real peers on loopback: nothing
listening, a pynetdicom SCP without the Verification SOP Class, a TCP
listener that never speaks DICOM.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicom_node.echo import EchoError, Peer, send_echo
from tests.gateway_harness import free_port


def test_nothing_listening_is_named() -> None:
    with pytest.raises(EchoError, match="connection refused"):
        send_echo("CXRGATEWAY", Peer("NOBODY", "127.0.0.1", free_port()), timeout_s=5)


@pytest.fixture
def storage_only_scp() -> Iterator[int]:
    ae = AE(ae_title="CTONLY")
    ae.add_supported_context(CTImageStorage)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    assert server is not None
    yield port
    server.shutdown()


def test_peer_without_verification_is_named(storage_only_scp: int) -> None:
    with pytest.raises(EchoError, match="accepted no presentation context for Verification"):
        send_echo("CXRGATEWAY", Peer("CTONLY", "127.0.0.1", storage_only_scp), timeout_s=10)


@pytest.fixture
def mute_listener() -> Iterator[int]:
    """Accepts TCP connections and closes each at once, without a word of DICOM."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    listener.close()


def test_port_open_but_no_association_is_named(mute_listener: int) -> None:
    with pytest.raises(EchoError, match="accepts connections but no association"):
        send_echo("CXRGATEWAY", Peer("MUTE", "127.0.0.1", mute_listener), timeout_s=5)
