"""``cvm demo --kbs``: the story with a key broker on loopback.

The owner builds an image; a key broker starts as its own process (``cvm kbs serve`` on a free
loopback port, SQLite in a scratch folder, trusting this installation's emulated AMD root); the
owner registers the image with it (``cvm image register``: reference values and the vTPM state
key); the host boots the VM, whose SVSM attests to the broker through the host and receives the
state key as a JWE only it can open — the audit log shows the release, the key the SVSM holds is
the one registered, and a scan of everything the host read (the relayed HTTP included) finds no
secret. Then the host flips one bit of the firmware it launches: the broker refuses the SVSM,
the vTPM state never opens, and the audit log names the finding (the launch measurement,
expected and found). Exit 1 if any of it did not happen so.

The story's decisions are the plain functions below (the broker's port, start and stop, the
audit rows, what held), each tested alone; :func:`kbs_demo` tells the story with them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.cli.demo import demo_image
from cvm.cli.demo_verdict import scan
from cvm.errors import CvmError, ExternalToolError, FormatError
from cvm.files import write_atomically
from cvm.guest.run import boot_bundle
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import Leak
from cvm.host.adversary.launch import FIRMWARE_BIT
from cvm.image.kbs_registration import image_state_key, register

ADMIN_TOKEN_BYTES = 32
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.1
LOOPBACK = "127.0.0.1"
AUDIT_LIMIT = 1000
LOG_TAIL_CHARS = 300
TOKEN_FILE = "kbs-admin.token"  # in the broker's folder, as the database and the KEK
LOG_FILE = "kbs.log"
STATE_KEY = "vTPM state key"  # the name the guest's secrets give the SVSM's state key
RandomBytes = Callable[[int], bytes]
AuditRow = dict[str, Any]


def reserve_port() -> socket.socket:
    """A loopback port held for the broker until it listens: bound with ``SO_REUSEADDR`` and
    not listening, so the broker (which binds as uvicorn does, with ``SO_REUSEADDR``) can
    listen on it while no other socket can take it meanwhile."""
    holder = socket.socket()  # IPv4, TCP
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((LOOPBACK, 0))
    except OSError:
        holder.close()
        raise
    return holder


def write_admin_token(path: Path) -> str:
    """A new admin token (32 random bytes in hex, never from the demo's seed) in ``path``,
    readable by its owner alone from the start."""
    token = os.urandom(ADMIN_TOKEN_BYTES).hex()
    write_atomically(path, (token + "\n").encode())
    return token


def broker_command(folder: Path, port: int, token_file: Path) -> list[str]:
    """``cvm kbs serve`` on ``port`` of the loopback address: its SQLite database and
    key-encryption key in ``folder``, the admin token of ``token_file``, trusting this
    installation's emulated AMD root."""
    return [sys.executable, "-c", "from cvm.cli.main import run; run()", "kbs", "serve",
            "--db", f"sqlite:///{folder / 'kbs.db'}", "--host", LOOPBACK, "--port", str(port),
            "--kek-file", str(folder / "kbs-kek.hex"),
            "--admin-token-file", str(token_file), "--trust", "emulated"]


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path,
                   timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Return once the loopback ``port`` accepts a connection; a broker that stopped is an
    error with its exit status and the end of its ``log``, one not listening by ``timeout``
    seconds another."""
    deadline = time.monotonic() + timeout
    while True:
        status = process.poll()
        if status is not None:
            tail = log.read_text(errors="replace").strip()[-LOG_TAIL_CHARS:]
            raise ExternalToolError(f"cvm kbs serve stopped at start (exit {status}): {tail}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise ExternalToolError(f"cvm kbs serve did not listen on port {port} in "
                                        f"{timeout:.0f} s") from None
            time.sleep(POLL_SECONDS)


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS) -> int:
    """Stop ``process``: SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds;
    its exit status (it is waited for either way, so no zombie is left)."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def start_broker(folder: Path, holder: socket.socket, log: IO[bytes]
                 ) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``cvm kbs serve`` (:func:`broker_command`) on the port ``holder`` holds, its
    output and errors into ``log``: the process and the port."""
    port = int(holder.getsockname()[1])
    process = subprocess.Popen(broker_command(folder, port, folder / TOKEN_FILE), stdout=log,
                               stderr=subprocess.STDOUT)
    return process, port


def broker_url(port: int) -> str:
    """The broker's URL on the loopback ``port``."""
    return f"http://{LOOPBACK}:{port}"


