"""Every check of a guest's access path (`VirtualMachine.access`), pinned one by one: the bounds
of guest-physical memory, the write length, #NPF without a nested entry, the RMP of an SNP guest,
the host-write check of any other guest on an SNP host, private accesses through the engine and
shared ones to DRAM, accesses across pages; and the C-bit, the nested translation and the
modes' properties."""

from __future__ import annotations

import pytest

from cvm.errors import UsageError
from cvm.hardware.fault import (
    PFERR_ENC,
    PFERR_RMP,
    PFERR_WRITE,
    VC_PAGE_NOT_VALIDATED,
    Fault,
    FaultKind,
    FaultRaised,
    Who,
)
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vm import (
    Mode,
    VirtualMachine,
    encrypts_memory,
    encrypts_registers,
    is_snp,
)

MIB = 1 << 20
BASE = 0x10_0000  # the first system page the tests map guest memory at
ASID = 5


def _vm(mode: Mode, pages: int = 4, *, snp_host: bool = True) -> VirtualMachine:
    """A VM of ``pages`` pages mapped at BASE, BASE + 4K, ...; an SNP guest's pages assigned
    to it and validated at their GPA, as after the launch."""
    machine = Machine(4 * MIB, snp_enabled=snp_host)
    asid = 0 if mode is Mode.PLAIN else ASID
    if asid:
        machine.engine.activate(asid)
    vm = VirtualMachine(machine, asid, mode, pages * PAGE_SIZE)
    for page in range(pages):
        vm.map(page * PAGE_SIZE, BASE + page * PAGE_SIZE)
        if mode is Mode.SEV_SNP:
            machine.rmp.firmware_assign(BASE + page * PAGE_SIZE, asid, page * PAGE_SIZE)
    return vm


def _raised(call: object) -> Fault:
    assert callable(call)
    with pytest.raises(FaultRaised) as refused:
        call()
    return refused.value.fault


# -- the modes -----------------------------------------------------------------------------------
def test_which_modes_encrypt_memory_registers_and_check_the_rmp() -> None:
    assert [encrypts_memory(m) for m in Mode] == [False, True, True, True]
    assert [encrypts_registers(m) for m in Mode] == [False, False, True, True]
    assert [is_snp(m) for m in Mode] == [False, False, False, True]
    assert [(m.encrypts_memory, m.encrypts_registers, m.snp) for m in Mode] == [
        (encrypts_memory(m), encrypts_registers(m), is_snp(m)) for m in Mode
    ]


def test_a_mode_is_named_by_its_value_or_a_short_alias_and_nothing_else() -> None:
    assert [Mode.parse(t) for t in ("plain", "sev", "sev-es", "sev-snp", "snp", "es")] == [
        Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP, Mode.SEV_SNP, Mode.SEV_ES,
    ]
    with pytest.raises(UsageError) as refused:
        Mode.parse("SNP")
    assert str(refused.value) == (
        "unknown mode 'SNP' (choose from plain, sev, sev-es, sev-snp)"
    )


# -- the VM's size, the nested table and the C-bit -----------------------------------------------
@pytest.mark.parametrize("size", [0, -PAGE_SIZE, PAGE_SIZE + 1])
def test_guest_memory_is_a_positive_whole_number_of_pages(size: int) -> None:
    machine = Machine(2 * MIB)
    with pytest.raises(UsageError) as refused:
        VirtualMachine(machine, 0, Mode.PLAIN, size)
    assert str(refused.value) == (
        f"guest memory size {size:#x} is not a whole number of pages"
    )


def test_translate_keeps_the_offset_and_knows_no_unmapped_page() -> None:
    vm = _vm(Mode.SEV, 3)
    assert vm.translate(0) == BASE
    assert vm.translate(PAGE_SIZE + 0x123) == BASE + PAGE_SIZE + 0x123
    assert vm.translate(2 * PAGE_SIZE + PAGE_SIZE - 1) == BASE + 3 * PAGE_SIZE - 1
    del vm.nested[1]
    assert vm.translate(PAGE_SIZE + 0x123) is None
    assert vm.translate(3 * PAGE_SIZE) is None


