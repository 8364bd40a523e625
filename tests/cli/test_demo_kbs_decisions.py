"""``cvm demo --kbs``, one decision at a time: the broker's port (held until it listens), its
admin token, command line, start and stop; the audit rows read and judged; what held and the
exit code. The whole story on a real broker and real boots is
``tests/attestation/kbs/test_demo_kbs.py``; here the story runs on recorded parts."""

from __future__ import annotations

import errno
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.cli import demo_kbs
from cvm.errors import CvmError, ExternalToolError, FormatError, PolicyError
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import Leak

RESOURCE = "default/vtpm/state-key-2"  # its 2 a number rich would highlight
SESSION = "s1"


def _row(number: int, action: str, outcome: str, subject: str | None = None,
         session: str = SESSION, findings: list[dict[str, str]] | None = None
         ) -> dict[str, Any]:
    return {"id": number, "action": action, "outcome": outcome, "subject": subject,
            "session_id": session, "findings": findings or []}


AFFIRMED = _row(4, "attest", "affirmed", "unchecked: [pcrs]")  # not rich markup
RELEASED = _row(5, "resource", "released", f"{RESOURCE} (session {SESSION})")
MEASUREMENT = {"rule": "measurement", "expected": "aa", "actual": "bb", "input": ""}
DENIED = _row(6, "attest", "denied", None, "s2", [MEASUREMENT])
LEAK = Leak("vTPM state key", 8, "DRAM", 0x40)


# --- the port, the token, the command line ------------------------------------------------

def test_the_reserved_port_keeps_others_out_and_lets_the_broker_listen() -> None:
    with demo_kbs.reserve_port() as holder:
        host, port = holder.getsockname()
        assert host == "127.0.0.1" and port > 0
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        with pytest.raises(ConnectionRefusedError):  # held, not listening
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        with demo_kbs.reserve_port() as another:  # a port of its own, not this one
            assert another.getsockname()[1] != port
        with socket.socket() as broker:  # binds as uvicorn does
            broker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            broker.bind(("127.0.0.1", port))
            broker.listen()
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_port_that_cannot_be_held_closes_its_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []

    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(errno.EADDRNOTAVAIL, "no address")

    original_close = socket.socket.close

    def close(self: socket.socket) -> None:
        closed.append(True)
        original_close(self)

    monkeypatch.setattr(socket.socket, "bind", refuse)
    monkeypatch.setattr(socket.socket, "close", close)
    with pytest.raises(OSError) as refused:
        demo_kbs.reserve_port()
    assert refused.value.errno == errno.EADDRNOTAVAIL and closed == [True]


def test_the_admin_token_is_new_random_and_private_from_the_start(tmp_path: Path) -> None:
    first = demo_kbs.write_admin_token(tmp_path / "token")
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert (tmp_path / "token").read_text() == first + "\n"
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600
    assert demo_kbs.write_admin_token(tmp_path / "token") != first


def test_the_broker_command_line(tmp_path: Path) -> None:
    token = tmp_path / "t"
    assert demo_kbs.broker_command(tmp_path, 4321, token) == [
        sys.executable, "-c", "from cvm.cli.main import run; run()", "kbs", "serve",
        "--db", f"sqlite:///{tmp_path}/kbs.db", "--host", "127.0.0.1", "--port", "4321",
        "--kek-file", f"{tmp_path}/kbs-kek.hex", "--admin-token-file", str(token),
        "--trust", "emulated"]


# --- waiting for the broker, stopping it --------------------------------------------------

@dataclass
class Process:
    """A stand-in for the broker's process: ``poll`` answers from ``statuses`` in turn."""

    statuses: list[int | None]
    polls: int = 0

    def poll(self) -> int | None:
        self.polls += 1
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