@contextmanager
def broker_process(folder: Path) -> Iterator[tuple[str, str]]:
    """``cvm kbs serve`` on a free loopback port over SQLite in ``folder``: (URL, admin token).
    The port is held until the broker listens on it; the broker is stopped and its log closed
    on exit, whatever happened. (A generator that only puts the plain functions above in
    order: mutation testing leaves decorated functions alone.)"""
    token = write_admin_token(folder / TOKEN_FILE)
    with reserve_port() as holder, (folder / LOG_FILE).open("wb") as log:
        process, port = start_broker(folder, holder, log)
        try:
            wait_listening(process, port, folder / LOG_FILE)
            yield broker_url(port), token
        finally:
            stop(process)


def admin_client(url: str, token: str) -> httpx.Client:
    """The broker's admin API at ``url``, with the admin token."""
    return httpx.Client(base_url=url, timeout=30.0, headers={"authorization": f"Bearer {token}"})


def audit_rows(client: httpx.Client, after: int) -> list[AuditRow]:
    """The broker's audit rows after row ``after``; an answer that is not 200 and a JSON list
    of rows is an error (the story cannot be judged without them)."""
    answer = client.get("/kbs/v0/audit", params={"after": after, "limit": AUDIT_LIMIT})
    if answer.status_code != 200:
        raise ExternalToolError(f"the broker's audit log: {answer.status_code} "
                                f"{answer.text[:200]}")
    try:
        rows = answer.json()
    except ValueError:
        raise FormatError("the broker's audit log is not JSON") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise FormatError("the broker's audit log is not a list of rows")
    return rows


def last_row(rows: list[AuditRow], before: int) -> int:
    """The highest row number in ``rows``, else ``before``."""
    return max((int(row["id"]) for row in rows), default=before)


def audit_lines(rows: list[AuditRow]) -> list[str]:
    """Each audit row in a line (its subject cut at 110 characters), each finding below it."""
    lines = []
    for row in rows:
        subject = str(row.get("subject") or "")
        lines.append(f"  audit #{row['id']}: {row['action']} {row['outcome']}"
                     + (f" — {subject[:110]}" if subject else ""))
        for finding in row.get("findings") or []:
            hint = f"; {finding['input']}" if finding.get("input") else ""
            lines.append(f"      {finding['rule']}: expected {finding['expected']}, got "
                         f"{finding['actual']}{hint}")
    return lines


def _subject_resource(row: AuditRow) -> str:
    """The resource a ``resource`` row names: its subject up to the session after it."""
    return str(row.get("subject") or "").partition(" (")[0]


def released_after_attestation(rows: list[AuditRow], resource: str) -> bool:
    """The audit shows ``resource`` released in a session whose attestation was affirmed."""
    affirmed = {row["session_id"] for row in rows
                if row["action"] == "attest" and row["outcome"] == "affirmed"}
    return any(row["action"] == "resource" and row["outcome"] == "released"
               and _subject_resource(row) == resource and row["session_id"] in affirmed
               for row in rows)


def holds_registered_key(secrets: dict[str, bytes], registered: bytes) -> bool:
    """The state key the SVSM holds (read through the guest) is the one the owner registered."""
    return secrets.get(STATE_KEY) == registered


def genuine_held(trace_ok: bool, leaks: list[Leak], key_held: bool, released: bool) -> bool:
    """The genuine VM: every check of its boot passed, nothing leaked, the SVSM holds the
    registered key, and the broker's audit shows it released after an affirmed attestation."""
    return trace_ok and not leaks and key_held and released


def refusal_rules(rows: list[AuditRow]) -> list[str]:
    """The rule of every finding of every denied row, in order."""
    return [finding["rule"] for row in rows if row["outcome"] == "denied"
            for finding in row["findings"]]


def attack_refused(refusal: tuple[str, CvmError] | None, unsealed: bool,
                   rows: list[AuditRow]) -> bool:
    """The tampered launch: the SVSM was refused, the vTPM state never opened, the broker
    denied one attestation for the launch measurement alone and released nothing."""
    return (refusal is not None and refusal[0] == "svsm" and not unsealed
            and refusal_rules(rows) == ["measurement"]
            and not any(row["outcome"] == "released" for row in rows))


