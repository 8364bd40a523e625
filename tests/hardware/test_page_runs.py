"""The batched forms of the host's page operations and the one-page access path: a run of pages
gets the same checks, results and errors as one call per page; zeroing and page views keep
DRAM's contents right."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.errors import StateError, UsageError
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import PFERR_RMP, PFERR_WRITE, FaultKind, FaultRaised, Who
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import CHUNK_SIZE, PAGE_SIZE, Dram
from cvm.hardware.memory.rmp import Rmp, RmpEntry, RmpStatus
from cvm.hardware.vm import Mode, VirtualMachine
from cvm.host.vmm import Hypervisor

MIB = 1 << 20
SPAS = [0x10000 + PAGE_SIZE * i for i in range(6)]
GPAS = [PAGE_SIZE * i for i in (0, 1, 2, 5, 6, 9)]


def _entries(rmp: Rmp, spas: list[int]) -> list[RmpEntry]:
    return [rmp.entry(spa) for spa in spas]


# -- RMPUPDATE of a run ------------------------------------------------------------------------
def test_a_run_of_fresh_pages_is_assigned_as_one_rmpupdate_per_page_would() -> None:
    one, run = Rmp(), Rmp()
    for spa, gpa in zip(SPAS, GPAS, strict=True):
        assert one.rmpupdate(spa, assigned=True, asid=7, gpa=gpa) is RmpStatus.SUCCESS
    assert run.rmpupdate_pages(SPAS, GPAS, 7) == (RmpStatus.SUCCESS, len(SPAS))
    assert _entries(run, SPAS) == _entries(one, SPAS)
    assert all(e.assigned and e.asid == 7 and not e.validated for e in _entries(run, SPAS))
    assert [e.gpa for e in _entries(run, SPAS)] == GPAS
    assert not run.entry(SPAS[-1] + PAGE_SIZE).assigned  # nothing beyond the run
    assert run.rmpupdate_pages([], [], 7) == (RmpStatus.SUCCESS, 0)


def test_a_clean_run_is_assigned_in_one_step_and_any_other_page_by_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    one_page = Rmp.rmpupdate

    def counted(self: Rmp, spa: int, **fields: Any) -> RmpStatus:
        calls.append(spa)
        return one_page(self, spa, **fields)

    monkeypatch.setattr(Rmp, "rmpupdate", counted)
    rmp = Rmp()
    assert rmp.rmpupdate_pages(SPAS[:3], GPAS[:3], 7) == (RmpStatus.SUCCESS, 3)
    assert calls == []  # aligned, none with an entry: one step
    assert rmp.rmpupdate_pages(SPAS[2:], GPAS[2:], 7) == (RmpStatus.SUCCESS, 4)
    assert calls == SPAS[2:]  # the run starts at a page with an entry
    calls.clear()
    assert rmp.rmpupdate_pages(SPAS[3:], [*GPAS[3:5], GPAS[5] + 1], 7)[0] is RmpStatus.FAIL_INPUT
    assert calls == SPAS[3:]
    assert Rmp().rmpupdate_pages([0x10001], [0], 7) == (RmpStatus.FAIL_INPUT, 0)


def test_a_run_reassigns_live_pages_and_clears_their_validation() -> None:
    rmp = Rmp()
    rmp.firmware_assign(SPAS[2], 3, 0x5000)  # validated, for another guest
    assert rmp.rmpupdate_pages(SPAS, GPAS, 7) == (RmpStatus.SUCCESS, len(SPAS))
    entry = rmp.entry(SPAS[2])
    assert (entry.asid, entry.gpa, entry.validated) == (7, GPAS[2], False)


def test_a_run_stops_at_an_immutable_page() -> None:
    rmp = Rmp()
    rmp.firmware_own(SPAS[3])
    assert rmp.rmpupdate_pages(SPAS, GPAS, 7) == (RmpStatus.FAIL_PERMISSION, 3)
    assert all(e.asid == 7 for e in _entries(rmp, SPAS[:3]))
    assert rmp.entry(SPAS[3]).immutable and rmp.entry(SPAS[3]).asid == 0
    assert not any(e.assigned for e in _entries(rmp, SPAS[4:]))


@pytest.mark.parametrize("which", ["spa", "gpa"])
def test_a_run_stops_at_a_misaligned_page(which: str) -> None:
    rmp = Rmp()
    spas, gpas = list(SPAS), list(GPAS)
    (spas if which == "spa" else gpas)[4] += 0x10
    assert rmp.rmpupdate_pages(spas, gpas, 7) == (RmpStatus.FAIL_INPUT, 4)
    assert all(e.assigned for e in _entries(rmp, SPAS[:4]))
    assert not any(e.assigned for e in _entries(rmp, SPAS[4:]))


def test_a_run_needs_one_guest_page_per_system_page() -> None:
    with pytest.raises(UsageError, match="6 system pages at 5 guest pages"):
        Rmp().rmpupdate_pages(SPAS, GPAS[:5], 7)


# -- the host's writes over several pages ------------------------------------------------------
def test_a_host_write_over_pages_is_refused_at_the_first_owned_page() -> None:
    rmp = Rmp()
    assert rmp.check_host_writes(0x10000, 3 * PAGE_SIZE) is None
    rmp.rmpupdate(0x13000, assigned=True, asid=4, gpa=0)
    rmp.rmpupdate(0x12000, assigned=True, asid=5, gpa=0)
    assert rmp.check_host_writes(0x10000, 2 * PAGE_SIZE) is None  # stops short of 0x12000
    fault = rmp.check_host_writes(0x10010, 3 * PAGE_SIZE)
    assert fault is not None
    assert (fault.kind, fault.address, fault.who) == (FaultKind.HOST_PF, 0x12000, Who.HOST)
    assert fault.error_code == PFERR_RMP | PFERR_WRITE and "ASID 5" in fault.reason
    assert rmp.check_host_writes(0x12FFF, 1) is not None  # one byte of an owned page
    assert rmp.check_host_writes(0x12010, 0) is not None  # an empty write inside it, too
    assert rmp.check_host_writes(0x12000, 0) is None  # an empty write at its start touches none
    rmp.entry(0x12000).assigned = False  # a stored entry that no longer owns its page
    assert rmp.check_host_writes(0x12000, PAGE_SIZE) is None


def test_the_hosts_zeroing_is_refused_like_its_writes() -> None:
    machine = Machine(8 * MIB)
    machine.rmp.rmpupdate(0x21000, assigned=True, asid=2, gpa=0)
    with pytest.raises(FaultRaised) as raised:
        machine.host_zero(0x20000, 2 * PAGE_SIZE)
    assert raised.value.fault.address == 0x21000 and machine.faults == [raised.value.fault]
    with pytest.raises(FaultRaised):
        machine.host_write(0x20FFF, b"ab")
    with pytest.raises(UsageError, match="outside DRAM"):
        machine.host_zero(8 * MIB - PAGE_SIZE, 2 * PAGE_SIZE)
    machine.host_zero(0x22000, PAGE_SIZE)  # the next page is the host's


# -- zeroing and page views --------------------------------------------------------------------
def test_zeroing_clears_what_was_written_however_it_was_written() -> None:
    dram = Dram(8 * MIB)
    dram.write(0x3000, b"\xff" * 3 * PAGE_SIZE)  # pages 3, 4, 5
    dram.span(0x7000, PAGE_SIZE)[:] = 0xEE  # a writable span
    dram.page(9)[:] = 0xDD  # a page view
    dram.page(9)[0] = 0xDC  # the same view again
    dram.zero(0x3800, 0x7000)  # 0x3800 .. 0xA800
    assert dram.read(0x3000, 0x800) == b"\xff" * 0x800  # before the range: kept
    assert dram.read(0x3800, 0x7000) == bytes(0x7000)
    dram.page(12)[:] = 0xCC
    dram.zero(0xC000, 0x10)
    assert dram.read(0xC000, PAGE_SIZE) == bytes(0x10) + b"\xcc" * (PAGE_SIZE - 0x10)


def test_zeroing_a_large_range_with_few_written_pages() -> None:
    dram = Dram(8 * MIB)
    dram.write(CHUNK_SIZE - 4, b"abcdefgh")  # across two chunks
    dram.zero(0, 8 * MIB)
    assert dram.read(CHUNK_SIZE - 4, 8) == bytes(8)


def test_zeroing_never_written_memory_allocates_nothing() -> None:
    dram = Dram(64 * MIB)
    dram.zero(0, 64 * MIB)
    assert dram.allocated_bytes == 0
    with pytest.raises(UsageError, match="outside DRAM"):
        dram.zero(64 * MIB - 8, 16)


def test_a_page_view_is_the_page_and_only_pages_in_dram_have_one() -> None:
    dram = Dram(4 * MIB)
    view = dram.page(0x201)
    view[:3] = np.frombuffer(b"abc", dtype=np.uint8)
    assert dram.read(0x201000, 3) == b"abc" and view.size == PAGE_SIZE
    assert dram.page(0x201) is view
    assert dram.page(0x3FF).size == PAGE_SIZE  # the last page
    for frame in (0x400, -1):
        with pytest.raises(UsageError, match="outside DRAM"):
            dram.page(frame)


# -- the nested page table of a run ------------------------------------------------------------
def _vm(pages: int = 16) -> VirtualMachine:
    return VirtualMachine(Machine(8 * MIB), 1, Mode.SEV_SNP, pages * PAGE_SIZE)


def test_a_run_is_mapped_as_one_map_per_page_would() -> None:
    one, run = _vm(), _vm()
    for gpa, spa in zip(GPAS, SPAS, strict=True):
        one.map(gpa, spa)
    run.map_pages(GPAS, SPAS)
    assert run.nested == one.nested
    assert [run.translate(gpa + 5) for gpa in GPAS] == [spa + 5 for spa in SPAS]
    run.map_pages([], [])
    assert run.nested == one.nested


@pytest.mark.parametrize(
    ("gpa", "spa", "error"),
    [
        (16 * PAGE_SIZE, 0x40000, "outside the guest's memory"),
        (-PAGE_SIZE, 0x40000, "outside the guest's memory"),
        (0x3010, 0x40000, "not page-aligned"),
        (0x3000, 0x40010, "not page-aligned"),
        (0x3000, 8 * MIB, "outside DRAM"),
        (0x3000, -PAGE_SIZE, "outside DRAM"),
    ],
)
def test_a_run_stops_at_the_first_page_map_refuses(gpa: int, spa: int, error: str) -> None:
    vm = _vm()
    gpas, spas = [0x1000, 0x2000, gpa, 0x4000], [0x10000, 0x11000, spa, 0x13000]
    with pytest.raises(UsageError, match=error):
        vm.map_pages(gpas, spas)
    assert vm.nested == {1: 0x10, 2: 0x11}  # the pages before it, as one by one


def test_a_run_at_the_last_pages_of_both_memories() -> None:
    vm = _vm()
    vm.map_pages([15 * PAGE_SIZE], [8 * MIB - PAGE_SIZE])
    assert vm.nested == {15: (8 * MIB - PAGE_SIZE) >> 12}
    with pytest.raises(UsageError, match="2 guest pages mapped at 1 system pages"):
        vm.map_pages([0, PAGE_SIZE], [0x10000])


# -- the allocator -----------------------------------------------------------------------------
def test_allocated_pages_are_zero_whatever_they_held() -> None:
    host = Hypervisor(Machine(16 * MIB))
    first = host.allocate_page()
    host.machine.host_write(first + 3 * PAGE_SIZE, b"\x77" * 2 * PAGE_SIZE)  # not handed out yet
    guest = host.create_vm(Mode.SEV_SNP, 4 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0x2000)
    kernel.cpu.write(0x2000, b"\x55" * PAGE_SIZE)  # guest ciphertext in one of its pages
    used = host.spa_of(guest, 0x2000)
    host.destroy_vm(guest)
    pages = host.allocate_pages(12)
    assert used in pages and first + 3 * PAGE_SIZE in pages and first + 4 * PAGE_SIZE in pages
    assert all(host.machine.host_read(spa, PAGE_SIZE) == bytes(PAGE_SIZE) for spa in pages)


# -- the one-page access path ------------------------------------------------------------------
def test_a_guest_write_must_be_as_long_as_it_says() -> None:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(Mode.SEV_SNP, 4 * PAGE_SIZE)
    with pytest.raises(UsageError, match="0x3 bytes given as 0x4 bytes"):
        guest.vm.access(0x1000, 4, data=b"abc")


def test_the_engine_keeps_the_rest_of_a_page_and_needs_a_live_key() -> None:
    machine = Machine(8 * MIB)
    engine = machine.engine
    engine.activate(3)
    engine.write(3, 0x40000, bytes(range(256)) * 16)
    assert engine.access_page(3, 0x40, 0x10, 4, b"WXYZ") == b""
    expected = bytearray(bytes(range(256)) * 16)
    expected[0x10:0x14] = b"WXYZ"
    assert engine.read(3, 0x40000, PAGE_SIZE) == bytes(expected)
    assert engine.access_page(3, 0x40, 0xFFC, 4, None) == bytes(expected[0xFFC:])
    assert engine.access_page(3, 0x40, 0, PAGE_SIZE, None) == bytes(expected)
    engine.access_page(3, 0x41, 0, PAGE_SIZE, bytes(expected))
    assert machine.host_read(0x41000, PAGE_SIZE) != machine.host_read(0x40000, PAGE_SIZE)
    assert engine.read(3, 0x41000, PAGE_SIZE) == bytes(expected)
    engine.deactivate(3)
    with pytest.raises(StateError, match="ASID 3 has no key"):
        engine.access_page(3, 0x40, 0, 4, None)


@pytest.mark.parametrize("pages", [1, 2])
def test_the_engines_page_operations_refuse_pages_off_a_boundary_or_outside_dram(
    pages: int,
) -> None:
    machine = Machine(8 * MIB)
    engine = machine.engine
    engine.activate(3)
    size = pages * PAGE_SIZE
    for spa, error in ((0x40010, "not page-aligned"), (8 * MIB - PAGE_SIZE * pages + PAGE_SIZE,
                                                         "outside DRAM"), (-size, "outside DRAM")):
        with pytest.raises(UsageError, match=error):
            engine.write_pages(3, spa, bytes(size))
        with pytest.raises(UsageError, match=error):
            engine.read_pages(3, spa, pages)
    engine.write_pages(3, 8 * MIB - size, b"\x01" * size)  # the last pages
    assert engine.read_pages(3, 8 * MIB - size, pages) == b"\x01" * size
    assert machine.host_read(8 * MIB - size, size) != b"\x01" * size


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4 * PAGE_SIZE - 1), st.integers(0, 2 * PAGE_SIZE),
                  st.booleans(), st.binary(min_size=1, max_size=1)),
        min_size=1, max_size=12,
    )
)
def test_guest_accesses_match_a_byte_array_and_the_engines_own_reads(
    steps: list[tuple[int, int, bool, bytes]],
) -> None:
    host = Hypervisor(Machine(16 * MIB))
    guest = host.create_vm(Mode.SEV_SNP, 4 * PAGE_SIZE)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 4 * PAGE_SIZE)
    model = bytearray(4 * PAGE_SIZE)
    kernel.cpu.write(0, bytes(model))
    for offset, wanted, write, fill in steps:
        size = min(wanted, 4 * PAGE_SIZE - offset)
        if write:
            data = (fill + bytes(range(251))) * (size // 252 + 1)
            kernel.cpu.write(offset, data[:size])
            model[offset : offset + size] = data[:size]
        else:
            assert kernel.cpu.read(offset, size) == model[offset : offset + size]
    engine, asid = host.machine.engine, guest.vm.asid
    pages = [
        engine.read(asid, host.spa_of(guest, gpa), PAGE_SIZE)
        for gpa in range(0, len(model), PAGE_SIZE)
    ]
    assert b"".join(pages) == bytes(model)
