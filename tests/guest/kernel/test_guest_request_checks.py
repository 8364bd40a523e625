"""The guest's ``sev-guest`` driver (:mod:`cvm.guest.kernel.guest_request`), check by check:
where the key and the counts live, the last usable sequence number, each refusal of a response
(its header, its tag, a garbled page) with its message, and the VMPCK wiped after each."""

from __future__ import annotations

import pytest
from tests.guest.kernel.test_guest_request import MIB, SECRETS_GPA, SECTIONS  # one layout

from cvm.amd.kds import ChipFuses
from cvm.errors import FormatError, IntegrityError, StateError, StatusError, UsageError
from cvm.formats.ovmf.image import build_image
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.guest_message import GuestMessage, MessageHeader, MessageType
from cvm.formats.snp.key_request import GuestFieldSelect, KeyRequest
from cvm.guest.kernel.guest_request import (
    NAE_SNP_GUEST_REQUEST,
    GuestRequester,
    is_wiped,
    seqno_gpa,
    vmpck_gpa,
)
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vcpu import Vcpu, VmExit
from cvm.host.launch import GuestRequestRelay, SnpLaunch, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Guest, Hypervisor

LAST = (1 << 32) - 1  # the largest u32 count


class World:
    def __init__(self) -> None:
        machine = Machine(64 * MIB)
        self.psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x33" * 64))
        self.hv = Hypervisor(machine, self.psp)
        relay = GuestRequestRelay(self.psp)
        firmware = build_image(0x10000, sections=SECTIONS, seed=b"guest request checks")
        self.launched: SnpLaunch = launch_snp(self.hv, self.psp, firmware,
                                              SnpLaunchConfig(vcpus=1), relay)
        cpu = self.launched.guest.vcpus[0]
        cpu.vmrun()
        self.guest = GuestRequester.start(cpu, SECRETS_GPA)

    def tamper(self, change: object) -> None:
        """After the relay answered: rewrite the response page the host shares with the guest."""
        machine = self.hv.machine
        spa = self.launched.guest.vm.translate(self.guest.response_gpa)
        assert spa is not None

        def hook(g: Guest, vcpu: Vcpu, info: VmExit) -> None:
            page = machine.host_read(spa, PAGE_SIZE)
            machine.host_write(spa, change(page))  # type: ignore[operator]

        self.hv.exit_hooks.append(hook)


@pytest.fixture
def world() -> World:
    return World()


def test_key_and_count_addresses_follow_the_secrets_page_layout() -> None:
    """VMPCKn at 0x20 + 32 n of the secrets page; its u32 count at 0xA0 + 4 n (the OS area)."""
    assert [vmpck_gpa(0x5000, n) for n in range(4)] == [0x5020, 0x5040, 0x5060, 0x5080]
    assert [seqno_gpa(0x5000, n) for n in range(4)] == [0x50A0, 0x50A4, 0x50A8, 0x50AC]
    assert is_wiped(bytes(32)) and not is_wiped(bytes(31) + b"\x01")


def test_each_vmpck_reads_its_own_key_and_count(world: World) -> None:
    cpu = world.guest.vcpu
    for n in range(4):
        cpu.write(SECRETS_GPA + 0xA0 + 4 * n, (n + 10).to_bytes(4, "little"))
        driver = GuestRequester(cpu, SECRETS_GPA, n)
        assert driver.key == cpu.read(SECRETS_GPA + 0x20 + 32 * n, 32)
        assert driver.seqno == n + 10


def test_the_vmpck_index_and_the_secrets_page_alignment_are_checked(world: World) -> None:
    cpu = world.guest.vcpu
    GuestRequester(cpu, SECRETS_GPA, 3)  # the last index is allowed
    for index in (-1, 4):
        with pytest.raises(UsageError, match=rf"^VMPCK index {index} is not 0..3$"):
            GuestRequester(cpu, SECRETS_GPA, index)
    with pytest.raises(UsageError, match=r"^secrets page address 0x802008 is not page-aligned$"):
        GuestRequester(cpu, SECRETS_GPA + 8)
    with pytest.raises(UsageError, match=r"^a VMPCK is 32 bytes$"):
        world.guest.key = bytes(31)
    assert not world.guest.disabled


