"""The vTPM on TCP, speaking the Microsoft TPM 2.0 simulator protocol (``mssim`` TCTI).

The protocol of the TCG reference simulator (``TPMCmd/Simulator/src/TcpServer.c``), which the
tpm2-tss ``mssim`` TCTI speaks and whose platform commands the SVSM vTPM protocol reuses
(AMD 58019 section 8): two TCP ports. On the TPM port a client sends ``u32
TPM_SEND_COMMAND (8) ‖ u8 locality ‖ u32 size ‖ command`` and receives ``u32 size ‖ response ‖
u32 0``; on the platform port (TPM port + 1) it sends one ``u32`` signal — POWER_ON (1),
POWER_OFF (2), CANCEL_ON (9), CANCEL_OFF (10), NV_ON (11) — and receives ``u32 0``.
``TPM_SESSION_END`` (20) closes either connection. All integers big-endian.

With ``startup_clear`` the server issues TPM2_Startup(CLEAR) at power-on, as ``swtpm --flags
startup-clear`` does, so tools that never send Startup work. ``on_change`` is called with the
TPM after every command that changed its non-volatile state (to persist it).
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
from collections.abc import Callable

from cvm.errors import CvmError
from cvm.formats.tpm2.command import Command, Response
from cvm.formats.tpm2.constants import TpmCc
from cvm.formats.tpm2.response_code import TpmRc
from cvm.vtpm.engine import Tpm

TPM_SEND_COMMAND = 8
POWER_ON, POWER_OFF, CANCEL_ON, CANCEL_OFF, NV_ON = 1, 2, 9, 10, 11
TPM_SESSION_END = 20
MAX_BUFFER = 4096
POLL_SECONDS = 0.05  # how often a serving loop looks for stop(): what stopping waits at most


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _receive(connection: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)



def _listen(host: str, port: int, handler: type[socketserver.BaseRequestHandler]
            ) -> socketserver.ThreadingTCPServer:
    """A listener on ``host:port``; one that cannot be opened (a port in use, an address not
    this machine's) says which, as the OS error's file name."""
    try:
        return socketserver.ThreadingTCPServer((host, port), handler)
    except OSError as error:
        raise OSError(error.errno, f"cannot listen: {error.strerror}", f"{host}:{port}"
                      ) from None

class MssimServer:
    """Serve ``tpm`` on ``port`` (TPM) and ``port + 1`` (platform) of ``host``."""

    def __init__(self, tpm: Tpm, port: int, host: str = "127.0.0.1", *,
                 startup_clear: bool = True,
                 on_change: Callable[[Tpm], None] | None = None,
                 report: Callable[[str], None] = _to_stderr) -> None:
        self.tpm = tpm
        self.lock = threading.Lock()
        self.startup_clear = startup_clear
        self.on_change = on_change
        self.report = report
        self.powered = False
        self.failure: str | None = None  # why the server is in failure mode
        server = self

        class TpmPort(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve_tpm(self.request)

        class PlatformPort(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve_platform(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        first = _listen(host, port, TpmPort)
        try:
            second = _listen(host, port + 1, PlatformPort)
        except OSError:
            first.server_close()
            raise
        self._servers = [first, second]
        for listener in self._servers:
            listener.daemon_threads = True
        self._threads: list[threading.Thread] = []
        self._serving: list[socketserver.ThreadingTCPServer] = []
        self.power_on()

    def power_on(self) -> None:
        """Signal power-on; after a power-off the TPM starts afresh from its NV state."""
        with self.lock:
            if self.powered:
                return
            if self.tpm.started:
                old = self.tpm
                old.save_clock()
                self.tpm = Tpm(old.state, random=old.random, clock=old.clock)
                self.tpm.on_da_used = old.on_da_used
            self.powered = True
            if self.startup_clear and not self.tpm.started:
                self.tpm.execute(Command(TpmCc.STARTUP, (), (), bytes(2)).to_bytes())

    def start(self) -> None:
        """Serve in background threads."""
        for listener in self._servers:
            thread = threading.Thread(target=listener.serve_forever, args=(POLL_SECONDS,),
                                      daemon=True)
            self._serving.append(listener)
            thread.start()
            self._threads.append(thread)

    def serve_forever(self) -> None:
        """Serve in this thread (the platform port in a background thread)."""
        platform = threading.Thread(target=self._servers[1].serve_forever, args=(POLL_SECONDS,),
                                    daemon=True)
        self._serving.extend(self._servers)
        platform.start()
        self._threads.append(platform)
        self._servers[0].serve_forever(POLL_SECONDS)

    def stop(self) -> None:
        """Stop serving and close both ports (``shutdown`` waits for a serving loop, so only
        the listeners :meth:`start` or :meth:`serve_forever` set serving are shut down)."""
        for listener in self._servers:
            if listener in self._serving:
                listener.shutdown()
            listener.server_close()

    def _execute(self, command: bytes, locality: int) -> bytes:
        with self.lock:
            if not self.powered or self.failure is not None:
                return Response(TpmRc.FAILURE).to_bytes(False)
            try:
                response = self.tpm.execute(command, locality)
                if self.tpm.changed and self.on_change is not None:
                    self.on_change(self.tpm)
                    self.tpm.changed = False
            except (OSError, CvmError) as error:
                self.failure = f"the vTPM state could not be saved: {error}"
                self.report(f"cvm: {self.failure}; every command now fails until the "
                            "server is restarted")
                return Response(TpmRc.FAILURE).to_bytes(False)
            return response

    def _serve_tpm(self, connection: socket.socket) -> None:
        while (head := _receive(connection, 4)) is not None:
            signal = int.from_bytes(head, "big")
            if signal != TPM_SEND_COMMAND:
                return
            setup = _receive(connection, 5)
            if setup is None:
                return
            locality, size = setup[0], int.from_bytes(setup[1:], "big")
            if size > MAX_BUFFER:
                return
            command = _receive(connection, size)
            if command is None:
                return
            response = self._execute(command, locality)
            connection.sendall(len(response).to_bytes(4, "big") + response + bytes(4))

    def _serve_platform(self, connection: socket.socket) -> None:
        while (head := _receive(connection, 4)) is not None:
            signal = int.from_bytes(head, "big")
            if signal == TPM_SESSION_END:
                return
            if signal == POWER_ON:
                self.power_on()
            elif signal == POWER_OFF:
                with self.lock:
                    self.powered = False
            connection.sendall(bytes(4))
