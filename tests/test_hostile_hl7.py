"""Issue 20: a seeded fuzzer of HL7 acknowledgements, played by a fake MLLP peer to the dispatcher.

A few hundred cases (garbage, truncated frames, missing MSA or MSH, wrong
control ID, AE/AR/CE/CR, invalid codes, oversize, slow and fast dribbling,
no answer, a close or reset mid-frame, two frames) are each the answer of
:class:`FuzzPeer` to one ORU, looked up by the message's control ID (MSH-10).
The real dispatcher sends them over three lanes with a short retry window.
Every outcome is defined: a row is delivered only for a complete, valid AA or
CA of its own control ID; every other row ends dead-lettered with the reason
its case calls for in its last error; the dispatcher and its lanes are alive
afterwards. ``CXR_FUZZ_SEED`` replays another seed.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

from config.schema import Hl7Destination
from delivery.dispatcher import Dispatcher
from delivery.failures import Failure
from delivery.outbox import Channel, DeliveryPolicy, Kind, NewDelivery, Outbox, RowState
from delivery.senders import MllpSender, Sender
from hl7_link.mllp import MAX_ACK_BYTES

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CXR_FUZZ_SEED", "20"))
CASES = 300
LANES = 3  # destinations, all served by the one fuzzing peer: they run side by side
ACK_TIMEOUT_S = 1.0
SB, TRAILER = b"\x0b", b"\x1c\r"
HOLD_LIMIT_S = 30.0  # the peer never holds a connection longer than this


class End(StrEnum):
    CLOSE = "close"  # close after the bytes
    HOLD = "hold"  # keep the connection open until the client gives up
    RESET = "reset"  # TCP reset (SO_LINGER 0) after the bytes


@dataclass(frozen=True)
class Case:
    kind: str
    chunks: tuple[bytes, ...]
    end: End
    expect: Failure | None  # None: delivered
    delay_s: float = 0.0  # between chunks


def _ack(code: str, control_id: str, *, text: str = "", sep: str = "\r", msh: bool = True,
         msa: bool = True) -> bytes:
    segments = []
    if msh:
        segments.append("MSH|^~\\&|RIS|HOSP|CXRGATEWAY||20260101120000||ACK^R01^ACK|A1|P|2.5.1")
    if msa:
        segments.append(f"MSA|{code}|{control_id}" + (f"|{text}" if text else ""))
    return sep.join(segments).encode()


class Fuzz:
    """Builds the seeded cases; each kind says what the gateway must make of it."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def text(self, longest: int = 40) -> str:
        alphabet = "abcXYZ 019.,;:-_()é中\\T\\E\\F\\"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, longest)))

    def other_id(self, control_id: str) -> str:
        pick = self.rng.randrange(4)
        if pick == 0:
            return control_id[:-1]
        if pick == 1:
            return control_id + "0"
        if pick == 2:
            return control_id.lower()
        return "".join(self.rng.choice("ABCDEF0123456789") for _ in range(len(control_id)))

    def framed(self, payload: bytes) -> bytes:
        noise = self.rng.choice([b"", b"", b"\r", b"\n\r"])  # line noise between frames is legal
        return noise + SB + payload + TRAILER

    def end(self) -> End:
        return self.rng.choice([End.CLOSE, End.HOLD])

    def case(self, cid: str) -> Case:
        kinds: list[tuple[int, Callable[[str], Case]]] = [
            (14, self.valid), (12, self.negative), (8, self.wrong_id), (7, self.bad_code),
            (4, self.no_msa), (3, self.no_msh), (3, self.lf_segments), (6, self.garbage),
            (6, self.garbage_framed), (3, self.junk_before), (4, self.two_frames),
            (4, self.truncated_close), (4, self.close_mid_frame), (3, self.no_answer_close),
            (2, self.truncated_hold), (1, self.eb_without_cr), (2, self.no_answer_hold),
            (1, self.slow_dribble), (5, self.fast_dribble), (2, self.big_valid),
            (1, self.oversize),
        ]
        weights = [w for w, _ in kinds]
        make = self.rng.choices([m for _, m in kinds], weights)[0]
        return make(cid)

    def valid(self, cid: str) -> Case:
        code = self.rng.choice(["AA", "CA"])
        sep = self.rng.choice(["\r", "\r\n"])
        body = _ack(code, cid, text=self.text(), sep=sep) + self.rng.choice([b"", b"\r"])
        return Case(f"valid-{code}", (self.framed(body),), self.end(), None)

    def negative(self, cid: str) -> Case:
        code = self.rng.choice(["AE", "AR", "CE", "CR"])
        return Case(f"negative-{code}", (self.framed(_ack(code, cid, text=self.text())),),
                    self.end(), Failure.NEGATIVE_ACK)

    def wrong_id(self, cid: str) -> Case:
        code = self.rng.choice(["AA", "CA"])
        other = self.rng.choice([self.other_id(cid), ""])
        return Case("wrong-control-id", (self.framed(_ack(code, other)),), self.end(),
                    Failure.BAD_ANSWER)

    def bad_code(self, cid: str) -> Case:
        code = self.rng.choice(["XX", "aa", "A", "", "AA^X", "AA~AE", "AAA", "OK", "ca"])
        return Case("invalid-MSA-1", (self.framed(_ack(code, cid)),), self.end(),
                    Failure.BAD_ANSWER)

    def no_msa(self, cid: str) -> Case:
        return Case("missing-MSA", (self.framed(_ack("AA", cid, msa=False)),), self.end(),
                    Failure.BAD_ANSWER)

    def no_msh(self, cid: str) -> Case:
        return Case("missing-MSH", (self.framed(_ack("AA", cid, msh=False)),), self.end(),
                    Failure.BAD_ANSWER)

    def lf_segments(self, cid: str) -> Case:
        return Case("LF-separated", (self.framed(_ack("AA", cid, sep="\n")),), self.end(),
                    Failure.BAD_ANSWER)

    def garbage(self, cid: str) -> Case:
        first = self.rng.choice([b for b in range(256) if b not in (0x0B, 0x0D, 0x0A)])
        rest = self.rng.randbytes(self.rng.randint(0, 300))
        return Case("garbage", (bytes([first]) + rest,), self.end(), Failure.BAD_ANSWER)

    def garbage_framed(self, cid: str) -> Case:
        junk = self.rng.randbytes(self.rng.randint(0, 300)).replace(TRAILER, b"")
        return Case("garbage-in-frame", (SB + junk + TRAILER,), self.end(), Failure.BAD_ANSWER)

    def junk_before(self, cid: str) -> Case:
        junk = self.rng.choice([b"HTTP/1.1 400 Bad Request\r\n\r\n", b"x", b"\x00"])
        return Case("junk-before-frame", (junk + self.framed(_ack("AA", cid)),), self.end(),
                    Failure.BAD_ANSWER)

    def two_frames(self, cid: str) -> Case:
        good, bad = SB + _ack("AA", cid) + TRAILER, SB + _ack("AA", self.other_id(cid)) + TRAILER
        if self.rng.random() < 0.5:
            return Case("two-frames-first-valid", (good + bad,), self.end(), None)
        return Case("two-frames-first-wrong", (bad + good,), self.end(), Failure.BAD_ANSWER)

    def _cut(self, cid: str) -> bytes:
        whole = SB + _ack("AA", cid) + TRAILER
        return whole[:self.rng.randint(0, len(whole) - 2)]  # never the complete trailer

    def truncated_close(self, cid: str) -> Case:
        return Case("truncated-then-close", (self._cut(cid),), End.CLOSE, Failure.CLOSED)

    def close_mid_frame(self, cid: str) -> Case:
        return Case("reset-mid-frame", (self._cut(cid),), End.RESET, Failure.CLOSED)

    def no_answer_close(self, cid: str) -> Case:
        return Case("no-answer-close", (), End.CLOSE, Failure.CLOSED)

    def truncated_hold(self, cid: str) -> Case:
        return Case("truncated-then-silent", (self._cut(cid),), End.HOLD, Failure.TIMEOUT)

    def eb_without_cr(self, cid: str) -> Case:
        return Case("end-block-without-CR", (SB + _ack("AA", cid) + b"\x1c",), End.HOLD,
                    Failure.TIMEOUT)

    def no_answer_hold(self, cid: str) -> Case:
        return Case("no-answer", (), End.HOLD, Failure.TIMEOUT)

    def slow_dribble(self, cid: str) -> Case:
        whole = SB + _ack("AA", cid) + TRAILER
        chunks = tuple(whole[i:i + 8] for i in range(0, len(whole), 8))
        # more than the ACK timeout between the first and the last byte, whatever the load
        return Case("slow-dribble", chunks, End.HOLD, Failure.TIMEOUT,
                    delay_s=2 * ACK_TIMEOUT_S / (len(chunks) - 1))

    def fast_dribble(self, cid: str) -> Case:
        code = self.rng.choice(["AA", "AE"])
        whole = self.framed(_ack(code, cid, text=self.text()))
        cuts = sorted(self.rng.sample(range(1, len(whole)), min(20, len(whole) - 1)))
        chunks = tuple(whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True))
        return Case(f"fast-dribble-{code}", chunks, self.end(),
                    None if code == "AA" else Failure.NEGATIVE_ACK)

    def big_valid(self, cid: str) -> Case:
        body = _ack("AA", cid, text="x" * (MAX_ACK_BYTES // 8))  # large, but an ACK
        return Case("large-valid", (self.framed(body),), End.CLOSE, None)

    def oversize(self, cid: str) -> Case:
        return Case("oversize", (SB + b"MSH|" + b"x" * (2 * MAX_ACK_BYTES),), End.HOLD,
                    Failure.BAD_ANSWER)


class FuzzPeer:
    """An MLLP peer that answers each message with the case of its control ID (MSH-10)."""

    def __init__(self, cases: dict[str, Case]) -> None:
        self.cases = cases
        self.answered: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="fuzz-peer", daemon=True)

    def __enter__(self) -> FuzzPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # Linux wakes accept() on close as well
        self._server.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(HOLD_LIMIT_S)
            try:
                case = self._read_case(conn)
                if case is not None:
                    self._play(conn, case)
            except OSError:
                return  # the client gave up first: that is its timeout working

    def _read_case(self, conn: socket.socket) -> Case | None:
        data = b""
        while TRAILER not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None  # a probe: connect and close
            data += chunk
        control_id = data[1:].split(b"\r")[0].split(b"|")[9].decode()
        with self._lock:
            self.answered[control_id] += 1
        return self.cases[control_id]

    def _play(self, conn: socket.socket, case: Case) -> None:
        for n, chunk in enumerate(case.chunks):
            if n and case.delay_s and self._done.wait(case.delay_s):
                return
            conn.sendall(chunk)
        if case.end is End.RESET:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif case.end is End.HOLD:
            while conn.recv(65536):
                pass  # until the client closes


@pytest.fixture
def outbox(database: Path | str) -> Iterator[Outbox]:
    box = Outbox(database)  # SQLite and PostgreSQL (tests/conftest.py)
    yield box
    box.close()


def _oru(control_id: str) -> str:
    return (f"MSH|^~\\&|CXRGATEWAY||RIS||20260101120000||ORU^R01^ORU_R01|{control_id}|P|2.5.1"
            "\rPID|1||FUZZ^^^^MR")


def test_fuzzed_acks_have_defined_outcomes(outbox: Outbox) -> None:
    fuzz = Fuzz(SEED)
    cases = {f"FUZZ{SEED:04d}{n:04d}": fuzz.case(f"FUZZ{SEED:04d}{n:04d}") for n in range(CASES)}
    lanes = [f"ris-{n}" for n in range(LANES)]
    outbox.enqueue([NewDelivery(f"1.2.826.0.1.3680043.8.498.9{n}", 1, Kind.ORU, cid, Channel.HL7,
                                lanes[n % LANES], _oru(cid))
                    for n, cid in enumerate(cases)])
    stop = threading.Event()
    with FuzzPeer(cases) as peer:
        destinations = {name: Hl7Destination(name=name, host="127.0.0.1", port=peer.port)
                        for name in lanes}
        senders: dict[Channel, Sender] = {
            Channel.HL7: MllpSender(destinations, 2.0, ACK_TIMEOUT_S)}
        policy = DeliveryPolicy(retry_window_s=0.5, backoff_base_s=0.2, backoff_max_s=0.2,
                                probe_interval_s=0.2)
        dispatcher = Dispatcher(outbox, senders, policy, stop, 0.05,
                                [(Channel.HL7, name) for name in lanes])
        dispatcher.start()
        try:
            _wait_until_settled(outbox)
            alive = dispatcher.is_alive() and all(
                lane.is_alive() for lane in dispatcher.lanes.values())
        finally:
            stop.set()
            dispatcher.wake()
            dispatcher.join(30)
    assert alive, "a lane or the dispatcher died"
    _check_outcomes(outbox, cases, peer.answered)


def _wait_until_settled(outbox: Outbox) -> None:
    """Until no row is pending (a hang guard; the test asserts on states only)."""
    deadline = time.monotonic() + 300
    while outbox.counts()[RowState.PENDING] and time.monotonic() < deadline:
        time.sleep(0.1)


def _check_outcomes(outbox: Outbox, cases: dict[str, Case], answered: Counter[str]) -> None:
    wrong = []
    for row in outbox.rows(limit=10 * CASES):
        case = cases[row.object_uid]
        error = str(row.last_error)
        if case.expect is None:
            ok = row.state is RowState.DELIVERED
        else:
            ok = row.state is RowState.DEAD and f": {case.expect.value}" in error
        if not ok:
            wrong.append(f"{row.object_uid} {case.kind}: {row.state} after {row.attempts} "
                         f"attempt(s), expected {case.expect or 'delivered'}; last error {error}")
    kinds = Counter(c.kind for c in cases.values())
    assert not wrong, f"seed {SEED}: {len(wrong)} of {len(cases)} wrong:\n" + "\n".join(wrong)
    assert len(kinds) >= 20, kinds  # the seed covers every family of faults
    assert all(answered[cid] >= 1 for cid in cases)  # every case was played at least once
