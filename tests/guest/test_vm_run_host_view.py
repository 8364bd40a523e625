"""Everything the host can read of a VM (:func:`cvm.host.vm_run.host_view`) — what the canary scan
searches for secrets. Each region is proven scanned: a secret planted there after the boot is
found there, at its place; a region the view left out would hide a leak in it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.guest.run import boot_bundle
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.host.adversary.canary import CanaryScan
from cvm.host.vm_run import HostRun, host_view

Seeded = Callable[[bytes], Callable[[int], bytes]]


def _planted(run: HostRun, seed: int) -> dict[str, bytes]:
    """Plant one secret of its own in each region the host can read; the secrets by region."""
    rng = random.Random(seed)
    secrets = {name: rng.randbytes(16) for name in (
        "dram", "ghcb", "info1", "info2", "code", "vmcb", "vmsa", "disk", "state", "log",
        "request", "response")}
    machine = run.host.machine
    base, _ = next(iter(machine.dram.chunks()))
    machine.dram.write(base + 0x30, secrets["dram"])  # as a DMA would
    last = len(run.exits) - 1
    run.exit_views[last] = b"\0" * 24 + secrets["ghcb"]
    run.exits[last] = dataclasses.replace(
        run.exits[last], exit_code=int.from_bytes(secrets["code"][:8], "little"),
        exit_info1=int.from_bytes(secrets["info1"][:8], "little"),
        exit_info2=int.from_bytes(secrets["info2"][:8], "little"))
    vmcb = next((info.vmcb for info in run.exits if info.vmcb is not None), None)
    if vmcb is not None:
        vmcb.save[next(iter(vmcb.save))] = int.from_bytes(secrets["vmcb"][:8], "little")
    pages = run.bsp.vmsa_pages()
    if pages:
        machine.dram.write(pages[max(pages)] + 0x100, secrets["vmsa"])
    run.disk.write(0x2000, secrets["disk"])
    run.image = dataclasses.replace(run.image, state=bytes(40) + secrets["state"])
    run.log.append(b"line " + secrets["log"])
    if run.relay is not None:
        run.relay.log.append((b"q" + secrets["request"], None))
        run.relay.log.append((b"r", b"a" + secrets["response"]))
    return secrets


@pytest.mark.parametrize("mode", ["sev", "sev-snp"])
def test_a_secret_planted_in_each_region_is_found_there(
        uki_bundle: Path, copy_bundle: Callable[[Path], Path], seeded: Seeded,
        mode: str) -> None:
    trace = boot_bundle(copy_bundle(uki_bundle), mode, random=seeded(b"view " + mode.encode()))
    run = trace.run
    assert run.exits and len(run.exits) == len(run.exit_views)
    secrets = _planted(run, 5)
    view = host_view(run)
    last = len(run.exits) - 1
    machine = run.host.machine
    base, _ = next(iter(machine.dram.chunks()))
    relay_before = b"".join(q + (a or b"") for q, a in run.relay.log[:-2]) if run.relay else b""
    expected = {
        "dram": (f"DRAM {base:#x}", 0x30),
        "ghcb": (f"exit {last} GHCB", 24),
        "code": (f"exit {last} info", 0),
        "info1": (f"exit {last} info", 8),
        "info2": (f"exit {last} info", 16),
        "disk": ("disk image", 0x2000),
        "state": ("vTPM state file", 40),
        "log": ("host log", len(view["host log"]) - 16),
    }
    vmcbs = [n for n, info in enumerate(run.exits) if info.vmcb is not None]
    if mode == "sev":
        assert vmcbs and run.relay is None and not run.bsp.vmsa_pages()
        expected["vmcb"] = (f"exit {vmcbs[0]} VMCB", 0)
    else:
        assert not vmcbs and run.relay is not None
        pages = run.bsp.vmsa_pages()
        assert sorted(pages) == [0, 1]  # the SVSM's and the OS's
        expected["vmsa"] = (f"vCPU 0 VMPL{max(pages)} VMSA", 0x100)
        expected["request"] = ("guest-request relay", len(relay_before) + 1)
        expected["response"] = ("guest-request relay", len(relay_before) + 17 + 2)
    leaks = CanaryScan(secrets).scan_all(view.items())
    found = {(leak.secret, leak.where, leak.offset - leak.secret_offset)
             for leak in leaks if not leak.where.startswith("DRAM") or leak.secret == "dram"}
    for name, (where, offset) in expected.items():
        assert (name, where, offset) in found, name
    # Nothing else is in the view than those regions, named so.
    names = set(view)
    dram = {f"DRAM {chunk:#x}" for chunk, _ in machine.dram.chunks()}
    exits = {f"exit {n} {part}" for n in range(len(run.exits)) for part in ("info", "GHCB")}
    exits |= {f"exit {n} VMCB" for n in vmcbs}
    vmsas = {f"vCPU {cpu.index} VMPL{vmpl} VMSA"
             for cpu in run.guest.vcpus for vmpl in cpu.vmsa_pages()}
    files = {"disk image", "vTPM state file", "host log"}
    files |= {"guest-request relay"} if run.relay is not None else set()
    assert names == dram | exits | vmsas | files
    for n, info in enumerate(run.exits):
        assert len(view[f"exit {n} info"]) == 24 and view[f"exit {n} GHCB"] == run.exit_views[n]
        if info.vmcb is not None:
            assert len(view[f"exit {n} VMCB"]) == 8 * len(info.vmcb.save)
    for cpu in run.guest.vcpus:
        for vmpl, spa in cpu.vmsa_pages().items():
            page = view[f"vCPU {cpu.index} VMPL{vmpl} VMSA"]
            assert page == machine.host_read(spa, PAGE_SIZE) and len(page) == PAGE_SIZE
    assert view["host log"] == b"\n".join(run.log)
    assert view["disk image"] == run.disk.path.read_bytes()