def test_map_checks_the_guest_page_the_system_page_and_the_alignment() -> None:
    vm = _vm(Mode.SEV, 2)
    with pytest.raises(UsageError, match=r"guest-physical address 0x2000\+0x1 is outside"):
        vm.map(2 * PAGE_SIZE, BASE)
    with pytest.raises(UsageError, match="address 0x100010 is not page-aligned"):
        vm.map(0, BASE + 0x10)
    with pytest.raises(UsageError) as refused:
        vm.map(0x10, BASE)
    assert str(refused.value) == "guest-physical address 0x10 is not page-aligned"
    with pytest.raises(UsageError) as refused:
        vm.map(2 * PAGE_SIZE - 1, BASE)  # its last byte: inside, but not a page
    assert str(refused.value) == "guest-physical address 0x1fff is not page-aligned"
    vm.map(PAGE_SIZE, BASE)  # two guest pages may share a system page: the host decides
    assert vm.translate(PAGE_SIZE) == BASE


def test_only_a_guest_with_a_memory_key_has_a_c_bit() -> None:
    plain = _vm(Mode.PLAIN)
    with pytest.raises(UsageError) as refused:
        plain.set_private(0, True)
    assert str(refused.value) == "a plain guest has no C-bit"
    plain.set_private(0, False)  # clearing a bit it never had is no error
    assert not plain.is_private(0)
    sev = _vm(Mode.SEV)
    sev.set_private(PAGE_SIZE + 0x80, True)  # the page holding the address
    assert [sev.is_private(p * PAGE_SIZE) for p in range(4)] == [False, True, False, False]
    assert sev.is_private(2 * PAGE_SIZE - 1)
    sev.set_private(PAGE_SIZE, False)
    assert not sev.is_private(PAGE_SIZE)
    with pytest.raises(UsageError, match=r"0x4000\+0x1 is outside the guest's memory"):
        sev.set_private(4 * PAGE_SIZE, True)
    sev.set_private(4 * PAGE_SIZE - 1, True)  # the last byte is in the last page
    assert sev.is_private(3 * PAGE_SIZE)


# -- bounds and lengths --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gpa", "size"), [(-1, 1), (0, -1), (4 * PAGE_SIZE - 3, 4), (4 * PAGE_SIZE, 1)]
)
def test_an_access_outside_guest_memory_is_refused_before_any_lookup(gpa: int, size: int) -> None:
    vm = _vm(Mode.PLAIN)
    vm.nested.clear()  # an access that got past the bounds would fault instead
    with pytest.raises(UsageError) as refused:
        vm.access(gpa, size)
    assert str(refused.value) == (
        f"guest-physical address {gpa:#x}+{size:#x} is outside the guest's memory (0..0x4000)"
    )
    assert vm.machine.faults == []


def test_the_last_bytes_of_guest_memory_are_inside_it() -> None:
    vm = _vm(Mode.PLAIN)
    vm.access(4 * PAGE_SIZE - 4, 4, data=b"last")
    assert vm.access(4 * PAGE_SIZE - 4, 4) == b"last"
    assert vm.access(4 * PAGE_SIZE - 1, 0) == b""
    vm.check_gpa(0, 4 * PAGE_SIZE)
    vm.check_gpa(4 * PAGE_SIZE, 0)  # the empty range at the end


@pytest.mark.parametrize("given", [b"abc", b"abcde"])
def test_a_write_must_be_as_long_as_it_says(given: bytes) -> None:
    vm = _vm(Mode.PLAIN)
    with pytest.raises(UsageError) as refused:
        vm.access(0, 4, data=given)
    assert str(refused.value) == f"a write of {len(given):#x} bytes given as 0x4 bytes"
    assert vm.machine.dram.read(BASE, 8) == bytes(8)


