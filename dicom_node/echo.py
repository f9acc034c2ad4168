"""C-ECHO as an SCU: check that a configured peer answers (Verification, PS3.4 annex A)."""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.errors import NodeError
from dicom_node.status import EchoStatus

log = logging.getLogger(__name__)


class EchoError(NodeError):
    """The peer could not be verified; the message says at which step."""


@dataclass(frozen=True)
class Peer:
    """Where to send the C-ECHO."""

    ae_title: str
    host: str
    port: int


def send_echo(own_ae_title: str, peer: Peer, timeout_s: float = 10.0,
              tls: ssl.SSLContext | None = None) -> None:
    """Associate, send C-ECHO, release; raise :class:`EchoError` unless the status is Success."""
    ae = AE(ae_title=own_ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    tls_args = (tls, peer.host) if tls else None
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    if assoc.is_rejected:
        raise EchoError(f"{peer.ae_title}@{peer.host}:{peer.port} rejected the association "
                        f"(is our AE title {own_ae_title} allowed there, and is "
                        f"{peer.ae_title} its AE title?)")
    if not assoc.is_established and assoc.rejected_contexts and not assoc.accepted_contexts:
        raise EchoError(f"{peer.ae_title} answered the association but accepted no presentation "
                        "context for Verification (C-ECHO is not supported or not enabled there)")
    if not assoc.is_established:
        raise EchoError(f"no association with {peer.host}:{peer.port}: "
                        f"{_why_no_association(peer, timeout_s)}")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = status.get("Status") if status else None
    if code != EchoStatus.SUCCESS:
        raise EchoError(f"{peer.ae_title} answered C-ECHO with status "
                        f"{'none (timeout)' if code is None else hex(code)}")
    log.info("C-ECHO %s@%s:%d: success", peer.ae_title, peer.host, peer.port)


def _why_no_association(peer: Peer, timeout_s: float) -> str:
    """Tell a refused connection from a silent host from a peer that hung up (TCP probe)."""
    try:
        with socket.create_connection((peer.host, peer.port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        return "connection refused (nothing listens on that port: wrong port, or not started)"
    except TimeoutError:
        return (f"no answer within {timeout_s:g} s (host down, or a firewall drops the "
                "packets)")
    except OSError as err:
        return f"cannot connect ({err})"
    return ("the port accepts connections but no association was made (a TLS mismatch, or "
            "the peer closed or aborted the connection: see its log)")
