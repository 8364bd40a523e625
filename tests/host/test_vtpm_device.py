"""The host's vTPM (no SVSM): a shared command buffer and a doorbell — and the host sees all."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.svsm.vtpm_command import VtpmCommandResponse
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.host_transport import TPM_DOORBELL, HostTpmTransport
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.vcpu import EXIT_VMMCALL, Vcpu
from cvm.hardware.vm import Mode
from cvm.host.vm_run import load_host_image
from cvm.host.vmm import Hypervisor
from cvm.host.vtpm_device import HostVtpm
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import PersistentState

BUFFER, GHCB = 0x2000, 0x3000


def _vm(mode: Mode) -> tuple[Vcpu, HostVtpm, TpmClient]:
    host = Hypervisor(Machine(32 << 20))
    guest = host.create_vm(mode, 8 * PAGE_SIZE)
    device = HostVtpm(Tpm(PersistentState.manufacture(lambda n: b"\x01" * n)))
    host.exit_hooks.append(device)
    kernel = SevGuest(guest.vcpus[0])
    kernel.accept(0, 8 * PAGE_SIZE)
    if mode.encrypts_registers:
        kernel.setup_ghcb(GHCB)
    transport = HostTpmTransport(kernel, BUFFER)
    transport.start()
    client = TpmClient(transport.execute)
    client.startup()
    return guest.vcpus[0], device, client


@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.SEV, Mode.SEV_ES])
def test_the_guest_uses_the_hosts_tpm_and_the_host_sees_every_command(mode: Mode) -> None:
    _, device, client = _vm(mode)
    measured = hashlib.sha256(b"the kernel").digest()
    client.pcr_extend(9, {TpmAlg.SHA256: measured})
    value = client.pcr_read(PcrSelectionList.of("sha256", [9]))[2][0]
    assert value == hashlib.sha256(bytes(32) + measured).digest()
    assert device.commands == 3
    assert any(measured in command for command in device.log)  # the cost: nothing is hidden
    assert any(value in response for response in device.log)


def test_a_malformed_buffer_gets_a_failure_and_other_exits_are_not_the_tpms() -> None:
    cpu, device, _ = _vm(Mode.PLAIN)
    cpu.write(BUFFER, b"\xff" * PAGE_SIZE)
    cpu.vmexit(EXIT_VMMCALL, TPM_DOORBELL, BUFFER)
    response = VtpmCommandResponse.from_bytes(cpu.read(BUFFER, PAGE_SIZE)).response
    assert int.from_bytes(response[6:10], "big") == TpmRc.FAILURE
    before = device.commands
    cpu.vmexit(EXIT_VMMCALL, 0x1234, BUFFER)  # another hypercall: not the TPM's
    assert device.commands == before


def test_the_host_never_reads_the_owners_folder(tmp_path: Path) -> None:
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "provisioning.key").write_bytes(b"k" * 32)
    (tmp_path / "disk.img").write_bytes(b"")
    manifest = {"schema": "cvm-image/2",
                "firmware": {"ovmf": "owner/provisioning.key", "vars": "x", "svsm": None},
                "vtpm": {"state": "x"}, "disk": {"file": "disk.img"}}
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="never reads the owner's folder"):
        load_host_image(tmp_path)
    manifest["firmware"]["ovmf"] = "../elsewhere"
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="outside its folder"):
        load_host_image(tmp_path)
    (tmp_path / "image.json").write_text("[]")
    with pytest.raises(FormatError, match="not an image manifest"):
        load_host_image(tmp_path)