# -- the nested page table -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("write", [False, True])
def test_a_page_without_a_nested_entry_is_a_not_present_npf(mode: Mode, write: bool) -> None:
    vm = _vm(mode)
    del vm.nested[2]
    data = b"xy" if write else None
    fault = _raised(lambda: vm.access(2 * PAGE_SIZE + 0x10, 2, vmpl=3, data=data))
    assert fault == Fault(
        FaultKind.NPF, 2 * PAGE_SIZE + 0x10, Who.GUEST, 0, "no nested page table entry", 3,
        vm.asid,
    )
    assert vm.machine.faults == [fault]


# -- SNP: the RMP decides -------------------------------------------------------------------------
def test_an_snp_guests_private_access_needs_a_validated_page() -> None:
    vm = _vm(Mode.SEV_SNP)
    vm.machine.rmp.rmpupdate(BASE + PAGE_SIZE, assigned=True, asid=ASID, gpa=PAGE_SIZE)
    vm.set_private(PAGE_SIZE, True)
    fault = _raised(lambda: vm.access(PAGE_SIZE + 8, 8, vmpl=2))
    assert fault == Fault(
        FaultKind.VC, PAGE_SIZE + 8, Who.GUEST, VC_PAGE_NOT_VALIDATED, "page not validated", 2,
        ASID,
    )
    assert vm.machine.faults == [fault]


@pytest.mark.parametrize("write", [False, True])
def test_an_snp_guests_shared_access_to_its_own_page_is_an_npf_with_the_write_bit(
    write: bool,
) -> None:
    vm = _vm(Mode.SEV_SNP)
    data = b"\1" if write else None
    fault = _raised(lambda: vm.access(0x20, 1, vmpl=1, data=data))
    assert fault == Fault(
        FaultKind.NPF, 0x20, Who.GUEST, PFERR_RMP | (PFERR_WRITE if write else 0),
        "shared access to a page assigned to a guest", 1, ASID,
    )


def test_an_snp_guests_private_access_to_a_page_it_does_not_own_carries_its_vmpl() -> None:
    vm = _vm(Mode.SEV_SNP)
    vm.machine.rmp.rmpupdate(BASE + 3 * PAGE_SIZE, assigned=False)
    vm.set_private(3 * PAGE_SIZE, True)
    fault = _raised(lambda: vm.access(3 * PAGE_SIZE, 4, vmpl=2, data=b"evil"))
    assert fault == Fault(
        FaultKind.NPF, 3 * PAGE_SIZE, Who.GUEST, PFERR_RMP | PFERR_ENC | PFERR_WRITE,
        "private access to a page not assigned to this guest", 2, ASID,
    )


def test_an_snp_guest_reads_and_writes_shared_and_private_pages_the_rmp_allows() -> None:
    vm = _vm(Mode.SEV_SNP)
    machine = vm.machine
    machine.rmp.rmpupdate(BASE + 2 * PAGE_SIZE, assigned=False)  # the host's: shared
    vm.set_private(0, True)
    vm.access(0x40, 6, data=b"secret")
    vm.access(2 * PAGE_SIZE + 0x40, 6, data=b"public")
    assert vm.access(0x40, 6) == b"secret"
    assert vm.access(2 * PAGE_SIZE + 0x40, 6) == b"public"
    assert machine.dram.read(BASE + 2 * PAGE_SIZE + 0x40, 6) == b"public"
    assert b"secret" not in machine.dram.read(BASE, PAGE_SIZE)
    assert machine.engine.read(ASID, BASE + 0x40, 6) == b"secret"
    assert machine.faults == []


def test_an_snp_guests_access_is_checked_at_the_gpa_it_made() -> None:
    """The RMP entry names the GPA the page was assigned at: the same system page reached
    through another guest page (the host changed the nested table) is refused."""
    vm = _vm(Mode.SEV_SNP)
    vm.set_private(PAGE_SIZE, True)
    vm.nested[1] = BASE >> 12  # guest page 1 now points at page 0's system page
    fault = _raised(lambda: vm.access(PAGE_SIZE + 4, 4))
    assert fault.error_code == PFERR_RMP | PFERR_ENC
    assert fault.reason == "nested mapping does not match the RMP: page belongs to GPA 0x0"


