"""MLLP: framing fed as bytes (unit), and the client against a real listener on loopback."""

from __future__ import annotations

import datetime
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hl7_link.ack import AckCode
from hl7_link.errors import AckError, FramingError, MllpConnectionError, MllpTimeout
from hl7_link.mllp import END_BLOCK, START_BLOCK, FrameDecoder, MllpClient, frame, unframe
from hl7_link.oru import Hl7Endpoints, StudyFacts, build_oru, control_id_for
from tests.mllp_listener import Answer, MllpListener
from tests.results_support import STUDY_UID, prediction, source

NOW = datetime.datetime(2024, 1, 2, 12, 0, 0)


def _oru(control_id: str = control_id_for(STUDY_UID, "1")) -> tuple[str, str]:
    facts = StudyFacts.from_dataset(source(1))
    return build_oru(facts, prediction(0.9, 0.1), Hl7Endpoints(), control_id, NOW), control_id


def test_frame_wraps_in_start_and_end_block() -> None:
    assert frame("MSH|x\rPID|y") == b"\x0bMSH|x\rPID|y\x1c\x0d"
    assert frame("Zoë") == b"\x0bZo\xc3\xab\x1c\x0d"
    with pytest.raises(FramingError, match="0x0B"):
        frame(b"bad\x0bpayload")


def test_decoder_reassembles_split_and_joined_frames() -> None:
    decoder = FrameDecoder()
    data = frame("first") + b"\r\n" + frame("second")
    found = []
    for i in range(len(data)):  # one byte at a time
        found.extend(decoder.feed(data[i:i + 1]))
    assert found == [b"first", b"second"] and decoder.pending == 0
    assert FrameDecoder().feed(frame("a") + frame("b")) == [b"a", b"b"]
    partial = FrameDecoder()
    assert partial.feed(b"\x0bhalf") == [] and partial.pending == 5


def test_decoder_refuses_garbage_and_oversized_frames() -> None:
    with pytest.raises(FramingError, match="start block"):
        FrameDecoder().feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(FramingError, match="larger"):
        FrameDecoder(max_bytes=10).feed(START_BLOCK + b"x" * 20)
    with pytest.raises(FramingError, match="one complete"):
        unframe(frame("a") + frame("b"))
    with pytest.raises(FramingError, match="one complete"):
        unframe(START_BLOCK + b"no end")
    assert unframe(frame("ok")) == b"ok"
    assert END_BLOCK not in unframe(frame("payload"))


@pytest.fixture
def listener() -> Iterator[MllpListener]:
    with MllpListener() as peer:
        yield peer


def _client(peer: MllpListener, ack_timeout: float = 5.0) -> MllpClient:
    return MllpClient("127.0.0.1", peer.port, connect_timeout=2.0, ack_timeout=ack_timeout)


@pytest.mark.slow
def test_accepted_message_arrives_parsed(listener: MllpListener) -> None:
    message, control_id = _oru()
    ack = _client(listener).send(message, control_id)
    assert ack.code is AckCode.APPLICATION_ACCEPT and ack.accepted
    assert ack.control_id == control_id
    assert listener.received == [message]
    parsed = listener.parsed[0]
    pid = parsed.oru_r01_patient_result.oru_r01_patient.pid
    assert pid.pid_3.pid_3_1.to_er7() == "CXR-0001"
    assert parsed.msh.msh_10.to_er7() == control_id


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "code"), [
    (Answer.ERROR, AckCode.APPLICATION_ERROR), (Answer.REJECT, AckCode.APPLICATION_REJECT)])
def test_negative_acks_are_returned_not_raised(listener: MllpListener, answer: Answer,
                                               code: AckCode) -> None:
    listener.answer = answer
    message, control_id = _oru()
    ack = _client(listener).send(message, control_id)
    assert ack.code is code and not ack.accepted
    assert ack.text in ("error & retry", "rejected")


@pytest.mark.slow
def test_scripted_answers_then_default(listener: MllpListener) -> None:
    listener.scripted.extend([Answer.ERROR, Answer.REJECT])
    client = _client(listener)
    codes = [client.send(*_oru(control_id_for(STUDY_UID, str(i)))).code for i in range(3)]
    assert codes == [AckCode.APPLICATION_ERROR, AckCode.APPLICATION_REJECT,
                     AckCode.APPLICATION_ACCEPT]
    assert len(listener.received) == 3


@pytest.mark.slow
def test_silent_peer_times_out(listener: MllpListener) -> None:
    listener.answer = Answer.SILENT
    started = time.monotonic()
    with pytest.raises(MllpTimeout, match="no ACK within 0.5"):
        _client(listener, ack_timeout=0.5).send(*_oru())
    assert 0.4 < time.monotonic() - started < 3.0
    assert len(listener.received) == 1  # it did arrive; only the answer is missing


@pytest.mark.slow
def test_peer_closing_without_answer_is_a_connection_error(listener: MllpListener) -> None:
    listener.answer = Answer.CLOSE
    with pytest.raises(MllpConnectionError, match="without an ACK"):
        _client(listener).send(*_oru())


@pytest.mark.slow
def test_refused_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MllpConnectionError, match=f"127.0.0.1:{port}"):
        MllpClient("127.0.0.1", port, connect_timeout=2.0).send(*_oru())


@pytest.mark.slow
def test_answer_in_pieces_and_wrong_control_id() -> None:
    """A hand-rolled peer that dribbles its ACK byte by byte, acknowledging another message."""
    ack = b"MSH|^~\\&|R|H|G|H|2024||ACK|1|P|2.5.1\rMSA|AA|SOMEONE-ELSE\r"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        thread = threading.Thread(target=_dribble, args=(server, frame(ack)), daemon=True)
        thread.start()
        client = MllpClient("127.0.0.1", server.getsockname()[1], ack_timeout=5.0)
        with pytest.raises(AckError, match="acknowledges another message"):
            client.send(*_oru())
        thread.join(timeout=5)


def _dribble(server: socket.socket, answer: bytes) -> None:
    conn, _ = server.accept()
    with conn:
        decoder = FrameDecoder()
        while not decoder.feed(conn.recv(4096)):
            pass
        for i in range(len(answer)):
            conn.sendall(answer[i:i + 1])