@dataclass
class Clock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(demo_kbs.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(demo_kbs.time, "sleep", fake.sleep)
    return fake


def _wait(process: Process, port: int, log: Path, timeout: float) -> None:
    demo_kbs.wait_listening(process, port, log, timeout)  # type: ignore[arg-type]


def test_waiting_ends_when_the_port_listens(tmp_path: Path, clock: Clock) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        process = Process([None])
        _wait(process, server.getsockname()[1], tmp_path / "log", 5.0)
    assert process.polls == 1 and clock.sleeps == []


def test_a_port_not_listening_is_polled_every_tenth_of_a_second_until_the_timeout(
        tmp_path: Path, clock: Clock) -> None:
    with demo_kbs.reserve_port() as holder:
        port = holder.getsockname()[1]
        process = Process([None])
        with pytest.raises(ExternalToolError) as late:
            _wait(process, port, tmp_path / "log", 1.0)
    assert str(late.value) == f"cvm kbs serve did not listen on port {port} in 1 s"
    assert late.value.__suppress_context__
    assert clock.sleeps == [0.1] * len(clock.sleeps) and 10 <= len(clock.sleeps) <= 11
    assert clock.now >= 1001.0 and process.polls == len(clock.sleeps) + 1


def test_the_default_timeout_is_a_minute(tmp_path: Path, clock: Clock) -> None:
    with demo_kbs.reserve_port() as holder:
        port = holder.getsockname()[1]
        with pytest.raises(ExternalToolError, match=r" in 60 s$"):
            demo_kbs.wait_listening(Process([None]), port, tmp_path / "log")  # type: ignore[arg-type]
    assert 600 <= len(clock.sleeps) <= 601


def test_the_deadline_itself_is_too_late(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    times = iter([0.0, 1.0])
    monkeypatch.setattr(demo_kbs.time, "monotonic", lambda: next(times))
    monkeypatch.setattr(demo_kbs.time, "sleep", lambda seconds: pytest.fail("slept"))
    with demo_kbs.reserve_port() as holder, pytest.raises(ExternalToolError):
        _wait(Process([None]), holder.getsockname()[1], tmp_path / "log", 1.0)


def test_a_broker_that_stopped_is_its_status_and_the_end_of_its_log(tmp_path: Path,
                                                                     clock: Clock) -> None:
    log = tmp_path / "log"
    log.write_text("x" * 400 + "cvm: error: the end\n\n")
    tail = ("x" * 400 + "cvm: error: the end")[-300:]
    with demo_kbs.reserve_port() as holder:
        process = Process([None, None, 3])
        with pytest.raises(ExternalToolError) as stopped:
            _wait(process, holder.getsockname()[1], log, 60.0)
    assert str(stopped.value) == f"cvm kbs serve stopped at start (exit 3): {tail}"
    assert clock.sleeps == [0.1, 0.1]


def test_a_log_that_is_not_text_is_shown_all_the_same(tmp_path: Path, clock: Clock) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"bad \xff byte")
    with pytest.raises(ExternalToolError) as stopped:
        _wait(Process([0]), 1, log, 60.0)
    assert str(stopped.value) == "cvm kbs serve stopped at start (exit 0): bad \ufffd byte"


def _sleeper(ignore_term: bool) -> subprocess.Popen[bytes]:
    code = ("import signal, sys, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
            + "print('ready', flush=True)\ntime.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    process.stdout.close()
    return process


def test_stop_terminates_the_broker() -> None:
    process = _sleeper(ignore_term=False)
    assert demo_kbs.stop(process) == -signal.SIGTERM
    assert process.returncode == -signal.SIGTERM


def test_stop_kills_a_broker_that_ignores_sigterm_after_the_timeout() -> None:
    process = _sleeper(ignore_term=True)
    assert demo_kbs.stop(process, timeout=0.5) == -signal.SIGKILL
    assert process.returncode == -signal.SIGKILL


def test_stop_waits_ten_seconds_before_killing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    class Stubborn:
        def terminate(self) -> None:
            calls.append("terminate")

        def kill(self) -> None:
            calls.append("kill")

        def wait(self, timeout: float | None = None) -> int:
            calls.append(timeout)
            if timeout is not None:
                raise subprocess.TimeoutExpired("broker", timeout)
            return -9

    assert demo_kbs.stop(Stubborn()) == -9  # type: ignore[arg-type]
    assert calls == ["terminate", 10.0, "kill", None]


def test_the_broker_starts_on_the_held_port_into_its_log(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[list[str], dict[str, Any]]] = []

    def popen(command: list[str], **options: Any) -> str:
        seen.append((command, options))
        return "process"

    monkeypatch.setattr(demo_kbs.subprocess, "Popen", popen)
    with demo_kbs.reserve_port() as holder, (tmp_path / "log").open("wb") as log:
        port = holder.getsockname()[1]
        assert demo_kbs.start_broker(tmp_path, holder, log) == ("process", port)
    [(command, options)] = seen
    assert command == demo_kbs.broker_command(tmp_path, port, tmp_path / "kbs-admin.token")
    assert options == {"stdout": log, "stderr": subprocess.STDOUT}
    assert demo_kbs.broker_url(8080) == "http://127.0.0.1:8080"


# --- the broker process, for real -----------------------------------------------------------

@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every process broker_process starts; a socket bound to its port as it starts must
    fail (the port is held for the broker)."""
    RootStore.for_workspace(DEFAULT_WORKSPACE).vendor("Milan", create=True)  # the roots trusted
    processes: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def popen(command: list[str], **options: Any) -> subprocess.Popen[bytes]:
        port = int(command[command.index("--port") + 1])
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
            other.listen()
        assert taken.value.errno == errno.EADDRINUSE
        process = real(command, **options)
        processes.append(process)
        return process

    monkeypatch.setattr(demo_kbs.subprocess, "Popen", popen)
    return processes


def test_the_broker_runs_on_its_held_port_with_its_token_and_stops(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    with demo_kbs.broker_process(tmp_path) as (url, token):
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}"
        assert (tmp_path / "kbs-admin.token").read_text() == token + "\n"
        assert stat.S_IMODE((tmp_path / "kbs-admin.token").stat().st_mode) == 0o600
        with demo_kbs.admin_client(url, token) as client:
            assert demo_kbs.audit_rows(client, 0) == []
        with demo_kbs.admin_client(url, "not-the-token") as client, pytest.raises(
                ExternalToolError, match=r"^the broker's audit log: 401 "):
            demo_kbs.audit_rows(client, 0)
        assert (tmp_path / "kbs.db").is_file() and (tmp_path / "kbs-kek.hex").is_file()
        assert (tmp_path / "kbs.log").is_file()
    [process] = started
    assert process.returncode is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_broker_that_cannot_start_is_an_error_and_is_cleaned_up(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    (tmp_path / "kbs-kek.hex").write_text("not hex\n")
    body_ran = False
    with pytest.raises(ExternalToolError) as refused, demo_kbs.broker_process(tmp_path):
        body_ran = True
    assert not body_ran
    assert str(refused.value) == (
        f"cvm kbs serve stopped at start (exit 64): cvm: error: {tmp_path}/kbs-kek.hex: the "
        "key-encryption key must be 64 hex digits")
    [process] = started
    assert process.returncode == 64


def test_the_broker_is_stopped_when_the_story_fails(
        tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> None:
    with pytest.raises(PolicyError), demo_kbs.broker_process(tmp_path):
        raise PolicyError("the story failed")
    [process] = started
    assert process.returncode == -signal.SIGTERM


# --- the audit log ------------------------------------------------------------------------

def _client(status: int, body: object, seen: list[httpx.Request]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.Client(base_url="http://broker", transport=httpx.MockTransport(answer))


def test_the_audit_rows_after_a_row() -> None:
    seen: list[httpx.Request] = []
    assert demo_kbs.audit_rows(_client(200, [AFFIRMED], seen), 3) == [AFFIRMED]
    [request] = seen
    assert request.method == "GET" and request.url.path == "/kbs/v0/audit"
    assert dict(request.url.params) == {"after": "3", "limit": "1000"}


@pytest.mark.parametrize("status", [201, 401, 500])
def test_an_audit_answer_not_200_is_an_error(status: int) -> None:
    with pytest.raises(ExternalToolError) as refused:
        demo_kbs.audit_rows(_client(status, {"detail": "x" * 300}, []), 0)
    assert str(refused.value) == (f"the broker's audit log: {status} "
                                  + ('{"detail":"' + "x" * 300)[:200])


@pytest.mark.parametrize("body", [{"rows": []}, [AFFIRMED, 3], "rows"])
def test_an_audit_answer_that_is_not_rows_is_an_error(body: object) -> None:
    with pytest.raises(FormatError, match=r"^the broker's audit log is not a list of rows$"):
        demo_kbs.audit_rows(_client(200, body, []), 0)


def test_an_audit_answer_that_is_not_json_is_an_error() -> None:
    client = httpx.Client(base_url="http://broker", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, text="<html>")))
    with pytest.raises(FormatError, match=r"^the broker's audit log is not JSON$") as refused:
        demo_kbs.audit_rows(client, 0)
    assert refused.value.__suppress_context__


def test_the_admin_client() -> None:
    with demo_kbs.admin_client("http://127.0.0.1:9", "tok") as client:
        assert str(client.base_url) == "http://127.0.0.1:9"
        assert client.headers["authorization"] == "Bearer tok"
        assert client.timeout == httpx.Timeout(30.0)


def test_the_last_row() -> None:
    assert demo_kbs.last_row([AFFIRMED, DENIED, RELEASED], 2) == 6
    assert demo_kbs.last_row([], 2) == 2


def test_the_audit_lines() -> None:
    long = _row(7, "resource", "released", "r" * 120)
    hinted = _row(8, "attest", "denied", None, findings=[{**MEASUREMENT, "input": "OVMF.fd"}])
    assert demo_kbs.audit_lines([AFFIRMED, DENIED, long, hinted]) == [
        "  audit #4: attest affirmed — unchecked: [pcrs]",
        "  audit #6: attest denied",
        "      measurement: expected aa, got bb",
        "  audit #7: resource released — " + "r" * 110,
        "  audit #8: attest denied",
        "      measurement: expected aa, got bb; OVMF.fd"]
    assert demo_kbs.audit_lines([{"id": 1, "action": "a", "outcome": "b"}]) == [
        "  audit #1: a b"]


# --- what held --------------------------------------------------------------------------------

def test_the_resource_released_after_an_affirmed_attestation() -> None:
    released = demo_kbs.released_after_attestation
    assert released([AFFIRMED, RELEASED], RESOURCE)
    assert released([AFFIRMED, {**RELEASED, "subject": RESOURCE}], RESOURCE)
    assert not released([AFFIRMED, RELEASED], "default/vtpm/other")
    assert not released([AFFIRMED, RELEASED], "default/vtpm")
    assert not released([AFFIRMED, {**RELEASED, "subject": RESOURCE + "2"}], RESOURCE)
    assert released([AFFIRMED, {**RELEASED, "subject": f"{RESOURCE} (session s1) (again)"}],
                    RESOURCE)  # the resource is what comes before the first " ("
    assert not released([RELEASED], RESOURCE)  # no attestation
    assert not released([{**AFFIRMED, "outcome": "denied"}, RELEASED], RESOURCE)
    assert not released([{**AFFIRMED, "action": "auth"}, RELEASED], RESOURCE)
    assert not released([{**AFFIRMED, "session_id": "other"}, RELEASED], RESOURCE)
    assert not released([AFFIRMED, {**RELEASED, "outcome": "denied"}], RESOURCE)
    assert not released([AFFIRMED, {**RELEASED, "action": "counter"}], RESOURCE)
    assert not released([AFFIRMED, {**RELEASED, "subject": None}], RESOURCE)
    assert not released([AFFIRMED], RESOURCE)


def test_the_svsm_holds_the_registered_key() -> None:
    assert demo_kbs.holds_registered_key({"VMPCK0": b"v", "vTPM state key": b"k" * 32},
                                         b"k" * 32)
    assert not demo_kbs.holds_registered_key({"vTPM state key": b"j" * 32}, b"k" * 32)
    assert not demo_kbs.holds_registered_key({}, b"k" * 32)


@pytest.mark.parametrize(("ok", "leaks", "key", "released", "held"), [
    (True, [], True, True, True), (False, [], True, True, False),
    (True, [LEAK], True, True, False), (True, [], False, True, False),
    (True, [], True, False, False)])
def test_the_genuine_vm_held(ok: bool, leaks: list[Leak], key: bool, released: bool,
                             held: bool) -> None:
    assert demo_kbs.genuine_held(ok, leaks, key, released) is held


def test_the_rules_of_the_denied_rows() -> None:
    second = _row(9, "attest", "denied", findings=[{**MEASUREMENT, "rule": "policy.debug"},
                                                    MEASUREMENT])
    assert demo_kbs.refusal_rules([AFFIRMED, DENIED, second]) == [
        "measurement", "policy.debug", "measurement"]
    assert demo_kbs.refusal_rules([{**AFFIRMED, "findings": [MEASUREMENT]}]) == []


REFUSAL: tuple[str, CvmError] = ("svsm", PolicyError("[the key broker refused]"))


@pytest.mark.parametrize(("refusal", "unsealed", "rows", "held"), [
    (REFUSAL, False, [DENIED], True),
    (None, False, [DENIED], False),
    (("grub", REFUSAL[1]), False, [DENIED], False),
    (REFUSAL, True, [DENIED], False),
    (REFUSAL, False, [], False),
    (REFUSAL, False, [DENIED, DENIED], False),
    (REFUSAL, False, [{**DENIED, "findings": [{**MEASUREMENT, "rule": "policy.debug"}]}], False),
    (REFUSAL, False, [DENIED, {**RELEASED, "session_id": "s2"}], False),
    (REFUSAL, False, [DENIED, AFFIRMED], True),
])
def test_the_tampered_launch_was_refused_for_its_measurement(
        refusal: tuple[str, CvmError] | None, unsealed: bool, rows: list[dict[str, Any]],
        held: bool) -> None:
    assert demo_kbs.attack_refused(refusal, unsealed, rows) is held


def test_the_lines_told() -> None:
    assert demo_kbs.refusal_line(REFUSAL) == "  the VM: REFUSED at svsm: [the key broker refused]"
    assert demo_kbs.refusal_line(None) == "  the VM: booted"
    assert demo_kbs.key_line(True) == "  the SVSM holds the vTPM state key the owner registered"
    assert demo_kbs.key_line(False) == ("  [red]the SVSM does not hold the vTPM state key the "
                                        "owner registered[/red]")
    scanned = "canary scan of everything the host read (DRAM, disk, state file, the relayed HTTP)"
    assert demo_kbs.leak_line([]) == f"{scanned}: clean"
    assert demo_kbs.leak_line([LEAK, LEAK]) == f"{scanned}: [red]2 leak(s): {LEAK}[/red]"


@pytest.mark.parametrize(("genuine", "attack", "line", "code"), [
    (True, True, "HELD: the broker released the vTPM state key to the genuine VM and nothing "
                 "leaked; it refused the tampered launch (finding: measurement); 2.5 s", 0),
    (False, True, "BROKEN: the broker released the vTPM state key to the genuine VM — FAILED; "
                  "it refused the tampered launch (finding: measurement); 2.5 s", 1),
    (True, False, "BROKEN: the broker released the vTPM state key to the genuine VM and "
                  "nothing leaked; it refused the tampered launch — FAILED; 2.5 s", 1),
    (False, False, "BROKEN: the broker released the vTPM state key to the genuine VM — FAILED; "
                   "it refused the tampered launch — FAILED; 2.5 s", 1)])
def test_the_verdict_and_the_exit_code(genuine: bool, attack: bool, line: str,
                                       code: int) -> None:
    assert demo_kbs.verdict_line(genuine, attack, 2.45) == line
    assert demo_kbs.exit_code(genuine, attack) == code


def test_one_bit_of_the_firmware_flipped(tmp_path: Path) -> None:
    firmware = tmp_path / "OVMF.fd"
    firmware.write_bytes(bytes(0x2000))
    demo_kbs.flip_bit(firmware, 0x1234 * 8 + 3)
    data = firmware.read_bytes()
    assert len(data) == 0x2000 and data[0x1234] == 0x08
    assert data.count(0) == 0x2000 - 1
    demo_kbs.flip_bit(firmware, 0x1234 * 8 + 3)
    assert firmware.read_bytes() == bytes(0x2000)


# --- the story, on recorded parts ---------------------------------------------------------

KEY = b"k" * 32
RENDERED = "trace ok=[b]1[/b] at http://host/ 2.5"  # neither markup nor highlighted


@dataclass
class Trace:
    ok: bool = True
    key: bytes | None = KEY
    refused: tuple[str, CvmError] | None = None
    unsealed: bool = True

    def render(self) -> str:
        return RENDERED.replace("1", "1" if self.ok else "0")

    def secrets(self) -> dict[str, bytes]:
        return {} if self.key is None else {"vTPM state key": self.key, "VMPCK0": b"v"}


@dataclass
class Story:
    """What the recorded broker and boots do; what the story asked of them."""

    genuine: Trace = field(default_factory=Trace)
    attacked: Trace = field(default_factory=lambda: Trace(refused=REFUSAL, unsealed=False))
    registration_rows: int = 3
    genuine_rows: list[dict[str, Any]] = field(default_factory=lambda: [AFFIRMED, RELEASED])
    attacked_rows: list[dict[str, Any]] = field(default_factory=lambda: [DENIED])
    leaks: list[Leak] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    boots: list[dict[str, Any]] = field(default_factory=list)
    firmware: list[bytes] = field(default_factory=list)
    afters: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)


@pytest.fixture
def story(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Story:
    recorded = Story()
    monkeypatch.setenv("COLUMNS", "400")
    clock = iter([100.0, 102.45])
    monkeypatch.setattr(demo_kbs, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    out = tmp_path / "image"
    (out / "firmware").mkdir(parents=True)
    (out / "firmware" / "OVMF.fd").write_bytes(bytes(0x2000))

    @dataclass
    class Built:
        out: Path

    def demo_image(folder: Path, seed: int | None) -> Built:
        assert seed == 7
        recorded.folders.append(folder)
        return Built(out)

    @contextmanager
    def broker_process(folder: Path) -> Iterator[tuple[str, str]]:
        recorded.folders.append(folder)
        yield "http://broker", "tok"

    def register(folder: Path, url: str, token: str) -> dict[str, Any]:
        assert (folder, url, token) == (out, "http://broker", "tok")
        recorded.audit.extend(_row(n + 1, "reference", "registered")
                              for n in range(recorded.registration_rows))
        return {"reference_version": 1, "resource": RESOURCE}

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer tok"
        after = request.url.params["after"]
        recorded.afters.append(after)
        return httpx.Response(200, json=[r for r in recorded.audit if r["id"] > int(after)])

    def admin_client(url: str, token: str) -> httpx.Client:
        assert url == "http://broker"
        return httpx.Client(base_url=url, headers={"authorization": f"Bearer {token}"},
                            transport=httpx.MockTransport(answer))

    def boot_bundle(folder: Path, mode: object, **options: Any) -> Trace:
        assert folder == out
        recorded.boots.append({"mode": mode, **options})
        recorded.firmware.append((out / "firmware" / "OVMF.fd").read_bytes())
        first = len(recorded.boots) == 1
        recorded.audit.extend(recorded.genuine_rows if first else recorded.attacked_rows)
        return recorded.genuine if first else recorded.attacked

    def scan(trace: Trace) -> tuple[list[Leak], int]:
        assert trace is recorded.genuine
        return recorded.leaks, 0

    for name, fake in [("demo_image", demo_image), ("broker_process", broker_process),
                       ("register", register), ("admin_client", admin_client),
                       ("boot_bundle", boot_bundle), ("scan", scan),
                       ("image_state_key", lambda folder: KEY if folder == out else b"")]:
        monkeypatch.setattr(demo_kbs, name, fake)
    return recorded


def _told(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def _random(size: int) -> bytes:
    return bytes(size)


SCANNED = "canary scan of everything the host read (DRAM, disk, state file, the relayed HTTP)"


def test_the_story_that_held(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_kbs.kbs_demo(_random, 7) == 0
    scratch, image = story.folders[1], story.folders[0]
    assert image == scratch / "image" and scratch.name.startswith("cvm-demo-kbs-")
    assert not scratch.exists()  # the scratch folder is gone
    assert _told(capsys) == [
        "1. The owner builds an image; a key broker starts on loopback",
        f"  cvm kbs serve at http://broker, database {scratch}/kbs.db",
        f"  registered the image: reference values v1, the vTPM state key at {RESOURCE}",
        "2. The host boots the VM; its SVSM attests to the broker through the host",
        RENDERED,
        "  audit #4: attest affirmed — unchecked: [pcrs]",
        f"  audit #5: resource released — {RESOURCE} (session {SESSION})",
        "  the SVSM holds the vTPM state key the owner registered",
        f"{SCANNED}: clean",
        "3. The host flips one bit of the firmware it launches",
        "  the VM: REFUSED at svsm: [the key broker refused]",
        "  audit #6: attest denied",
        "      measurement: expected aa, got bb",
        "HELD: the broker released the vTPM state key to the genuine VM and nothing leaked; it "
        "refused the tampered launch (finding: measurement); 2.5 s"]
    assert story.afters == ["0", "3", "5"]  # the registration's rows, then each boot's
    assert [boot["kbs"] for boot in story.boots] == ["http://broker"] * 2
    assert [boot["mode"] for boot in story.boots] == [Mode.SEV_SNP] * 2
    assert all(boot["random"] is _random and boot["vendor"].product.name == "Milan"
               for boot in story.boots)
    genuine, attacked = story.firmware
    assert genuine == bytes(0x2000) and attacked[0x1234] == 0x08


def test_the_story_on_a_colour_terminal_highlights_nothing_it_reports(
        story: Story, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert demo_kbs.kbs_demo(_random, 7) == 0
    out = capsys.readouterr().out
    for line in [f"  registered the image: reference values v1, the vTPM state key at {RESOURCE}",
                 RENDERED, "  audit #4: attest affirmed — unchecked: [pcrs]",
                 "  the VM: REFUSED at svsm: [the key broker refused]",
                 "      measurement: expected aa, got bb"]:
        assert f"{line}\n" in out


def test_a_broker_whose_log_starts_empty_and_a_boot_it_never_saw(
        story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    story.registration_rows = 0
    story.genuine_rows = []
    assert demo_kbs.kbs_demo(_random, 7) == 1
    assert story.afters == ["0", "0", "0"]
    assert _told(capsys)[-1].startswith("BROKEN: the broker released the vTPM state key to the "
                                        "genuine VM — FAILED; it refused the tampered launch "
                                        "(finding: measurement)")


@pytest.mark.parametrize("broken", ["trace", "leak", "key", "no key", "release", "attack",
                                    "unsealed", "reason"])
def test_a_story_that_did_not_hold_is_exit_1(story: Story, capsys: pytest.CaptureFixture[str],
                                             broken: str) -> None:
    if broken == "trace":
        story.genuine.ok = False
    elif broken == "leak":
        story.leaks = [LEAK]
    elif broken in ("key", "no key"):
        story.genuine.key = b"j" * 32 if broken == "key" else None
    elif broken == "release":
        story.genuine_rows = [AFFIRMED]
    elif broken == "attack":
        story.attacked.refused = None
    elif broken == "unsealed":
        story.attacked.unsealed = True
    else:
        story.attacked_rows = [{**DENIED, "findings": [{**MEASUREMENT, "rule": "policy"}]}]
    assert demo_kbs.kbs_demo(_random, 7) == 1
    told = _told(capsys)
    genuine = broken in ("trace", "leak", "key", "no key", "release")
    assert told[-1] == ("BROKEN: the broker released the vTPM state key to the genuine VM "
                        f"{'— FAILED' if genuine else 'and nothing leaked'}; it refused the "
                        "tampered launch "
                        f"{'(finding: measurement)' if genuine else '— FAILED'}; 2.5 s")
    if broken in ("key", "no key"):
        assert "  the SVSM does not hold the vTPM state key the owner registered" in told
    if broken == "leak":
        assert f"{SCANNED}: 1 leak(s): {LEAK}" in told