# -- another guest on an SNP host: the host-write check ------------------------------------------
@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV, Mode.SEV_ES])
def test_a_non_snp_guest_on_an_snp_host_cannot_write_a_page_the_rmp_assigns(mode: Mode) -> None:
    vm = _vm(mode)
    machine = vm.machine
    machine.dram.write(BASE + PAGE_SIZE, b"owned!")
    machine.rmp.firmware_assign(BASE + PAGE_SIZE, 9, 0)  # the host maps another guest's page
    private = mode is not Mode.PLAIN
    vm.set_private(PAGE_SIZE, private)
    fault = _raised(lambda: vm.access(PAGE_SIZE + 2, 2, data=b"XX"))
    assert fault == Fault(
        FaultKind.HOST_PF, BASE + PAGE_SIZE, Who.HOST, PFERR_RMP | PFERR_WRITE,
        "RMP violation: page is assigned to ASID 9",
    )
    assert machine.faults == [fault]
    assert machine.dram.read(BASE + PAGE_SIZE, 6) == b"owned!"
    # a read is no write: it sees the page as it is (ciphertext of another key if private)
    read = vm.access(PAGE_SIZE, 6)
    assert (read == b"owned!") is not private
    vm.access(0, 2, data=b"ok")  # its own pages stay writable
    assert vm.access(0, 2) == b"ok"


def test_without_snp_on_the_host_the_rmp_is_not_consulted() -> None:
    vm = _vm(Mode.SEV, snp_host=False)
    vm.machine.rmp.firmware_assign(BASE, 9, 0)
    vm.access(0, 3, data=b"abc")
    assert vm.machine.dram.read(BASE, 3) == b"abc"
    assert vm.machine.faults == []


# -- private through the engine, shared to DRAM --------------------------------------------------
@pytest.mark.parametrize("mode", [Mode.SEV, Mode.SEV_ES])
def test_private_pages_go_through_the_engine_and_shared_ones_to_dram(mode: Mode) -> None:
    vm = _vm(mode)
    machine = vm.machine
    vm.set_private(PAGE_SIZE, True)
    vm.access(PAGE_SIZE + 0x30, 5, data=b"hello")
    vm.access(0x30, 5, data=b"world")
    assert vm.access(PAGE_SIZE + 0x30, 5) == b"hello"
    assert vm.access(0x30, 5) == b"world"
    assert machine.engine.read(ASID, BASE + PAGE_SIZE + 0x30, 5) == b"hello"
    assert b"hello" not in machine.dram.read(BASE + PAGE_SIZE, PAGE_SIZE)
    assert machine.dram.read(BASE + 0x30, 5) == b"world"
    assert machine.dram.read(BASE + 0x30 - 1, 7) == b"\0world\0"
    vm.set_private(PAGE_SIZE, False)  # the same page read shared: its ciphertext
    assert vm.access(PAGE_SIZE + 0x30, 5) != b"hello"


def test_a_write_returns_nothing_and_a_read_exactly_what_was_asked() -> None:
    vm = _vm(Mode.SEV)
    vm.set_private(0, True)
    assert vm.access(0x10, 3, data=b"abc") == b""
    assert vm.access(PAGE_SIZE + 0x10, 3, data=b"def") == b""
    assert vm.access(0x10, 3) == b"abc"
    assert vm.access(0x11, 1) == b"b"
    assert vm.access(PAGE_SIZE + 0x0F, 5) == b"\0def\0"


# -- accesses across pages -----------------------------------------------------------------------
def test_an_access_across_pages_is_one_access_per_page_each_with_its_own_c_bit() -> None:
    vm = _vm(Mode.SEV)
    machine = vm.machine
    vm.set_private(PAGE_SIZE, True)
    data = bytes(range(256)) * 24  # 6 KiB from 0xF00: pages 0 (shared), 1 (private), 2
    vm.access(0xF00, len(data), data=data)
    assert vm.access(0xF00, len(data)) == data
    assert machine.dram.read(BASE + 0xF00, 0x100) == data[:0x100]
    assert machine.engine.read(ASID, BASE + PAGE_SIZE, PAGE_SIZE) == data[0x100 : 0x1100]
    assert machine.dram.read(BASE + 2 * PAGE_SIZE, 0x700) == data[0x1100:]
    assert machine.dram.read(BASE + 2 * PAGE_SIZE + 0x700, 1) == b"\0"