def test_the_last_sequence_number_is_used_and_then_the_vmpck_is_retired(world: World) -> None:
    """Count 2^32 - 3: the request carries 2^32 - 2, the response 2^32 - 1 (the largest u32).
    After it no exchange fits: the driver wipes the key rather than wrap the IV."""
    guest = world.guest
    guest.vcpu.write(SECRETS_GPA + 0xA0, (LAST - 2).to_bytes(4, "little"))
    world.psp._guests[world.launched.handle].seqnos[0] = LAST - 2
    assert guest.report(bytes(64)).status == 0
    assert guest.seqno == LAST and not guest.disabled
    with pytest.raises(StateError, match=r"^VMPCK0 has used up its sequence numbers$"):
        guest.report(bytes(64))
    assert guest.disabled


def test_a_firmware_status_is_reported_and_disables(world: World) -> None:
    world.psp._guests[world.launched.handle].seqnos[0] = 7  # the firmware expects another
    with pytest.raises(StatusError, match=r"^guest request failed with firmware status 0x16$"
                       ) as failed:
        world.guest.report(bytes(64))
    assert failed.value.code == 0x16 and world.guest.disabled
    with pytest.raises(StateError, match=r"^VMPCK0 is disabled: the guest wiped it$"):
        world.guest.report(bytes(64))


def _rewrite_header(page: bytes, **fields: object) -> bytes:
    message = GuestMessage.from_page(page)
    header = message.header
    values = {"msg_seqno": header.msg_seqno, "msg_type": header.msg_type,
              "msg_sz": header.msg_sz, "msg_vmpck": header.msg_vmpck,
              "msg_version": header.msg_version, "authtag": header.authtag}
    values.update(fields)
    return GuestMessage(MessageHeader(**values), message.payload).to_page()  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value", "said"), [
    ("msg_type", MessageType.KEY_RSP, "seqno 2 KEY_RSP VMPCK0 version 1"),
    ("msg_type", MessageType.REPORT_REQ, "seqno 2 REPORT_REQ VMPCK0 version 1"),
    ("msg_vmpck", 1, "seqno 2 REPORT_RSP VMPCK1 version 1"),
    ("msg_seqno", 4, "seqno 4 REPORT_RSP VMPCK0 version 1"),
    ("msg_version", 2, "seqno 2 REPORT_RSP VMPCK0 version 2"),
])
def test_a_response_header_that_does_not_match_is_refused(world: World, field: str,
                                                          value: object, said: str) -> None:
    world.tamper(lambda page: _rewrite_header(page, **{field: value}))
    with pytest.raises(IntegrityError) as refused:
        world.guest.report(bytes(64))
    assert str(refused.value) == (f"response header is {said}, expected seqno 2 REPORT_RSP "
                                  "VMPCK0 version 1")
    assert world.guest.disabled and world.guest.seqno == 0


def test_a_response_whose_tag_does_not_verify_is_refused(world: World) -> None:
    world.tamper(lambda page: _rewrite_header(page, authtag=bytes(16)))
    with pytest.raises(IntegrityError):
        world.guest.report(bytes(64))
    assert world.guest.disabled and world.guest.seqno == 0


def test_a_garbled_response_page_is_refused_and_disables(world: World) -> None:
    world.tamper(lambda page: b"\xff" * PAGE_SIZE)
    with pytest.raises(FormatError):
        world.guest.report(bytes(64))
    assert world.guest.disabled and world.guest.seqno == 0


def test_the_request_names_its_pages_in_the_ghcb(world: World) -> None:
    """NAE SNP Guest Request: SW_EXITINFO1 the request page, SW_EXITINFO2 the response page."""
    seen: list[Ghcb] = []
    machine = world.hv.machine

    def spy(g: Guest, vcpu: Vcpu, info: VmExit) -> None:
        spa = g.vm.translate(vcpu.ghcb_msr)
        assert spa is not None
        seen.append(Ghcb.from_bytes(machine.host_read(spa, PAGE_SIZE)))

    world.hv.exit_hooks.insert(0, spy)
    world.guest.derived_key(KeyRequest(GuestFieldSelect.MEASUREMENT))
    request = seen[0]
    assert request.get("sw_exitcode") == NAE_SNP_GUEST_REQUEST == 0x8000_0011
    assert request.get("sw_exitinfo1") == world.guest.request_gpa
    assert request.get("sw_exitinfo2") == world.guest.response_gpa
    assert world.guest.seqno == 2
