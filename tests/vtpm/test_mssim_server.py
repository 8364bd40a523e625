"""The vTPM's TCP server (``mssim`` protocol), driven over real sockets: the framing of commands
and responses, the platform signals, the frames it refuses, and failure mode when the state
cannot be saved. (Real tools against the same server: tests/interop/test_vtpm_server.py.)"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from cvm.errors import StateError, StatusError
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.mssim_server import (
    MAX_BUFFER,
    POWER_OFF,
    POWER_ON,
    TPM_SEND_COMMAND,
    TPM_SESSION_END,
    MssimServer,
)

PCR = 16


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _receive(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def _closed(connection: socket.socket) -> bool:
    """The server closed ``connection`` (an orderly end, not a time-out)."""
    return connection.recv(1) == b""


@dataclass
class Running:
    server: MssimServer
    port: int
    saved: list[bytes] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    broken: list[BaseException] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def connect(self, platform: bool = False) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port + platform), timeout=10)
        self.sockets.append(connection)
        return connection

    def send(self, connection: socket.socket, command: bytes, locality: int = 0) -> bytes:
        """One TPM_SEND_COMMAND frame; the response, its size and the trailing zero checked."""
        connection.sendall(_u32(TPM_SEND_COMMAND) + bytes([locality]) + _u32(len(command))
                           + command)
        size = int.from_bytes(_receive(connection, 4), "big")
        response = _receive(connection, size)
        assert _receive(connection, 4) == bytes(4)
        return response

    def client(self) -> TpmClient:
        connection = self.connect()
        return TpmClient(lambda command: self.send(connection, command))

    def signal(self, value: int) -> None:
        platform = self.connect(platform=True)
        platform.sendall(_u32(value))
        assert _receive(platform, 4) == bytes(4)


@pytest.fixture
def running(free_port_pair: Callable[[], int]) -> Iterator[Running]:
    port = free_port_pair()
    holder: list[Running] = []

    def on_change(tpm: Tpm) -> None:
        if holder[0].broken:
            raise holder[0].broken[0]
        holder[0].saved.append(tpm.state.to_bytes())

    reports: list[str] = []
    server = MssimServer(Tpm(), port, on_change=on_change, report=reports.append)
    holder.append(Running(server, port, reports=reports))
    server.start()
    try:
        yield holder[0]
    finally:
        for connection in holder[0].sockets:
            connection.close()
        server.stop()


def _pcr(client: TpmClient) -> bytes:
    _, _, values = client.pcr_read(PcrSelectionList.of(TpmAlg.SHA256, [PCR]))
    return values[0]


def test_a_command_is_answered_size_response_and_a_zero_word(running: Running) -> None:
    client = running.client()
    assert _pcr(client) == bytes(32)  # started at power-on (startup_clear): PCR_Read works
    client.pcr_extend(PCR, {TpmAlg.SHA256: b"\x11" * 32})
    assert _pcr(client) != bytes(32)
    assert len(client.get_random(16)) == 16


def test_only_changes_to_the_non_volatile_state_are_saved(running: Running) -> None:
    client = running.client()
    _pcr(client)  # the first command saves what Startup changed
    saved = len(running.saved)
    client.pcr_extend(PCR, {TpmAlg.SHA256: b"\x11" * 32})
    _pcr(client)
    assert len(running.saved) == saved  # PCRs are volatile
    client.hierarchy_change_auth(TpmRh.OWNER, b"new owner auth")
    assert running.saved[saved:] == [running.server.tpm.state.to_bytes()]
    assert not running.server.tpm.changed


def test_power_off_answers_failure_and_power_on_restarts_the_tpm(running: Running) -> None:
    client = running.client()
    client.pcr_extend(PCR, {TpmAlg.SHA256: b"\x11" * 32})
    client.hierarchy_change_auth(TpmRh.OWNER, b"kept across power")
    before = running.server.tpm
    running.signal(POWER_OFF)
    with pytest.raises(StatusError) as failed:
        _pcr(client)
    assert failed.value.code == TpmRc.FAILURE
    running.signal(POWER_ON)
    assert running.server.tpm is not before  # a new TPM from the same non-volatile state
    assert running.server.tpm.state.to_bytes() == before.state.to_bytes()
    assert _pcr(client) == bytes(32)  # PCRs reset by the restart


def test_power_on_while_powered_changes_nothing(running: Running) -> None:
    client = running.client()
    client.pcr_extend(PCR, {TpmAlg.SHA256: b"\x11" * 32})
    before = running.server.tpm
    running.signal(POWER_ON)
    assert running.server.tpm is before and _pcr(client) != bytes(32)


def test_the_platform_port_ends_at_session_end_and_acknowledges_other_signals(
        running: Running) -> None:
    platform = running.connect(platform=True)
    for value in (9, 10, 11, 0x1234):  # CANCEL_ON, CANCEL_OFF, NV_ON, unknown: each acknowledged
        platform.sendall(_u32(value))
        assert _receive(platform, 4) == bytes(4)
    platform.sendall(_u32(TPM_SESSION_END))
    assert _closed(platform)
    assert running.server.powered


@pytest.mark.parametrize("frame", [
    _u32(TPM_SESSION_END),
    _u32(TPM_SEND_COMMAND + 1) + bytes(5),
    _u32(TPM_SEND_COMMAND) + b"\x00" + _u32(MAX_BUFFER + 1) + bytes(MAX_BUFFER + 1),
    # a size whose low three bytes alone would be a GetRandom's: all four bytes count
    _u32(TPM_SEND_COMMAND) + b"\x00" + _u32((1 << 24) + 12)
    + bytes.fromhex("80010000000c0000017b0010"),
], ids=["session-end", "another-signal", "oversized-command", "size-over-24-bits"])
def test_a_frame_the_server_does_not_take_ends_that_connection_only(
        running: Running, frame: bytes) -> None:
    other = running.client()
    other.pcr_extend(PCR, {TpmAlg.SHA256: b"\x11" * 32})
    value = _pcr(other)
    connection = running.connect()
    connection.sendall(frame)
    assert _closed(connection)
    assert _pcr(other) == value  # nothing was executed; the other connection still served


def test_a_command_of_max_buffer_bytes_is_still_executed(running: Running) -> None:
    connection = running.connect()
    command = bytes(MAX_BUFFER)  # malformed, but of the largest size taken: answered, not dropped
    response = running.send(connection, command)
    assert int.from_bytes(response[6:10], "big") != TpmRc.SUCCESS


@pytest.mark.parametrize("cut", [2, 4 + 3, 4 + 5 + 10], ids=["signal", "header", "command"])
def test_a_connection_closed_mid_frame_leaves_the_server_serving(
        running: Running, cut: int) -> None:
    command = bytes.fromhex("80010000000c0000017b0010")  # GetRandom(16)
    frame = _u32(TPM_SEND_COMMAND) + b"\x00" + _u32(len(command)) + command
    connection = running.connect()
    connection.sendall(frame[:cut])
    connection.shutdown(socket.SHUT_WR)
    assert _closed(connection)
    assert len(running.client().get_random(16)) == 16


def test_a_state_that_cannot_be_saved_puts_the_server_in_failure_mode(
        running: Running) -> None:
    client = running.client()
    _pcr(client)
    saved = len(running.saved)
    running.broken.append(OSError(28, "No space left on device"))
    with pytest.raises(StatusError) as failed:
        client.hierarchy_change_auth(TpmRh.OWNER, b"never saved")
    assert failed.value.code == TpmRc.FAILURE
    assert running.reports == [
        "cvm: the vTPM state could not be saved: [Errno 28] No space left on device; every "
        "command now fails until the server is restarted"]
    assert running.server.failure is not None
    running.broken.clear()  # the disk has room again: still failing, the TPM ran ahead of it
    for _ in range(2):
        with pytest.raises(StatusError) as again:
            _pcr(client)
        assert again.value.code == TpmRc.FAILURE
    running.signal(POWER_OFF)
    running.signal(POWER_ON)  # failure mode outlasts a power cycle
    with pytest.raises(StatusError):
        running.client().get_random(8)
    assert len(running.saved) == saved and len(running.reports) == 1


def test_a_cvm_error_while_saving_is_failure_mode_too(running: Running) -> None:
    running.broken.append(StateError("rollback counter could not advance"))
    with pytest.raises(StatusError):
        running.client().hierarchy_change_auth(TpmRh.OWNER, b"x")
    assert running.server.failure == ("the vTPM state could not be saved: rollback counter "
                                      "could not advance")


def test_the_default_report_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str],
                                                  free_port_pair: Callable[[], int]) -> None:
    def broken(tpm: Tpm) -> None:
        raise OSError(5, "Input/output error")

    server = MssimServer(Tpm(), free_port_pair(), on_change=broken)
    try:
        client = TpmClient(lambda command: server._execute(command, 0))
        with pytest.raises(StatusError):
            client.hierarchy_change_auth(TpmRh.OWNER, b"x")
    finally:
        server.stop()
    assert capsys.readouterr().err == (
        "cvm: the vTPM state could not be saved: [Errno 5] Input/output error; every command "
        "now fails until the server is restarted\n")


FAILURE_RESPONSE = bytes.fromhex("8001" "0000000a" "00000101")  # TPM_ST_NO_SESSIONS, FAILURE
GET_RANDOM_16 = bytes.fromhex("80010000000c0000017b0010")


def _frame(command: bytes, locality: int = 0) -> bytes:
    return _u32(TPM_SEND_COMMAND) + bytes([locality]) + _u32(len(command)) + command


def test_the_failure_answer_is_the_bare_no_sessions_response(running: Running) -> None:
    connection = running.connect()
    running.signal(POWER_OFF)
    assert running.send(connection, GET_RANDOM_16) == FAILURE_RESPONSE
    running.server.failure = "the vTPM state could not be saved: test"
    running.signal(POWER_ON)
    assert running.send(connection, GET_RANDOM_16) == FAILURE_RESPONSE


def test_the_frame_s_locality_reaches_the_tpm(running: Running) -> None:
    connection = running.connect()
    refused = running.send(connection, GET_RANDOM_16, locality=5)  # no locality 5 (TPMA_LOCALITY)
    assert int.from_bytes(refused[6:10], "big") == TpmRc.LOCALITY
    taken = running.send(connection, GET_RANDOM_16, locality=3)
    assert int.from_bytes(taken[6:10], "big") == TpmRc.SUCCESS and len(taken) == 10 + 2 + 16


def test_frames_arriving_in_pieces_and_back_to_back_are_read_whole(running: Running) -> None:
    stream = _frame(GET_RANDOM_16) + _frame(GET_RANDOM_16, locality=5)
    connection = running.connect()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for start in range(0, len(stream), 3):  # 3 bytes at a time: every field split somewhere
        connection.sendall(stream[start : start + 3])
        time.sleep(0.002)
    answers = []
    for _ in range(2):
        size = int.from_bytes(_receive(connection, 4), "big")
        answers.append(_receive(connection, size))
        assert _receive(connection, 4) == bytes(4)
    assert int.from_bytes(answers[0][6:10], "big") == TpmRc.SUCCESS
    assert int.from_bytes(answers[1][6:10], "big") == TpmRc.LOCALITY


def test_a_power_cycle_keeps_the_tpm_s_clock_randomness_and_da_hook(
        free_port_pair: Callable[[], int]) -> None:
    ticks, drawn, hooked = [1000.0], [], []

    def random(size: int) -> bytes:
        drawn.append(size)
        return bytes(size)

    tpm = Tpm(random=random, clock=lambda: ticks[0])
    tpm.on_da_used = lambda: hooked.append(True)
    server = MssimServer(tpm, free_port_pair())
    try:
        server.powered = False
        server.power_on()
        restarted = server.tpm
        assert restarted is not tpm and restarted.started
        assert restarted.clock is tpm.clock and restarted.random is random
        assert restarted.on_da_used is tpm.on_da_used
    finally:
        server.stop()


def test_without_startup_clear_the_tpm_waits_for_startup(
        free_port_pair: Callable[[], int]) -> None:
    server = MssimServer(Tpm(), free_port_pair(), startup_clear=False)
    try:
        assert not server.tpm.started
        response = server._execute(GET_RANDOM_16, 0)
        assert int.from_bytes(response[6:10], "big") == TpmRc.INITIALIZE
    finally:
        server.stop()


def test_serve_forever_serves_both_ports_until_stopped(
        free_port_pair: Callable[[], int]) -> None:
    port = free_port_pair()
    server = MssimServer(Tpm(), port)
    main = threading.Thread(target=server.serve_forever)
    main.start()
    running = Running(server, port)
    try:
        assert len(running.client().get_random(8)) == 8
        running.signal(POWER_OFF)
        assert not server.powered
    finally:
        for connection in running.sockets:
            connection.close()
        server.stop()
    main.join(5)
    assert not main.is_alive()
    assert all(thread.daemon for thread in server._threads)
    for thread in server._threads:
        thread.join(5)
        assert not thread.is_alive()


def test_start_runs_daemon_threads_that_stop_ends(free_port_pair: Callable[[], int]) -> None:
    server = MssimServer(Tpm(), free_port_pair())
    server.start()
    threads = list(server._threads)
    assert len(threads) == 2 and all(thread.daemon for thread in threads)
    assert all(listener.daemon_threads for listener in server._servers)  # nor its connections
    server.stop()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


def test_a_restarted_server_takes_the_same_ports_at_once(
        free_port_pair: Callable[[], int]) -> None:
    """The server ends connections first (TIME_WAIT on its ports): it must rebind anyway."""
    port = free_port_pair()
    for _ in range(2):
        server = MssimServer(Tpm(), port)
        server.start()
        running = Running(server, port)
        try:
            platform = running.connect(platform=True)
            platform.sendall(_u32(TPM_SESSION_END))
            assert _closed(platform)
            connection = running.connect()
            connection.sendall(_u32(TPM_SESSION_END))
            assert _closed(connection)
        finally:
            for connection in running.sockets:
                connection.close()
            server.stop()


@pytest.mark.parametrize("taken", [0, 1], ids=["tpm-port", "platform-port"])
def test_a_port_in_use_is_the_os_error_with_the_address_as_its_name(
        free_port_pair: Callable[[], int], taken: int) -> None:
    import errno

    port = free_port_pair()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port + taken))
        other.listen()
        with pytest.raises(OSError) as refused:
            MssimServer(Tpm(), port)
    assert refused.value.errno == errno.EADDRINUSE
    assert refused.value.filename == f"127.0.0.1:{port + taken}"
    assert refused.value.strerror == "cannot listen: Address already in use"
    MssimServer(Tpm(), port).stop()  # the first listener was closed: both ports are free again