def test_a_whole_page_at_its_start_is_one_access_and_one_byte_more_is_two() -> None:
    vm = _vm(Mode.PLAIN)
    del vm.nested[1]
    vm.access(0, PAGE_SIZE, data=b"\xAA" * PAGE_SIZE)  # within page 0: no fault
    assert vm.access(0, PAGE_SIZE) == b"\xAA" * PAGE_SIZE
    fault = _raised(lambda: vm.access(1, PAGE_SIZE))  # reaches the unmapped page 1
    assert (fault.kind, fault.address) == (FaultKind.NPF, PAGE_SIZE)


def test_an_access_across_pages_stops_at_the_first_page_that_faults() -> None:
    vm = _vm(Mode.SEV_SNP)
    vm.set_private(0, True)
    vm.set_private(PAGE_SIZE, True)
    vm.machine.rmp.rmpupdate(BASE + PAGE_SIZE, assigned=True, asid=ASID, gpa=PAGE_SIZE)
    fault = _raised(lambda: vm.access(PAGE_SIZE - 2, 4, data=b"abcd"))
    assert (fault.kind, fault.address, fault.vmpl) == (FaultKind.VC, PAGE_SIZE, 0)
    assert vm.access(PAGE_SIZE - 2, 2) == b"ab"  # the first page was written, in order


def test_an_access_across_pages_carries_its_vmpl_to_every_page() -> None:
    vm = _vm(Mode.SEV)
    del vm.nested[1]
    fault = _raised(lambda: vm.access(PAGE_SIZE - 1, 2, vmpl=2))
    assert (fault.kind, fault.address, fault.vmpl) == (FaultKind.NPF, PAGE_SIZE, 2)


def test_an_access_across_pages_ends_at_its_last_byte() -> None:
    """Pages 0 and 1 read to their end; page 2 has no nested entry and is not touched."""
    vm = _vm(Mode.PLAIN)
    del vm.nested[2]
    vm.access(0x800, 0x1800, data=b"\x5A" * 0x1800)
    assert vm.access(0x800, 0x1800) == b"\x5A" * 0x1800
    assert vm.machine.faults == []


# -- a run of nested entries -----------------------------------------------------------------------
def _count_maps(vm: VirtualMachine) -> list[int]:
    calls: list[int] = []
    real = vm.map

    def spy(gpa: int, spa: int) -> None:
        calls.append(gpa)
        real(gpa, spa)

    vm.map = spy  # type: ignore[method-assign]
    return calls


def test_a_clean_run_over_both_memories_is_entered_in_one_step() -> None:
    """A run from GPA 0 and SPA 0 to the last page of each passes every check at once: no
    page goes through :meth:`map`; one page off a boundary sends the whole run page by page."""
    machine = Machine(2 * MIB)
    vm = VirtualMachine(machine, 0, Mode.PLAIN, 4 * PAGE_SIZE)
    calls = _count_maps(vm)
    gpas = [0, PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE]
    spas = [0, 0x8000, 0x9000, 2 * MIB - PAGE_SIZE]
    vm.map_pages(gpas, spas)
    assert calls == []
    assert vm.nested == {0: 0, 1: 8, 2: 9, 3: (2 * MIB >> 12) - 1}
    vm.map_pages([0, PAGE_SIZE], [0x4000, 0x5000])
    assert calls == []
    with pytest.raises(UsageError, match="address 0x5010 is not page-aligned"):
        vm.map_pages([0, PAGE_SIZE], [0x6000, 0x5010])
    assert calls == [0, PAGE_SIZE] and vm.nested[0] == 6
