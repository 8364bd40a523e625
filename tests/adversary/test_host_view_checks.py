"""What the host's view records at each exit and gathers for the canary scan: the VMCB's
registers (plain, SEV) or the GHCB page and MSR (SEV-ES) as they were when the exit happened,
named by exit number, ASID and code; the fault log and every hook's log; DRAM and files."""

from __future__ import annotations

from dataclasses import dataclass, field

from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.vmsa import REGISTER_NAMES
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.hardware.fault import Fault, FaultKind, Who
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_VMGEXIT, EXIT_VMMCALL, Vcpu, Vmcb, VmExit
from cvm.hardware.vm import Mode
from cvm.host.adversary.canary import CanaryScan, Leak
from cvm.host.adversary.host_view import HostView
from cvm.host.vmm import Guest, Hypervisor

GHCB = 0x3000
SECRET = b"0123456789abcdef"
KEY = b"\x01key\xfe345"  # one 8-byte window


def _host(mode: Mode) -> tuple[Hypervisor, Guest, HostView]:
    host = Hypervisor(Machine(32 << 20))
    guest = host.create_vm(mode, 8 * PAGE_SIZE)
    return host, guest, HostView(host)


def _registers(values: dict[str, int]) -> bytes:
    return b"".join(values.get(name, 0).to_bytes(8, "little") for name in REGISTER_NAMES)


def test_a_vmcb_exit_is_every_register_in_vmsa_order() -> None:
    _, guest, view = _host(Mode.PLAIN)
    cpu = guest.vcpus[0]
    cpu.live().update(rax=0x1122, rbx=0xFFFF_FFFF_FFFF_FFFF, r15=7)
    cpu.vmexit(EXIT_VMMCALL, 1, 2)
    cpu.vmexit(EXIT_VMMCALL)
    (where, data), (second, _) = view.exit_views
    assert where == "exit 0 (ASID 0, code 0x81): VMCB registers"
    assert second == "exit 1 (ASID 0, code 0x81): VMCB registers"
    saved = cpu.vmcb.save
    assert data == _registers(saved) and len(data) == 8 * len(REGISTER_NAMES)
    assert data[8 * REGISTER_NAMES.index("rbx"):][:8] == b"\xff" * 8


def test_a_register_is_kept_to_its_64_bits_and_a_missing_one_is_zero() -> None:
    host, guest, view = _host(Mode.SEV)
    vmcb = Vmcb(EXIT_VMMCALL, save={"rax": (1 << 64) | 5, "rcx": -1})
    host.exit_hooks[0](guest, guest.vcpus[0], VmExit(0, EXIT_VMMCALL, vmcb=vmcb))
    (where, data), = view.exit_views
    assert where == f"exit 0 (ASID {guest.vm.asid}, code 0x81): VMCB registers"
    assert data == _registers({"rax": 5, "rcx": (1 << 64) - 1})


