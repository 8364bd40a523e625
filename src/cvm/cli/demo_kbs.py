"""``cvm demo --kbs``: the story with a key broker on loopback.

The owner builds an image; a key broker starts as its own process (``cvm kbs serve`` on a free
loopback port, SQLite in a scratch folder, trusting this installation's emulated AMD root); the
owner registers the image with it (``cvm image register``: reference values and the vTPM state
key); the host boots the VM, whose SVSM attests to the broker through the host and receives the
state key as a JWE only it can open — the audit log shows the release, and a scan of everything
the host read (the relayed HTTP included) finds no secret. Then the host flips one bit of the
firmware it launches: the broker refuses the SVSM, the vTPM state never opens, and the audit
log names the finding (the launch measurement, expected and found). Exit 1 if any of it did not
happen so.
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
from typing import Any

import httpx
from rich.console import Console

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.cli.demo import demo_image
from cvm.errors import ExternalToolError
from cvm.files import write_atomically
from cvm.guest.run import boot_bundle
from cvm.guest.trace import VmTrace
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import CanaryScan
from cvm.host.adversary.launch import FIRMWARE_BIT
from cvm.host.vm_run import host_view
from cvm.image.kbs_registration import register

ADMIN_TOKEN_BYTES = 32
START_TIMEOUT_SECONDS = 60.0
RandomBytes = Callable[[int], bytes]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def broker_process(folder: Path) -> Iterator[tuple[str, str]]:
    """``cvm kbs serve`` on a free loopback port over SQLite in ``folder``: (URL, admin token).
    Stopped (by its process id) on exit."""
    port = _free_port()
    token_file = folder / "kbs-admin.token"
    write_atomically(token_file, (os.urandom(ADMIN_TOKEN_BYTES).hex() + "\n").encode())
    command = [sys.executable, "-c", "from cvm.cli.main import run; run()", "kbs", "serve",
               "--db", f"sqlite:///{folder / 'kbs.db'}", "--port", str(port),
               "--kek-file", str(folder / "kbs-kek.hex"),
               "--admin-token-file", str(token_file), "--trust", "emulated"]
    log = (folder / "kbs.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(process, port, folder / "kbs.log")
        yield url, token_file.read_text().strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ExternalToolError("cvm kbs serve stopped at start: "
                                    + log.read_text(errors="replace").strip()[-300:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ExternalToolError(f"cvm kbs serve did not listen on port {port} in "
                            f"{START_TIMEOUT_SECONDS:.0f} s")


def _audit(url: str, token: str, after: int) -> list[dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=30,
                      headers={"authorization": f"Bearer {token}"}) as client:
        rows = client.get("/kbs/v0/audit", params={"after": after, "limit": 1000}).json()
    return rows if isinstance(rows, list) else []


def _print_rows(console: Console, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        subject = str(row.get("subject") or "")
        console.print(f"  audit #{row['id']}: {row['action']} {row['outcome']}"
                      + (f" — {subject[:110]}" if subject else ""), highlight=False,
                      markup=False)
        for finding in row.get("findings") or []:
            hint = f"; {finding['input']}" if finding.get("input") else ""
            console.print(f"      {finding['rule']}: expected {finding['expected']}, got "
                          f"{finding['actual']}{hint}", highlight=False, markup=False)


def _leaks(trace: VmTrace) -> list[str]:
    if trace.run is None:
        return []
    scan = CanaryScan(trace.secrets())
    return [str(leak) for leak in scan.scan_all(host_view(trace.run).items())]


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
                url, token):
            console.print(f"  cvm kbs serve at {url}, database {folder / 'kbs.db'}")
            done = register(built.out, url, token)
            console.print(f"  registered the image: reference values v"
                          f"{done['reference_version']}, the vTPM state key at "
                          f"{done['resource']}", highlight=False)
            mark = max((int(row["id"]) for row in _audit(url, token, 0)), default=0)

            console.print("[bold]2. The host boots the VM; its SVSM attests to the broker "
                          "through the host[/bold]")
            trace = boot_bundle(built.out, Mode.SEV_SNP, random=random_bytes, kbs=url,
                                vendor=vendor)
            console.print(trace.render(), highlight=False, markup=False)
            released = _audit(url, token, mark)
            _print_rows(console, released)
            leaks = _leaks(trace)
            console.print("canary scan of everything the host read (DRAM, disk, state file, "
                          "the relayed HTTP): " + ("clean" if not leaks else
                                                   f"[red]{len(leaks)} leak(s): {leaks[0]}[/red]"))
            mark = max((int(row["id"]) for row in released), default=mark)

            console.print("[bold]3. The host flips one bit of the firmware it launches[/bold]")
            firmware = built.out / "firmware" / "OVMF.fd"
            data = bytearray(firmware.read_bytes())
            data[FIRMWARE_BIT // 8] ^= 1 << (FIRMWARE_BIT % 8)
            firmware.write_bytes(data)
            attacked = boot_bundle(built.out, Mode.SEV_SNP, random=random_bytes, kbs=url,
                                   vendor=vendor)
            refusal = attacked.refused
            outcome = (f"REFUSED at {refusal[0]}: {refusal[1]}" if refusal is not None
                       else "booted")
            console.print(f"  the VM: {outcome}", highlight=False, markup=False)
            denied = _audit(url, token, mark)
            _print_rows(console, denied)
    genuine_ok = trace.ok and not leaks and any(
        row["outcome"] == "released" for row in released)
    rules = [f["rule"] for row in denied if row["outcome"] == "denied"
             for f in row["findings"]]
    attack_held = (refusal is not None and refusal[0] == "svsm" and not attacked.unsealed
                   and rules == ["measurement"]
                   and not any(row["outcome"] == "released" for row in denied))
    held = genuine_ok and attack_held
    elapsed = time.perf_counter() - started
    console.print(
        f"{'HELD' if held else 'BROKEN'}: the broker released the vTPM state key to the "
        f"genuine VM {'and nothing leaked' if genuine_ok else '— FAILED'}; it refused the "
        f"tampered launch {'(finding: measurement)' if attack_held else '— FAILED'}; "
        f"{elapsed:.1f} s")
    return 0 if held else 1
