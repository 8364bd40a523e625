"""The guest's transport to the host's vTPM (:mod:`cvm.guest.tpm.host_transport`), byte for byte
as the host reads it: the request at locality 0 unless told otherwise, the rest of the shared
page zeroed (nothing the page held before is left for the host), the doorbell in the VMCB or —
under SEV-ES — in the GHCB, and the refusal to ring under SEV-ES without a GHCB."""

from __future__ import annotations

import pytest

from cvm.errors import StatusError
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.svsm.vtpm_command import BUFFER_SIZE, VtpmCommandRequest
from cvm.formats.tpm2.command import Command
from cvm.formats.tpm2.constants import TpmCc
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.tpm.host_transport import TPM_DOORBELL, HostTpmTransport
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_VMGEXIT, EXIT_VMMCALL, Vcpu, VmExit
from cvm.hardware.vm import Mode
from cvm.host.vmm import Guest, Hypervisor
from cvm.host.vtpm_device import HostVtpm
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import PersistentState

BUFFER, GHCB = 0x2000, 0x3000
STARTUP = Command(TpmCc.STARTUP, parameters=b"\x00\x00").to_bytes()


class HostView:
    """An exit hook before the vTPM device: what the host can read at each exit."""

    def __init__(self) -> None:
        self.exits: list[tuple[int, int | None, int | None]] = []
        self.buffers: list[bytes] = []
        self.ghcbs: list[Ghcb] = []

    def __call__(self, guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        machine, vm = guest.vm.machine, guest.vm
        self.exits.append((info.exit_code, info.exit_info1, info.exit_info2))
        spa = vm.translate(BUFFER)
        assert spa is not None
        self.buffers.append(machine.host_read(spa, BUFFER_SIZE))
        if info.exit_code == EXIT_VMGEXIT:
            ghcb_spa = vm.translate(vcpu.ghcb_msr)
            assert ghcb_spa is not None
            self.ghcbs.append(Ghcb.from_bytes(machine.host_read(ghcb_spa, PAGE_SIZE)))


def _guest(mode: Mode, ghcb: bool = True) -> tuple[SevGuest, HostView, HostTpmTransport]:
    host = Hypervisor(Machine(32 << 20))
    guest = host.create_vm(mode, 8 * PAGE_SIZE)
    view = HostView()
    host.exit_hooks += [view, HostVtpm(Tpm(PersistentState.manufacture(lambda n: b"\x01" * n)))]
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 8 * PAGE_SIZE)
    if ghcb and mode.encrypts_registers:
        kernel.setup_ghcb(GHCB)
    transport = HostTpmTransport(kernel, BUFFER)
    transport.start()
    view.exits.clear()
    view.buffers.clear()
    view.ghcbs.clear()
    return kernel, view, transport


@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV])
def test_the_host_reads_the_request_at_locality_0_with_the_rest_of_the_page_zeroed(
        mode: Mode) -> None:
    kernel, view, transport = _guest(mode)
    kernel.cpu.write(BUFFER, b"\xa5" * BUFFER_SIZE)  # what the page held before
    response = transport.execute(STARTUP)
    assert response[6:10] == b"\x00\x00\x00\x00"
    request = VtpmCommandRequest(0, STARTUP).to_bytes()
    assert view.buffers == [request + bytes(BUFFER_SIZE - len(request))]
    assert view.exits == [(EXIT_VMMCALL, TPM_DOORBELL, BUFFER)]


def test_a_locality_given_reaches_the_host() -> None:
    _, view, transport = _guest(Mode.PLAIN)
    transport.execute(STARTUP, locality=3)
    assert VtpmCommandRequest.from_bytes(view.buffers[0]) == VtpmCommandRequest(3, STARTUP)


def test_under_sev_es_the_doorbell_is_in_the_ghcb() -> None:
    kernel, view, transport = _guest(Mode.SEV_ES)
    response = transport.execute(STARTUP)
    assert response[6:10] == b"\x00\x00\x00\x00"
    assert [e[0] for e in view.exits] == [EXIT_VMGEXIT]
    (ghcb,) = view.ghcbs
    assert (ghcb.get("sw_exitcode"), ghcb.get("sw_exitinfo1"), ghcb.get("sw_exitinfo2")) == (
        EXIT_VMMCALL, TPM_DOORBELL, BUFFER)
    assert kernel.cpu.ghcb_msr == GHCB


def test_under_sev_es_without_a_ghcb_the_doorbell_is_refused_and_not_rung() -> None:
    _, view, transport = _guest(Mode.SEV_ES, ghcb=False)
    with pytest.raises(StatusError,
                       match=r"^the host vTPM doorbell needs a GHCB under SEV-ES$") as info:
        transport.execute(STARTUP)
    assert info.value.code == 0
    assert view.exits == []
