"""MLLP transport: block framing and a client that sends one message and waits for its ACK.

Minimal Lower Layer Protocol, HL7 v2.5.1 Appendix C.4: every message travels
as ``<SB> message <EB><CR>`` with SB = 0x0B and EB = 0x1C, CR = 0x0D. The
receiver answers on the same connection with an acknowledgement in the same
framing.

No maintained Python MLLP *client* fits: hl7apy ships only a server, and
python-hl7's ``MLLPClient`` has no timeouts and returns whatever one
``recv`` gives (possibly half a frame). So the client here is a small socket
implementation: one connection per message (every MLLP receiver accepts
that), a connect timeout, one deadline for the whole answer, an incremental
frame decoder, and :func:`hl7_link.ack.parse_ack` on the answer. What to do
with a negative ACK or a transport error (retry, dead-letter) is the
outbox's decision, not the client's.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Final

from hl7_link.ack import Ack, parse_ack
from hl7_link.errors import FramingError, MllpConnectFailed, MllpConnectionError, MllpTimeout

log = logging.getLogger(__name__)

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c"
CARRIAGE_RETURN: Final = b"\x0d"
TRAILER: Final = END_BLOCK + CARRIAGE_RETURN

MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
"""Largest frame the decoder accepts by default; a peer that sends more is not speaking MLLP."""

MAX_ACK_BYTES: Final = 1024 * 1024
"""Largest acknowledgement the client reads: an ACK is a few hundred bytes; more is refused."""

RECV_BYTES: Final = 65536


def frame(message: str | bytes, encoding: str = "utf-8") -> bytes:
    """``message`` wrapped in an MLLP block; refuses payloads containing the framing bytes."""
    payload = message.encode(encoding) if isinstance(message, str) else message
    if START_BLOCK in payload or END_BLOCK in payload:
        raise FramingError("message: contains 0x0B or 0x1C, which MLLP reserves for framing")
    return START_BLOCK + payload + TRAILER


class FrameDecoder:
    """Incremental MLLP decoder: feed bytes as they arrive, get complete payloads back.

    Bytes between frames other than CR/LF are a protocol error (a peer not
    speaking MLLP); an unterminated frame larger than ``max_bytes`` as well.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every payload completed by it, in order."""
        self._buffer.extend(data)
        payloads: list[bytes] = []
        while True:
            self._drop_line_noise()
            if not self._buffer:
                return payloads
            if self._buffer[:1] != START_BLOCK:
                raise FramingError(f"expected start block 0x0B, got {bytes(self._buffer[:8])!r}")
            end = self._buffer.find(TRAILER)
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    raise FramingError(f"frame larger than {self.max_bytes} bytes")
                return payloads
            payloads.append(bytes(self._buffer[1:end]))
            del self._buffer[:end + len(TRAILER)]

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def _drop_line_noise(self) -> None:
        while self._buffer[:1] in (b"\r", b"\n"):
            del self._buffer[:1]


def unframe(data: bytes) -> bytes:
    """The payload of exactly one complete MLLP block."""
    decoder = FrameDecoder()
    payloads = decoder.feed(data)
    if len(payloads) != 1 or decoder.pending:
        raise FramingError(f"expected one complete MLLP block, got {len(payloads)} "
                           f"and {decoder.pending} trailing bytes")
    return payloads[0]


@dataclass(frozen=True)
class MllpClient:
    """Sends HL7 messages to one peer; each :meth:`send` is one connection, one message, one ACK."""

    host: str
    port: int
    connect_timeout: float = 10.0
    ack_timeout: float = 30.0
    encoding: str = "utf-8"

    def send(self, message: str, control_id: str | None = None) -> Ack:
        """Send ``message`` and return the parsed ACK (positive or not).

        Raises MllpConnectFailed (refused or unreachable), MllpConnectionError
        (reset, closed before answering),
        MllpTimeout (no complete answer within ``ack_timeout``), FramingError
        or AckError (an answer that is not an ACK of ``control_id``).
        """
        data = frame(message, self.encoding)
        with self._connect() as conn:
            self._send_all(conn, data)
            answer = self._receive(conn)
        ack = parse_ack(answer.decode(self.encoding, errors="replace"), control_id)
        log.info("MLLP %s:%d answered %s for message %s", self.host, self.port,
                 ack.code.value, ack.control_id)
        return ack

    def _connect(self) -> socket.socket:
        try:
            return socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError as err:
            raise MllpTimeout(f"connect to {self.host}:{self.port}: no answer within "
                              f"{self.connect_timeout:g} s") from err
        except ConnectionRefusedError as err:
            raise MllpConnectFailed(
                f"connect to {self.host}:{self.port}: connection refused") from err
        except OSError as err:
            raise MllpConnectFailed(f"connect to {self.host}:{self.port}: {err}") from err

    def _send_all(self, conn: socket.socket, data: bytes) -> None:
        try:
            conn.settimeout(self.ack_timeout)
            conn.sendall(data)
        except TimeoutError as err:
            raise MllpTimeout(f"send to {self.host}:{self.port}: timed out") from err
        except OSError as err:
            raise MllpConnectionError(f"send to {self.host}:{self.port}: {err}") from err

    def _receive(self, conn: socket.socket) -> bytes:
        """The first complete frame the peer sends, within ``ack_timeout`` overall."""
        decoder = FrameDecoder(MAX_ACK_BYTES)
        deadline = time.monotonic() + self.ack_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MllpTimeout(f"{self.host}:{self.port}: no ACK within {self.ack_timeout:g} s")
            chunk = self._recv(conn, remaining)
            if not chunk:
                raise MllpConnectionError(
                    f"{self.host}:{self.port} closed the connection without an ACK")
            payloads = decoder.feed(chunk)
            if payloads:
                return payloads[0]

    def _recv(self, conn: socket.socket, timeout: float) -> bytes:
        try:
            conn.settimeout(timeout)
            return conn.recv(RECV_BYTES)
        except TimeoutError as err:
            raise MllpTimeout(f"{self.host}:{self.port}: no ACK within "
                              f"{self.ack_timeout:g} s") from err
        except OSError as err:
            raise MllpConnectionError(f"receive from {self.host}:{self.port}: {err}") from err
