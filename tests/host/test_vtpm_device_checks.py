"""The host's vTPM device exit by exit: which exits ring it (a VMMCALL with the doorbell, or a
VMGEXIT whose page-aligned GHCB names the doorbell) and which do not, a buffer address it
cannot use, the locality the guest asked for, and what a malformed buffer gets and leaves in
the device's log."""

from __future__ import annotations

import pytest

from cvm.errors import StatusError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.svsm.vtpm_command import VtpmCommandRequest, VtpmCommandResponse
from cvm.formats.tpm2.command import Command
from cvm.formats.tpm2.constants import TpmAlg, TpmCc
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.host_transport import TPM_DOORBELL
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_CPUID, EXIT_VMGEXIT, EXIT_VMMCALL, Vcpu, VmExit
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor
from cvm.host.vtpm_device import HostVtpm
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import PersistentState

BUFFER, GHCB = 0x2000, 0x4000
FAILURE = bytes.fromhex("8001" "0000000a" "00000101")  # TPM_ST_NO_SESSIONS, TPM_RC_FAILURE


def _startup(locality: int = 0) -> bytes:
    return VtpmCommandRequest(locality, Command(TpmCc.STARTUP, parameters=b"\0\0").to_bytes()
                              ).to_bytes()


class _Device:
    """A plain guest whose host has a vTPM; ``ring`` is one exit as the host's hook sees it."""

    def __init__(self) -> None:
        host = Hypervisor(Machine(32 << 20))
        self.guest: Guest = host.create_vm(Mode.PLAIN, 8 * PAGE_SIZE)
        self.cpu: Vcpu = self.guest.vcpus[0]
        self.device = HostVtpm(Tpm(PersistentState.manufacture(lambda n: b"\x01" * n)))

    def ring(self, exit_code: int, info1: int = 0, info2: int = 0) -> None:
        self.device(self.guest, self.cpu, VmExit(0, exit_code, info1, info2))

    def page(self, gpa: int) -> bytes:
        return self.cpu.read(gpa, PAGE_SIZE)

    def ghcb(self, gpa: int, **fields: int) -> None:
        self.cpu.write(gpa, Ghcb.build(**fields).to_bytes())


def test_a_doorbell_runs_the_command_and_answers_in_the_buffer() -> None:
    tpm = _Device()
    tpm.cpu.write(BUFFER, _startup())
    tpm.ring(EXIT_VMMCALL, TPM_DOORBELL, BUFFER)
    response = VtpmCommandResponse.from_bytes(tpm.page(BUFFER)).response
    assert response == bytes.fromhex("8001" "0000000a" "00000000")
    assert tpm.device.commands == 1
    assert tpm.device.log == [VtpmCommandRequest.from_bytes(_startup()).command, response]


@pytest.mark.parametrize("gpa", [BUFFER + 8, BUFFER + 1, 64 << 20])
def test_a_buffer_not_on_a_page_of_the_guest_is_ignored(gpa: int) -> None:
    tpm = _Device()
    for page in (BUFFER, BUFFER + PAGE_SIZE):
        tpm.cpu.write(page, _startup())
    before = tpm.page(BUFFER) + tpm.page(BUFFER + PAGE_SIZE)
    tpm.ring(EXIT_VMMCALL, TPM_DOORBELL, gpa)
    assert tpm.device.commands == 0 and tpm.device.log == []
    assert tpm.page(BUFFER) + tpm.page(BUFFER + PAGE_SIZE) == before


def test_the_command_runs_at_the_locality_the_guest_asked_for() -> None:
    """TPM2_Startup from locality 3 leaves 3 in PCR 0's last byte (PC Client PTP, PCR 0's
    locality indicator); a locality the TPM lacks is its TPM_RC_LOCALITY answer."""
    tpm = _Device()
    tpm.cpu.write(BUFFER, _startup(locality=3))
    tpm.ring(EXIT_VMMCALL, TPM_DOORBELL, BUFFER)

    def execute(command: bytes, locality: int = 0) -> bytes:
        tpm.cpu.write(BUFFER, VtpmCommandRequest(locality, command).to_bytes())
        tpm.ring(EXIT_VMMCALL, TPM_DOORBELL, BUFFER)
        return VtpmCommandResponse.from_bytes(tpm.page(BUFFER)).response

    pcr0 = TpmClient(execute).pcr_read(PcrSelectionList.of("sha256", [0]))[2][0]
    assert pcr0 == bytes(31) + b"\x03"
    with pytest.raises(StatusError) as refused:  # PCR 17: extended from localities 2-4 only
        TpmClient(execute).pcr_extend(17, {TpmAlg.SHA256: bytes(32)})
    assert refused.value.code == TpmRc.LOCALITY
    TpmClient(lambda command: execute(command, 4)).pcr_extend(17, {TpmAlg.SHA256: bytes(32)})
    answer = execute(Command(TpmCc.STARTUP, parameters=b"\0\0").to_bytes(), 5)
    assert int.from_bytes(answer[6:10], "big") == TpmRc.LOCALITY


