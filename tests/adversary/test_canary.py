"""The canary scan finds any 8-byte run of any secret wherever the host can read it."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cvm.errors import UsageError
from cvm.formats.snp.ghcb import Ghcb
from cvm.hardware.memory.dram import PAGE_SIZE, Dram
from cvm.hardware.vcpu import EXIT_VMGEXIT
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import WINDOW_BYTES, CanaryScan
from cvm.host.vmm import EXIT_NAE_CPUID
from cvm.scenarios.attack_lab import GHCB_GPA, LaunchedLab


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


@pytest.mark.parametrize("mode", [Mode.SEV_ES, Mode.SEV_SNP], ids=lambda m: m.value)
def test_positive_control_an_8_byte_register_leak_through_the_ghcb(mode: Mode) -> None:
    """A guest whose #VC handler copies 8 bytes of a key into the GHCB's RBX leaks them at that
    exit; the host overwrites the GHCB with its reply, so DRAM no longer shows them afterwards.
    The scan of every exit's view must still find them (a 16-byte or DRAM-only scan does not)."""
    lab = LaunchedLab(mode, _seeded(6).randbytes)
    secrets = lab.secrets()
    scan = CanaryScan(secrets)
    assert lab.platform.view.scan(scan) == []  # clean before the leak
    leaked = int.from_bytes(lab.secret[8:16], "little")
    request = Ghcb.build(rax=0x8000_001F, rbx=leaked, sw_exitcode=EXIT_NAE_CPUID)
    cpu = lab.vm.kernel.cpu
    cpu.write(GHCB_GPA, request.to_bytes())
    cpu.ghcb_msr = GHCB_GPA
    cpu.vmexit(EXIT_VMGEXIT)
    assert Ghcb.from_bytes(cpu.read(GHCB_GPA, PAGE_SIZE)).get("rbx") != leaked  # overwritten
    leaks = lab.platform.view.scan(scan)
    assert leaks and all(leak.secret == "workload secret" for leak in leaks)
    assert {leak.secret_offset for leak in leaks} == {8}
    assert all("GHCB" in leak.where for leak in leaks)
    # The retired scan (16 bytes, DRAM and the VMCB only) misses it.
    machine = lab.host.machine
    dram = b"".join(chunk.tobytes() for _, chunk in machine.dram.chunks())
    assert lab.secret[:16] not in dram and lab.secret[8:24] not in dram


def test_positive_control_plain_memory_and_vmcb_registers() -> None:
    lab = LaunchedLab(Mode.PLAIN, _seeded(7).randbytes)
    scan = CanaryScan(lab.secrets())
    assert any(leak.where == "DRAM" for leak in lab.platform.view.scan(scan))
    sev = LaunchedLab(Mode.SEV, _seeded(8).randbytes)
    scan = CanaryScan(sev.secrets())
    assert sev.platform.view.scan(scan) == []
    sev.guest_set_register("r9", int.from_bytes(sev.secret[3:11], "little"))
    sev.guest_exit()
    leaks = sev.platform.view.scan(scan)
    assert [leak.secret_offset for leak in leaks] == [3]
    assert "VMCB registers" in leaks[0].where


def test_positive_control_files_and_logs() -> None:
    lab = LaunchedLab(Mode.SEV_SNP, _seeded(9).randbytes)
    scan = CanaryScan(lab.secrets())
    assert lab.platform.view.scan(scan) == []
    file = b"\0" * 100 + lab.secret[20:28] + b"\0" * 100
    leaks = lab.platform.view.scan(scan, {"vtpm-state.bin": file})
    assert [(leak.where, leak.offset) for leak in leaks] == [("file vtpm-state.bin", 100)]


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
