"""The canary scan finds any 8-byte run of any secret wherever the host can read it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from cvm.errors import UsageError
from cvm.formats.snp.ghcb import Ghcb
from cvm.hardware.memory.dram import PAGE_SIZE, Dram
from cvm.hardware.vcpu import EXIT_VMGEXIT
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import CACHE_FROM_BYTES, WINDOW_BYTES, CanaryScan, Leak
from cvm.host.vmm import EXIT_NAE_CPUID
from cvm.scenarios.attack_bundles import LabBundles, build_lab_bundles
from cvm.scenarios.boot_lab import BootLab


def _seeded(seed: int) -> random.Random:
    return random.Random(seed)


def test_every_window_of_every_secret_is_found_at_every_offset() -> None:
    rng = _seeded(1)
    secrets = {"volume key": rng.randbytes(32), "seed": rng.randbytes(48)}
    scan = CanaryScan(secrets)
    for name, secret in secrets.items():
        for start in range(len(secret) - WINDOW_BYTES + 1):
            for offset in (0, 1, 7, PAGE_SIZE - 3, 3 * PAGE_SIZE + 5):
                hay = bytearray(rng.randbytes(4 * PAGE_SIZE))
                hay[offset : offset + WINDOW_BYTES] = secret[start : start + WINDOW_BYTES]
                leaks = scan.scan("hay", bytes(hay))
                assert any(
                    leak.offset == offset and leak.secret == name and leak.secret_offset == start
                    for leak in leaks
                ), (name, start, offset)


def test_seven_bytes_are_not_a_leak_and_random_data_is_clean() -> None:
    rng = _seeded(2)
    secret = rng.randbytes(32)
    scan = CanaryScan({"key": secret})
    hay = bytearray(rng.randbytes(1 << 20))
    hay[1000:1007] = secret[:7]
    assert scan.scan("hay", bytes(hay)) == []


def test_a_window_across_a_zero_page_boundary_is_found() -> None:
    secret = _seeded(3).randbytes(16)
    hay = bytearray(3 * PAGE_SIZE)
    hay[2 * PAGE_SIZE - 4 : 2 * PAGE_SIZE + 4] = secret[:8]  # 4 bytes in a page, 4 in the next
    leaks = CanaryScan({"key": secret}).scan("hay", bytes(hay))
    assert [leak.offset for leak in leaks] == [2 * PAGE_SIZE - 4]


def test_dram_offsets_are_system_addresses() -> None:
    secret = _seeded(4).randbytes(32)
    dram = Dram(8 << 20)
    dram.write(0x40_0123, secret[5:13])
    leaks = CanaryScan({"key": secret}).scan_dram(dram)
    assert [(leak.offset, leak.secret_offset) for leak in leaks] == [(0x40_0123, 5)]
    assert dram.chunks()[0][1].flags.writeable is False


def test_short_secrets_are_refused() -> None:
    with pytest.raises(UsageError):
        CanaryScan({"pin": b"1234"})


def test_numpy_haystacks_are_scanned_like_bytes() -> None:
    secret = _seeded(5).randbytes(24)
    hay = np.zeros(2 * PAGE_SIZE, dtype=np.uint8)
    hay[100:108] = np.frombuffer(secret[8:16], dtype=np.uint8)
    assert [leak.offset for leak in CanaryScan({"k": secret}).scan("h", hay)] == [100]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabBundles]:
    yield build_lab_bundles(tmp_path_factory.mktemp("bundles"), _seeded(40).randbytes,
                            [Mode.PLAIN, Mode.SEV_SNP])


@pytest.fixture(scope="module")
def labs(bundles: LabBundles) -> Iterator[dict[Mode, BootLab]]:
    booted = {mode: BootLab(mode, bundles, _seeded(41 + n).randbytes)
              for n, mode in enumerate((Mode.SEV_ES, Mode.SEV_SNP))}
    yield booted
    for lab in booted.values():
        lab.close()


def _scan(lab: BootLab, scan: CanaryScan) -> list[Leak]:
    return lab.view.scan(scan, lab.host_files())


def _ghcb_leak(lab: BootLab, value: int) -> tuple[Callable[[], bytes], int]:
    """The guest's #VC path copies ``value`` into its GHCB's RBX and exits; the host answers
    over it. SEV-ES: the OS's GHCB; SEV-SNP: the SVSM's (the OS at VMPL1 has none)."""
    vm = lab.running()
    svsm = vm.svsm
    kernel = vm.kernel if svsm is None else svsm.kernel
    ghcb = kernel.ghcb_gpa
    assert ghcb is not None
    request = Ghcb.build(rax=0x8000_001F, rbx=value, sw_exitcode=EXIT_NAE_CPUID)

    def leak() -> None:
        kernel.cpu.write(ghcb, request.to_bytes())
        kernel.cpu.ghcb_msr = ghcb
        kernel.cpu.vmexit(EXIT_VMGEXIT)

    def read_back() -> bytes:
        return kernel.cpu.read(ghcb, PAGE_SIZE)

    if svsm is None:
        leak()
        return read_back, ghcb
    svsm.at_vmpl0(leak)
    return lambda: svsm.at_vmpl0(read_back), ghcb


@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP], ids=lambda m: m.value)
def test_positive_control_an_8_byte_register_leak_through_the_ghcb(
    mode: Mode, labs: dict[Mode, BootLab],
) -> None:
    """A guest whose #VC handler copies 8 bytes of the volume key into the GHCB's RBX leaks
    them at that exit; the host overwrites the GHCB with its reply, so DRAM no longer shows them
    afterwards. The scan of every exit's view must still find them (a 16-byte or DRAM-only scan
    does not). On the booted VM, with its real secrets."""
    lab = labs[mode]
    secrets = lab.secrets()
    scan = CanaryScan(secrets)
    assert _scan(lab, scan) == []  # the booted VM is clean before the leak
    key = secrets["volume key"]
    leaked = int.from_bytes(key[8:16], "little")
    read_back, _ = _ghcb_leak(lab, leaked)
    assert Ghcb.from_bytes(read_back()).get("rbx") != leaked  # overwritten by the host
    leaks = _scan(lab, scan)
    assert leaks and all(leak.secret == "volume key" for leak in leaks)
    assert {leak.secret_offset for leak in leaks} == {8}
    assert all("GHCB" in leak.where for leak in leaks)
    # The retired scan (16 bytes, DRAM and the VMCB only) misses it.
    machine = lab.host.machine
    dram = b"".join(chunk.tobytes() for _, chunk in machine.dram.chunks())
    assert key[:16] not in dram and key[8:24] not in dram


def test_positive_control_plain_memory_and_vmcb_registers(bundles: LabBundles) -> None:
    lab = BootLab(Mode.PLAIN, bundles, _seeded(7).randbytes)
    try:
        scan = CanaryScan(lab.secrets())
        found = {leak.secret for leak in _scan(lab, scan) if leak.where == "DRAM"}
        assert {"volume key", "workload data"} <= found  # a plain host reads the guest's pages
    finally:
        lab.close()
    sev = BootLab(Mode.SEV, bundles, _seeded(8).randbytes)
    try:
        scan = CanaryScan({"workload data": sev.secret})
        assert _scan(sev, scan) == []
        sev.guest_set_register("r9", int.from_bytes(sev.secret[3:11], "little"))
        sev.guest_exit()
        leaks = _scan(sev, scan)
        assert [leak.secret_offset for leak in leaks] == [3]
        assert "VMCB registers" in leaks[0].where
    finally:
        sev.close()


def test_positive_control_files_and_logs(labs: dict[Mode, BootLab]) -> None:
    lab = labs[Mode.SEV_SNP]
    secrets = lab.secrets()
    scan = CanaryScan(secrets)
    seed = next(value for name, value in secrets.items() if name.startswith("vTPM seed"))
    file = b"\0" * 100 + seed[20:28] + b"\0" * 100
    leaks = [leak for leak in lab.view.scan(scan, {"vtpm-state.bin": file})
             if leak.where.startswith("file")]  # (the GHCB control above leaked into exits)
    assert [(leak.where, leak.offset) for leak in leaks] == [("file vtpm-state.bin", 100)]
    # A byte of the disk image changed to carry 8 bytes of the state key is found, at its
    # offset in the file, in the extent that holds it.
    disk = lab.bundle() / "disk.img"
    original = disk.read_bytes()
    try:
        with disk.open("r+b") as writer:
            writer.seek(0x1000)
            writer.write(secrets["vTPM state key"][:8])
        found = [leak for leak in _scan(lab, scan) if leak.where.startswith("file disk.img")]
        assert [(leak.secret, leak.offset) for leak in found] == [("vTPM state key", 0x1000)]
    finally:
        disk.write_bytes(original)


def test_large_haystacks_are_scanned_in_blocks_and_cached_hits_keep_their_offsets() -> None:
    rng = _seeded(10)
    secret = rng.randbytes(32)
    scan = CanaryScan({"key": secret})
    hay = bytearray(rng.randbytes(3 << 20))
    places = [(5, 0), ((1 << 20) - 3, 4), ((2 << 20) + 77, 24)]  # one across a block boundary
    for offset, start in places:
        hay[offset : offset + WINDOW_BYTES] = secret[start : start + WINDOW_BYTES]
    first = scan.scan("disk", bytes(hay))
    again = scan.scan("disk again", bytes(hay))  # answered from the block cache
    found = [(leak.offset, leak.secret_offset) for leak in first]
    assert set(places) <= set(found)
    for offset, start in found:  # a neighbour may match by chance: each hit must be genuine
        assert hay[offset : offset + WINDOW_BYTES] == secret[start : start + WINDOW_BYTES]
    assert [(leak.offset, leak.secret_offset) for leak in again] == found
    assert {leak.where for leak in again} == {"disk again"}
    other = CanaryScan({"other": rng.randbytes(32)})  # other secrets: no stale cache hits
    assert other.scan("disk", bytes(hay)) == []


def test_a_window_that_ends_in_a_page_of_zeros_is_found() -> None:
    secret = b"\xaa\xbb\xcc\xdd" + bytes(4) + _seeded(11).randbytes(16)
    hay = bytearray(3 * PAGE_SIZE)
    hay[2 * PAGE_SIZE - 4 : 2 * PAGE_SIZE] = secret[:4]  # its zero half lies in a zero page
    leaks = CanaryScan({"key": secret}).scan("hay", bytes(hay))
    assert (2 * PAGE_SIZE - 4, 0) in [(leak.offset, leak.secret_offset) for leak in leaks]


def test_small_artifacts_scanned_together_keep_their_names_and_offsets() -> None:
    rng = _seeded(12)
    secret = rng.randbytes(32)
    scan = CanaryScan({"key": secret})
    views = [(f"view {n}", bytearray(rng.randbytes(300))) for n in range(5000)]
    views[7][1][10:18] = secret[0:8]
    views[4321][1][292:300] = secret[8:16]  # ends exactly at the end of its view
    views[100][1][296:300] = secret[16:20]  # half of a window here ...
    views[101][1][0:4] = secret[20:24]  # ... and half in the next view: in neither
    leaks = scan.scan_all((name, bytes(data)) for name, data in views)
    found = {(leak.where, leak.offset, leak.secret_offset) for leak in leaks}
    assert ("view 7", 10, 0) in found and ("view 4321", 292, 8) in found
    assert not any(leak.where in ("view 100", "view 101") for leak in leaks)
    big = bytes(CACHE_FROM_BYTES) + secret[:8]
    assert [(leak.where, leak.offset) for leak in scan.scan_all([("big", big)])] == [
        ("big", CACHE_FROM_BYTES)]
