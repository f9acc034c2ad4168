"""Issue 20: a seeded fuzzer of DICOM upper-layer PDUs (PS3.8 9.3) against the running gateway.

A few hundred connections, each with one kind of damage: truncated or
mis-sized PDUs, unknown PDU types, lengths up to 4 GiB, random bytes after a
valid A-ASSOCIATE-RQ, random P-DATA-TF on an established association,
flipped bits in an A-ASSOCIATE-RQ, plain noise. Afterwards the gateway must
still answer C-ECHO, every slot must be free again (``max_associations``
callers at once, from as many addresses, all established) and nothing may
have been journaled. The seed is fixed, so a failure replays exactly.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.gateway_harness import OWN_AE, GatewayProcess, echo, free_port, gateway_config

pytestmark = pytest.mark.slow

SEED = 20
CASES = 320
MAX_ASSOCIATIONS = 6
SOURCES = [f"127.0.0.{n}" for n in range(1, 21)]
A_ASSOCIATE_AC, P_DATA_TF = 0x02, 0x04
KNOWN_TYPES = range(1, 8)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    config = gateway_config(folder, free_port())
    config["dicom"].update(allowed_callers=[{"ae_title": "TESTSCU"}, {"ae_title": "ECHOSCU"}],
                           max_associations=MAX_ASSOCIATIONS, timeouts={"establishment": 5})
    proc = GatewayProcess(folder, config).start()
    yield proc
    assert proc.stop() == 0


def associate_rq(calling: str = "TESTSCU") -> bytes:
    """A valid A-ASSOCIATE-RQ proposing Verification (PS3.8 9.3.2)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, OWN_AE
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16382
    primitive.user_information = [maximum]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def _truncated(rng: random.Random, rq: bytes) -> list[bytes]:
    return [rq[:rng.randrange(1, len(rq))]]


def _wrong_length(rng: random.Random, rq: bytes) -> list[bytes]:
    length = max(0, len(rq) - 6 + rng.choice([-1, 1]) * rng.randrange(1, 60))
    return [_header(rq[0], length) + rq[6:]]


def _bogus_type(rng: random.Random, rq: bytes) -> list[bytes]:
    pdu_type = rng.choice([t for t in range(256) if t not in KNOWN_TYPES])
    body = rng.randbytes(rng.randrange(0, 200))
    return [_header(pdu_type, len(body)) + body]


def _oversize(rng: random.Random, rq: bytes) -> list[bytes]:
    pdu_type = rng.choice(list(KNOWN_TYPES))
    return [_header(pdu_type, rng.choice([2**32 - 1, 2**31, 2**24 + 7])) + rq[6:]]


def _garbage_after_rq(rng: random.Random, rq: bytes) -> list[bytes]:
    return [rq + rng.randbytes(rng.randrange(1, 2000))]


def _flipped_bits(rng: random.Random, rq: bytes) -> list[bytes]:
    mutated = bytearray(rq)
    for _ in range(rng.randrange(1, 8)):
        mutated[rng.randrange(6, len(mutated))] ^= 1 << rng.randrange(8)
    return [bytes(mutated)]


def _random_p_data(rng: random.Random, rq: bytes) -> list[bytes]:
    """After the A-ASSOCIATE-AC: P-DATA-TF with framed PDVs of random content, or bad framing."""
    pdvs = b""
    for _ in range(rng.randrange(1, 4)):
        value = bytes([rng.choice([1, 3, 5])]) + bytes([rng.randrange(4)]) + rng.randbytes(
            rng.randrange(0, 300))
        length = len(value) if rng.random() < 0.8 else rng.randrange(0, 2**16)
        pdvs += struct.pack(">L", length) + value
    return [rq, _header(P_DATA_TF, len(pdvs)) + pdvs]


def _noise(rng: random.Random, rq: bytes) -> list[bytes]:
    return [rng.randbytes(rng.randrange(1, 1500))]


MUTATORS: list[Callable[[random.Random, bytes], list[bytes]]] = [
    _truncated, _wrong_length, _bogus_type, _oversize, _garbage_after_rq, _flipped_bits,
    _random_p_data, _noise]


def _send(port: int, source: str, messages: list[bytes]) -> bool:
    """Send each message (the next only after an A-ASSOCIATE-AC), then close.

    ``True`` when every message was sent (for P-DATA: on an established association);
    ``False`` when the gateway closed the connection first (refused: it was busy).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        for n, message in enumerate(messages):
            try:
                sock.sendall(message)
                if n + 1 < len(messages) and sock.recv(6)[:1] != bytes([A_ASSOCIATE_AC]):
                    return False
            except (TimeoutError, ConnectionResetError, BrokenPipeError):
                return False
        sock.settimeout(0.05)
        try:
            sock.recv(4096)  # whatever the gateway answers (A-ASSOCIATE-RJ, A-ABORT), if quick
        except (TimeoutError, ConnectionResetError):
            pass  # it waits for more, or has closed the connection: both fine
    return True


def _all_slots(port: int) -> bool:
    """``MAX_ASSOCIATIONS`` associations at once, one per address: all established."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    assocs = [ae.associate("127.0.0.1", port, ae_title=OWN_AE, bind_address=(f"127.0.1.{n}", 0))
              for n in range(1, MAX_ASSOCIATIONS + 1)]
    established = [a.is_established for a in assocs]
    for assoc in assocs:
        if assoc.is_established:
            assoc.release()
    return all(established)


def test_fuzzed_pdus_leave_the_gateway_serving(gateway: GatewayProcess) -> None:
    rng = random.Random(SEED)
    rq = associate_rq()
    cases = [(rng.choice(SOURCES), rng.choice(MUTATORS)(rng, rq)) for _ in range(CASES)]
    delivered = [_send(gateway.port, source, messages) for source, messages in cases]
    p_data = [ok for ok, (_, messages) in zip(delivered, cases, strict=True) if len(messages) == 2]
    assert sum(p_data) >= len(p_data) // 2, "too few P-DATA cases reached an association"
    assert gateway.alive(), gateway.log()[-3000:]
    assert echo(gateway.port, source="127.0.0.1") == 0x0000
    assert _wait(lambda: _all_slots(gateway.port)), "a slot is still held after the fuzzing"
    assert gateway.rows("SELECT COUNT(*) FROM instances")[0][0] == 0


def _wait(check: Callable[[], bool], attempts: int = 20) -> bool:
    """Slots of connections the fuzzer left half-open free at the deadline (5 s)."""
    for _ in range(attempts):
        if check():
            return True
        time.sleep(1.0)
    return False
