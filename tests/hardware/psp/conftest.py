"""Fixtures for the emulated PSP: a machine with a chip, a synthetic OVMF, a launched guest and
the guest side of the SNP_GUEST_REQUEST channel (what a guest kernel's sev-guest driver does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from cvm.crypto import aead
from cvm.errors import StatusError
from cvm.firmware.sev_guest import SevGuest
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_area import SevArea
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.snp.ghcb import Ghcb
from cvm.formats.snp.guest_message import PAGE_SIZE, GuestMessage, MessageHeader, MessageType
from cvm.formats.snp.key_request import KeyRequest, KeyResponse
from cvm.formats.snp.report_request import ReportRequest, ReportResponse
from cvm.formats.snp.secrets_page import SecretsPage
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vcpu import EXIT_VMGEXIT, Vcpu
from cvm.host.launch import GuestRequestRelay, SnpLaunch, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.vendor.kds import ChipFuses

SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80A000, 0x3000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
    MetadataSection(0x810000, 0x1000, SectionType.SNP_KERNEL_HASHES),
    MetadataSection(0x811000, 0xF000, SectionType.SNP_SEC_MEM),
)
GHCB_GPA, REQUEST_GPA, RESPONSE_GPA = 0x1000, 0x2000, 0x3000
NAE_SNP_GUEST_REQUEST = 0x8000_0011


class GuestRequester:
    """The guest's sev-guest driver: VMPCK from the secrets page, its own sequence numbers."""

    def __init__(self, vcpu: Vcpu, secrets_gpa: int, vmpck: int = 0) -> None:
        self.vcpu = vcpu
        self.vmpck = vmpck
        vcpu.vm.set_private(secrets_gpa, True)
        secrets = SecretsPage.from_bytes(vcpu.read(secrets_gpa, PAGE_SIZE))
        self.key = secrets.vmpck(vmpck)
        self.seqno = 0
        guest = SevGuest(vcpu)
        guest.setup_ghcb(GHCB_GPA)
        guest.make_shared(REQUEST_GPA)
        guest.make_shared(RESPONSE_GPA)

    def seal(self, kind: MessageType, payload: bytes, seqno: int) -> bytes:
        header = MessageHeader(seqno, kind, len(payload), self.vmpck)
        ciphertext, tag = aead.encrypt(self.key, header.iv(), payload, header.aad())
        return GuestMessage(dataclasses.replace(header, authtag=tag), ciphertext).to_page()

    def exchange(self, page: bytes) -> tuple[int, bytes]:
        """Send a request page through the GHCB; (firmware status, response page)."""
        self.vcpu.write(REQUEST_GPA, page)
        ghcb = Ghcb.build(
            sw_exitcode=NAE_SNP_GUEST_REQUEST, sw_exitinfo1=REQUEST_GPA, sw_exitinfo2=RESPONSE_GPA
        )
        self.vcpu.write(GHCB_GPA, ghcb.to_bytes())
        self.vcpu.ghcb_msr = GHCB_GPA
        self.vcpu.vmexit(EXIT_VMGEXIT)
        answer = Ghcb.from_bytes(self.vcpu.read(GHCB_GPA, PAGE_SIZE))
        return answer.get("sw_exitinfo2") or 0, self.vcpu.read(RESPONSE_GPA, PAGE_SIZE)

    def request(self, kind: MessageType, payload: bytes) -> bytes:
        page = self.seal(kind, payload, self.seqno + 1)
        status, response = self.exchange(page)
        if status:
            raise StatusError(f"guest request failed with firmware status {status:#x}", status)
        message = GuestMessage.from_page(response)
        header = message.header
        assert header.msg_seqno == self.seqno + 2 and header.msg_type is kind.response
        plain = aead.decrypt(self.key, header.iv(), message.payload, header.authtag, header.aad())
        self.seqno += 2
        return plain

    def report(self, report_data: bytes, vmpl: int = 0) -> ReportResponse:
        raw = self.request(MessageType.REPORT_REQ, ReportRequest(report_data, vmpl).to_bytes())
        return ReportResponse.from_bytes(raw)

    def derived_key(self, request: KeyRequest) -> KeyResponse:
        return KeyResponse.from_bytes(self.request(MessageType.KEY_REQ, request.to_bytes()))


@pytest.fixture
def firmware() -> bytes:
    """A synthetic AmdSev-style OVMF (256 KiB) with kernel-hashes support."""
    return build_image(
        0x40000, sections=SECTIONS, sev_hash_table=SevArea(0x810C00, 0x400), seed=b"psp tests"
    )


@pytest.fixture
def chip() -> ChipFuses:
    return ChipFuses("Milan", bytes(range(64)), b"\x5a" * 64)


@pytest.fixture
def platform(chip: ChipFuses) -> tuple[Hypervisor, SecureProcessor]:
    machine = Machine(8 << 30)
    return Hypervisor(machine), SecureProcessor(machine, chip)


@pytest.fixture
def launch(
    platform: tuple[Hypervisor, SecureProcessor], firmware: bytes
) -> Callable[..., tuple[SnpLaunch, GuestRequestRelay]]:
    """``launch(**config)`` launches ``firmware`` and returns (launch, relay)."""
    hv, psp = platform

    def run(**config: Any) -> tuple[SnpLaunch, GuestRequestRelay]:
        relay = GuestRequestRelay(psp)
        return launch_snp(hv, psp, firmware, SnpLaunchConfig(**config), relay), relay

    return run


@pytest.fixture
def requester() -> Callable[..., GuestRequester]:
    """``requester(launch)`` starts vCPU 0 and returns the guest's request driver."""

    def start(launched: SnpLaunch, vmpck: int = 0) -> GuestRequester:
        vcpu = launched.guest.vcpus[0]
        vcpu.vmrun()
        assert launched.secrets_gpa is not None
        return GuestRequester(vcpu, launched.secrets_gpa, vmpck)

    return start
