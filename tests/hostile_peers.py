"""Hostile DICOM peers for the admission tests: silent and dribbling sockets, /metrics.

Each peer is a real TCP connection to the running gateway; ``closed_by_gateway``
tells whether the gateway closed it (end-of-file or reset), which is how a
refused or expired connection looks from outside.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import urllib.request

from tests.gateway_harness import GatewayProcess

A_ASSOCIATE_RQ = 0x01


class Dribbler(threading.Thread):
    """Announces an A-ASSOCIATE-RQ of ``length`` bytes and sends one byte every ``every_s``."""

    def __init__(self, port: int, source: str = "127.0.0.1", length: int = 4000,
                 every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                             source_address=(source, 0))
        self.length, self.every_s = length, every_s
        self.closed_by_gateway = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self.sock.sendall(struct.pack(">BBL", A_ASSOCIATE_RQ, 0, self.length))
            while not self.stop.wait(self.every_s):
                self.sock.sendall(b"\x00")
                if _peer_closed(self.sock):
                    break
        except OSError:
            pass  # the gateway closed the connection: what the tests look for
        if not self.stop.is_set():
            self.closed_by_gateway.set()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the other side closed: a non-blocking read returns end-of-file."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def silent(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A TCP connection that never says anything."""
    return socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the gateway closed ``sock`` within ``timeout`` seconds (nothing is sent)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset by the gateway


def wait_web(gateway: GatewayProcess, timeout: float = 60.0) -> None:
    """Wait until ``serve`` logged that the web app (and so ``/metrics``) is listening."""
    deadline = time.monotonic() + timeout
    while "web console on" not in gateway.log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"web app not listening after {timeout} s:\n{gateway.log()}")
        time.sleep(0.2)


def refused_counts(web_port: int) -> dict[str, float]:
    """``cxr_gateway_associations_refused_total`` by reason, from ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=30) as rsp:
        text = rsp.read().decode()
    pattern = r'^cxr_gateway_associations_refused_total\{[^}]*reason="(\w+)"[^}]*\} ([0-9.e+]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}
