"""A real MLLP peer for tests: hl7apy's MLLPServer on a free loopback port.

It parses every message it receives (hl7apy, HL7 v2.5.1) and answers as the
test says: AA, AE or AR acknowledgements (HL7 table 0008), never answering,
or closing the connection without an answer. Using hl7apy's server rather
than our own framing code means the client is tested against an independent
MLLP implementation.
"""

from __future__ import annotations

import threading
from collections import deque
from enum import StrEnum
from types import TracebackType

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

ORU_TYPE = "ORU^R01^ORU_R01"
SILENCE_LIMIT_S = 30.0


class Answer(StrEnum):
    """How the listener answers one message."""

    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"
    SILENT = "silent"  # keep the connection open, never answer
    CLOSE = "close"  # close the connection without answering


class MllpListener:
    """Start with ``with MllpListener() as peer:``; ``peer.port`` is where to send."""

    def __init__(self, answer: Answer = Answer.ACCEPT, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.scripted: deque[Answer] = deque()  # answers for the next messages, then ``answer``
        self.received: list[str] = []
        self.parsed: list[Message] = []
        self.answers: list[Answer] = []  # how each received message was answered, in order
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(host, 0, {ORU_TYPE: (_Handler, self)})
        self._thread = threading.Thread(target=self._server.serve_forever, name="mllp-listener",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> MllpListener:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def record(self, text: str) -> Answer:
        """Parse and keep ``text``; the answer to give it."""
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT)
        with self._lock:
            self.received.append(text)
            self.parsed.append(message)
            answer = self.scripted.popleft() if self.scripted else self.answer
            self.answers.append(answer)
            return answer


class _Server(MLLPServer):  # type: ignore[misc]
    daemon_threads = True


class _Handler(AbstractHandler):  # type: ignore[misc]
    def __init__(self, message: str, listener: MllpListener) -> None:
        super().__init__(message)
        self.listener = listener

    def reply(self) -> str:
        answer = self.listener.record(self.incoming_message)
        if answer is Answer.SILENT:
            self.listener.released.wait(SILENCE_LIMIT_S)
        if answer in (Answer.SILENT, Answer.CLOSE):
            raise ConnectionAbortedError("listener told not to answer")
        return str(ack_for(self.incoming_message, answer).to_mllp())


def ack_for(text: str, answer: Answer) -> Message:
    """An HL7 v2.5.1 ACK of ``text`` with MSA-1 = ``answer`` and MSA-2 = its control ID."""
    incoming = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    ack = Message("ACK", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
    ack.msh.msh_3 = incoming.msh.msh_5.to_er7() or "LISTENER"
    ack.msh.msh_5 = incoming.msh.msh_3.to_er7()
    ack.msh.msh_9 = "ACK^R01^ACK"
    ack.msh.msh_10 = "ACK" + incoming.msh.msh_10.to_er7()[:17]
    ack.msh.msh_11 = "P"
    ack.msa.msa_1 = answer.value
    ack.msa.msa_2 = incoming.msh.msh_10.to_er7()
    ack.msa.msa_3 = {"AA": "accepted", "AE": "error \\T\\ retry", "AR": "rejected"}[answer.value]
    return ack