def test_the_view_is_taken_before_any_other_hook_changes_the_registers() -> None:
    host = Hypervisor(Machine(32 << 20))

    def rewrite(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        assert info.vmcb is not None
        info.vmcb.save["rax"] = 0xBAD

    host.exit_hooks.append(rewrite)
    guest = host.create_vm(Mode.PLAIN, 8 * PAGE_SIZE)
    view = HostView(host)
    assert host.exit_hooks == [view._record, rewrite]
    guest.vcpus[0].live()["rax"] = 0x600D
    guest.vcpus[0].vmexit(EXIT_VMMCALL)
    rax = 8 * REGISTER_NAMES.index("rax")
    assert view.exit_views[0][1][rax : rax + 8] == (0x600D).to_bytes(8, "little")
    assert guest.vcpus[0].vmcb.save["rax"] == 0xBAD


def test_under_sev_es_the_ghcb_page_and_the_msr_protocol_are_seen() -> None:
    host, guest, view = _host(Mode.SEV_ES)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 8 * PAGE_SIZE)
    kernel.setup_ghcb(GHCB)
    msr_views = list(view.exit_views)
    assert [w for w, _ in msr_views] == [
        f"exit {n} (ASID {guest.vm.asid}, code 0x403): GHCB MSR" for n in range(len(msr_views))]
    assert msr_views and all(len(d) == 8 and int.from_bytes(d, "little") % PAGE_SIZE
                             for _, d in msr_views)
    cpu = guest.vcpus[0]
    assert cpu.ghcb_msr == GHCB
    cpu.write(GHCB, Ghcb.build(SECRET, sw_exitcode=0x1234).to_bytes())  # an exit no one handles
    cpu.vmexit(EXIT_VMGEXIT)
    cpu.write(GHCB, bytes(PAGE_SIZE))  # the guest clears it after the exit: the view keeps it
    where, page = view.exit_views[-1]
    assert where == f"exit {len(msr_views)} (ASID {guest.vm.asid}, code 0x403): GHCB"
    spa = guest.vm.translate(GHCB)
    assert spa is not None and len(page) == PAGE_SIZE
    assert page == Ghcb.build(SECRET, sw_exitcode=0x1234).to_bytes()
    assert host.machine.host_read(spa, PAGE_SIZE) == bytes(PAGE_SIZE)


def test_exits_that_show_no_registers_leave_nothing() -> None:
    host, guest, view = _host(Mode.SEV_ES)
    cpu = guest.vcpus[0]
    hook = host.exit_hooks[0]
    hook(guest, cpu, VmExit(0, EXIT_VMGEXIT))  # no GHCB MSR yet
    cpu.ghcb_msr = GHCB
    hook(guest, cpu, VmExit(0, EXIT_VMMCALL))  # not a VMGEXIT, registers encrypted
    cpu.ghcb_msr = 64 << 20  # page-aligned, outside the guest: no translation
    hook(guest, cpu, VmExit(0, EXIT_VMGEXIT))
    assert view.exit_views == []


@dataclass
class _Logger:
    log: list[object] = field(default_factory=list)

    def __call__(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        pass


class _NotALog:
    log = (b"a tuple is not a log",)

    def __call__(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        pass


def test_the_logs_are_the_faults_then_each_hooks_entries() -> None:
    host, _, view = _host(Mode.PLAIN)
    fault = Fault(FaultKind.HOST_PF, 0x5000, Who.HOST, 0x2, "guest page")
    host.machine.faults.append(fault)
    host.machine.faults.append(fault)
    logger = _Logger([b"bytes", (bytearray(b"in"), "a tuple", 3), "text", 4.5, (None,)])
    host.exit_hooks += [logger, _NotALog()]
    assert list(view.logs()) == [
        ("fault log #0", str(fault).encode()), ("fault log #1", str(fault).encode()),
        ("_Logger log #0", b"bytes"), ("_Logger log #1", b"in"), ("_Logger log #1", b"a tuple"),
        ("_Logger log #2", b"text")]
    assert all(type(data) is bytes for _, data in view.logs())


def test_the_scan_covers_dram_exits_logs_and_files() -> None:
    host, guest, view = _host(Mode.PLAIN)
    scanner = CanaryScan({"key": KEY})
    assert view.scan(scanner) == []
    guest.vcpus[0].write(0x1008, KEY)
    spa = guest.vm.translate(0x1008)
    assert spa is not None
    assert view.scan(scanner) == [Leak("key", 0, "DRAM", spa)]
    host.machine.dram.write(spa, bytes(8))
    guest.vcpus[0].live()["rdx"] = int.from_bytes(KEY, "little")
    guest.vcpus[0].vmexit(EXIT_VMMCALL)
    host.exit_hooks.append(_Logger([b"--" + KEY]))
    leaks = view.scan(scanner, {"disk.img": b"xyz" + KEY})
    exit_name = "exit 0 (ASID 0, code 0x81): VMCB registers"
    assert [(leak.where, leak.offset) for leak in leaks] == [
        (exit_name, 8 * REGISTER_NAMES.index("rdx")), ("_Logger log #0", 2),
        ("file disk.img", 3)]
