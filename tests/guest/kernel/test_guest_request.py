"""The guest's SNP_GUEST_REQUEST driver: its key and sequence numbers live in guest memory, a
failed exchange disables the VMPCK, and nothing the host can read holds a key byte."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from cvm.amd.kds import ChipFuses
from cvm.errors import IntegrityError, StateError, StatusError, UsageError
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.key_request import GuestFieldSelect, KeyRequest
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vcpu import Vcpu, VmExit
from cvm.host.launch import GuestRequestRelay, SnpLaunch, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Guest, Hypervisor

MIB = 1 << 20
SECRETS_GPA = 0x802000
SECTIONS = (
    MetadataSection(0x800000, 0x2000, SectionType.SNP_SEC_MEM),
    MetadataSection(SECRETS_GPA, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x803000, 0x1000, SectionType.CPUID),
)
WINDOW = 8  # an 8-byte run of a 32-byte secret found by chance in a few MiB: ~2^-40


@dataclass
class World:
    hv: Hypervisor
    psp: SecureProcessor
    relay: GuestRequestRelay
    launched: SnpLaunch

    def requester(self, vmpck: int = 0, vcpu: int = 0) -> GuestRequester:
        cpu = self.launched.guest.vcpus[vcpu]
        if cpu.registers is None:
            cpu.vmrun()
            return GuestRequester.start(cpu, SECRETS_GPA, vmpck)
        return GuestRequester(cpu, SECRETS_GPA, vmpck)

    def host_view(self) -> bytes:
        """Everything the host can read of this guest: DRAM of every page it backs (RAM,
        firmware, GHCB and shared pages), the VMSA pages, the VMCB save areas, the relay log."""
        machine, guest = self.hv.machine, self.launched.guest
        pages = list(guest.frames) + [v.vmsa_spa for v in guest.vcpus if v.vmsa_spa]
        parts = [machine.host_read(spa, PAGE_SIZE) for spa in pages]
        for vcpu in guest.vcpus:
            parts += [value.to_bytes(8, "little") for value in vcpu.vmcb.save.values()]
        for request, response in self.relay.log:
            parts += [request, response or b""]
        return b"\x00".join(parts)


def leaks(secret: bytes, view: bytes) -> bool:
    return any(secret[i : i + WINDOW] in view for i in range(len(secret) - WINDOW + 1))


@pytest.fixture
def world() -> World:
    machine = Machine(64 * MIB)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x33" * 64))
    hv = Hypervisor(machine, psp)
    relay = GuestRequestRelay(psp)
    firmware = build_image(0x10000, sections=SECTIONS, seed=b"guest request")
    launched = launch_snp(hv, psp, firmware, SnpLaunchConfig(vcpus=2), relay)
    return World(hv, psp, relay, launched)


def test_key_and_sequence_numbers_live_in_guest_memory(world: World) -> None:
    guest = world.requester()
    key = guest.key
    assert len(key) == 32 and any(key)
    assert all(not isinstance(v, bytes) or key not in v for v in vars(guest).values())
    assert guest.seqno == 0
    report = AttestationReport.from_bytes(guest.report(b"\x01" * 64).report)
    assert report.measurement == world.launched.measurement
    guest.derived_key(KeyRequest(GuestFieldSelect.MEASUREMENT))
    assert guest.seqno == 4
    vcpu = guest.vcpu
    assert int.from_bytes(vcpu.read(SECRETS_GPA + 0xA0, 4), "little") == 4
    assert vcpu.read(SECRETS_GPA + 0x20, 32) == key
    # A second driver over the same memory continues where the first stopped.
    again = GuestRequester(vcpu, SECRETS_GPA)
    assert again.seqno == 4 and again.report(bytes(64)).status == 0
    assert guest.seqno == 6


def test_no_key_byte_reaches_anything_the_host_reads(world: World) -> None:
    zero, two = world.requester(0), world.requester(2)
    derived = []
    for guest, vmpl in ((zero, 0), (two, 2)):
        assert guest.report(b"\x5a" * 64, vmpl=vmpl).status == 0
        for select in (GuestFieldSelect.MEASUREMENT, GuestFieldSelect(0)):
            response = guest.derived_key(KeyRequest(select, vmpl=vmpl))
            assert response.status == 0
            derived.append(response.derived_key)
    vmpcks = [GuestRequester(zero.vcpu, SECRETS_GPA, n).key for n in range(4)]
    secrets = vmpcks + derived
    assert len(set(secrets)) == len(secrets)
    view = world.host_view()
    assert len(world.relay.log) == 6
    assert not [secret.hex() for secret in secrets if leaks(secret, view)]
    # The scan can fail: a guest that copies its key into a shared page is caught.
    zero.vcpu.write(zero.request_gpa, zero.key)
    assert leaks(vmpcks[0], world.host_view())


def _host_reports(status: int) -> Callable[[Guest, Vcpu, VmExit], None]:
    """An exit hook after the relay: the host claims the request failed."""

    def hook(guest: Guest, vcpu: Vcpu, info: VmExit) -> None:
        if vcpu.ghcb_msr and vcpu.ghcb_msr % PAGE_SIZE == 0:
            spa = guest.vm.translate(vcpu.ghcb_msr)
            assert spa is not None
            guest.vm.machine.host_write(spa, Ghcb.build(sw_exitinfo2=status).to_bytes())

    return hook


def test_a_failed_exchange_disables_the_vmpck(world: World) -> None:
    guest = world.requester()
    guest.report(bytes(64))
    world.hv.exit_hooks.append(_host_reports(0x27))
    with pytest.raises(StatusError) as failed:
        guest.report(bytes(64))
    assert failed.value.code == 0x27
    assert guest.disabled and guest.key == bytes(32) and guest.seqno == 2
    world.hv.exit_hooks.pop()
    with pytest.raises(StateError):
        guest.report(bytes(64))
    other = world.requester(vmpck=1)
    assert other.report(bytes(64), vmpl=1).status == 0  # VMPCK1 still works


def _response_spa(world: World, guest: GuestRequester) -> int:
    spa = world.launched.guest.vm.translate(guest.response_gpa)
    assert spa is not None
    return spa


def test_a_tampered_response_disables_the_vmpck(world: World) -> None:
    guest = world.requester()
    machine, spa = world.hv.machine, _response_spa(world, guest)

    def flip(g: Guest, vcpu: Vcpu, info: VmExit) -> None:
        page = bytearray(machine.host_read(spa, PAGE_SIZE))
        page[0x60] ^= 0x80
        machine.host_write(spa, bytes(page))

    world.hv.exit_hooks.append(flip)
    with pytest.raises(IntegrityError):
        guest.report(bytes(64))
    assert guest.disabled


def test_a_replayed_response_disables_the_vmpck(world: World) -> None:
    guest = world.requester()
    guest.report(b"\x01" * 64)
    machine, spa = world.hv.machine, _response_spa(world, guest)
    old = machine.host_read(spa, PAGE_SIZE)
    world.hv.exit_hooks.append(lambda g, vcpu, info: machine.host_write(spa, old))
    with pytest.raises(IntegrityError, match="seqno 2"):
        guest.report(b"\x02" * 64)
    assert guest.disabled


def test_sequence_numbers_run_out(world: World) -> None:
    guest = world.requester()
    guest.vcpu.write(SECRETS_GPA + 0xA0, (2**32 - 2).to_bytes(4, "little"))
    with pytest.raises(StateError):
        guest.report(bytes(64))
    assert guest.disabled


def test_bad_arguments(world: World) -> None:
    vcpu = world.launched.guest.vcpus[0]
    with pytest.raises(UsageError):
        GuestRequester(vcpu, SECRETS_GPA, 4)
    with pytest.raises(UsageError):
        GuestRequester(vcpu, SECRETS_GPA + 8)
    guest = world.requester()
    with pytest.raises(UsageError):
        guest.key = bytes(16)