def refusal_line(refusal: tuple[str, CvmError] | None) -> str:
    """What became of the tampered VM."""
    outcome = "booted" if refusal is None else f"REFUSED at {refusal[0]}: {refusal[1]}"
    return f"  the VM: {outcome}"


def key_line(key_held: bool) -> str:
    """Whether the SVSM holds the state key the owner registered."""
    return ("  the SVSM holds the vTPM state key the owner registered" if key_held
            else "  [red]the SVSM does not hold the vTPM state key the owner registered[/red]")


def leak_line(leaks: list[Leak]) -> str:
    """What the canary scan of the genuine boot found."""
    found = "clean" if not leaks else f"[red]{len(leaks)} leak(s): {leaks[0]}[/red]"
    return ("canary scan of everything the host read (DRAM, disk, state file, the relayed "
            f"HTTP): {found}")


def verdict_line(genuine: bool, attack: bool, elapsed: float) -> str:
    """The line that ends the story."""
    return (f"{'HELD' if genuine and attack else 'BROKEN'}: the broker released the vTPM state "
            f"key to the genuine VM {'and nothing leaked' if genuine else '— FAILED'}; it "
            f"refused the tampered launch {'(finding: measurement)' if attack else '— FAILED'}; "
            f"{elapsed:.1f} s")


def exit_code(genuine: bool, attack: bool) -> int:
    """0 when both halves of the story held, else 1."""
    return 0 if genuine and attack else 1


def flip_bit(path: Path, bit: int) -> None:
    """Flip bit ``bit`` (bit ``bit % 8`` of byte ``bit // 8``) of the file ``path``."""
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(data)


def _print(console: Console, lines: list[str]) -> None:
    for line in lines:
        console.print(line, highlight=False, markup=False)


def kbs_demo(random_bytes: RandomBytes, seed: int | None = None) -> int:
    """Run the story; 0 if everything happened as the architecture promises, else 1. The
    image is built from ``seed`` as ``cvm demo --seed`` builds it (:func:`demo_image`)."""
    started = time.perf_counter()
    console = Console()
    vendor = RootStore.for_workspace(DEFAULT_WORKSPACE).vendor("Milan", create=True)
    with tempfile.TemporaryDirectory(prefix="cvm-demo-kbs-") as scratch:
        folder = Path(scratch)
        console.print("[bold]1. The owner builds an image; a key broker starts on loopback"
                      "[/bold]")
        with console.status("building the image (keys, signed boot chain, LUKS2 root, vTPM)"):
            built = demo_image(folder / "image", seed)
        with console.status("starting cvm kbs serve (SQLite)"), broker_process(folder) as (
                url, token), admin_client(url, token) as client:
            console.print(f"  cvm kbs serve at {url}, database {folder / 'kbs.db'}")
            done = register(built.out, url, token)
            console.print(f"  registered the image: reference values v"
                          f"{done['reference_version']}, the vTPM state key at "
                          f"{done['resource']}", highlight=False)
            mark = last_row(audit_rows(client, 0), 0)

            console.print("[bold]2. The host boots the VM; its SVSM attests to the broker "
                          "through the host[/bold]")
            trace = boot_bundle(built.out, Mode.SEV_SNP, random=random_bytes, kbs=url,
                                vendor=vendor)
            console.print(trace.render(), highlight=False, markup=False)
            released = audit_rows(client, mark)
            _print(console, audit_lines(released))
            key_held = holds_registered_key(trace.secrets(), image_state_key(built.out))
            console.print(key_line(key_held))
            leaks, _ = scan(trace)
            console.print(leak_line(leaks))
            genuine = genuine_held(trace.ok, leaks, key_held,
                                   released_after_attestation(released, done["resource"]))

            console.print("[bold]3. The host flips one bit of the firmware it launches[/bold]")
            flip_bit(built.out / "firmware" / "OVMF.fd", FIRMWARE_BIT)
            attacked = boot_bundle(built.out, Mode.SEV_SNP, random=random_bytes, kbs=url,
                                   vendor=vendor)
            console.print(refusal_line(attacked.refused), highlight=False, markup=False)
            denied = audit_rows(client, last_row(released, mark))
            _print(console, audit_lines(denied))
            attack = attack_refused(attacked.refused, attacked.unsealed, denied)
    console.print(verdict_line(genuine, attack, time.perf_counter() - started))
    return exit_code(genuine, attack)