def test_a_malformed_buffer_gets_the_failure_and_is_logged_as_empty() -> None:
    tpm = _Device()
    tpm.cpu.write(BUFFER, b"\xff" * PAGE_SIZE)
    tpm.ring(EXIT_VMMCALL, TPM_DOORBELL, BUFFER)
    assert VtpmCommandResponse.from_bytes(tpm.page(BUFFER)).response == FAILURE
    assert tpm.device.log == [b"", FAILURE] and tpm.device.commands == 1


def test_a_ghcb_that_names_the_doorbell_rings_it() -> None:
    tpm = _Device()
    tpm.cpu.write(BUFFER, _startup())
    tpm.ghcb(GHCB, sw_exitcode=EXIT_VMMCALL, sw_exitinfo1=TPM_DOORBELL, sw_exitinfo2=BUFFER)
    tpm.cpu.ghcb_msr = GHCB
    tpm.ring(EXIT_VMGEXIT)
    assert tpm.device.commands == 1


@pytest.mark.parametrize(("exit_code", "info1"), [(EXIT_CPUID, TPM_DOORBELL),
                                                  (EXIT_VMMCALL, TPM_DOORBELL + 1)])
def test_a_ghcb_that_names_another_exit_is_not_the_tpms(exit_code: int, info1: int) -> None:
    tpm = _Device()
    tpm.cpu.write(BUFFER, _startup())
    tpm.ghcb(GHCB, sw_exitcode=exit_code, sw_exitinfo1=info1, sw_exitinfo2=BUFFER)
    tpm.cpu.ghcb_msr = GHCB
    tpm.ring(EXIT_VMGEXIT)
    assert tpm.device.commands == 0


def test_only_a_vmgexit_reads_the_ghcb() -> None:
    tpm = _Device()
    tpm.cpu.write(BUFFER, _startup())
    tpm.ghcb(GHCB, sw_exitcode=EXIT_VMMCALL, sw_exitinfo1=TPM_DOORBELL, sw_exitinfo2=BUFFER)
    tpm.cpu.ghcb_msr = GHCB
    tpm.ring(EXIT_CPUID)
    tpm.ring(EXIT_VMMCALL, 0x1234, BUFFER)
    assert tpm.device.commands == 0


def test_an_msr_protocol_value_is_not_a_ghcb_address() -> None:
    """The GHCB MSR holding a request (low bits set) is not read as a page, even where the
    bytes at that address would name the doorbell."""
    tpm = _Device()
    spa, after = tpm.guest.vm.translate(GHCB), tpm.guest.vm.translate(GHCB + PAGE_SIZE)
    assert spa is not None and after == spa + PAGE_SIZE  # what a read from GHCB+0x10 reaches
    tpm.cpu.write(BUFFER, _startup())
    tpm.ghcb(GHCB + 0x10, sw_exitcode=EXIT_VMMCALL, sw_exitinfo1=TPM_DOORBELL,
             sw_exitinfo2=BUFFER)
    tpm.cpu.ghcb_msr = GHCB + 0x10
    tpm.ring(EXIT_VMGEXIT)
    tpm.cpu.ghcb_msr = 0
    tpm.ring(EXIT_VMGEXIT)
    assert tpm.device.commands == 0
    tpm.cpu.ghcb_msr = 64 << 20  # page-aligned, outside the guest
    tpm.ring(EXIT_VMGEXIT)
    tpm.cpu.ghcb_msr = BUFFER  # a page that is not a GHCB
    tpm.ring(EXIT_VMGEXIT)
    assert tpm.device.commands == 0
