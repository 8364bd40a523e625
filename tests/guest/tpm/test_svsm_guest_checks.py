"""The guest OS's side of the SVSM protocol (:mod:`cvm.guest.tpm.svsm_guest`): each call's
refusal carries the SVSM's result code and names the call, and the answers are read from the
registers the protocol puts them in."""

from __future__ import annotations

import hashlib

import pytest

from cvm.amd.kds import ChipFuses
from cvm.crypto.drbg import SeededRandom
from cvm.errors import StatusError
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.svsm.attest_request import ATTEST_REQUEST_SIZE, AttestRequest
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID
from cvm.formats.svsm.vtpm_command import BUFFER_SIZE, VtpmCommandRequest
from cvm.guest.svsm.core import CORE_QUERY_PROTOCOL, PROTOCOL_CORE
from cvm.guest.svsm.result import SvsmResult
from cvm.guest.svsm.svsm import Svsm
from cvm.guest.svsm.vtpm import PROTOCOL_VTPM, VTPM_QUERY
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.vtpm.state_file import MonotonicCounter

BUFFER, SCRATCH = 0x20000, 0x21000
SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
)


@pytest.fixture(scope="module")
def guest() -> SvsmGuest:
    machine = Machine(8 << 30, random_bytes=SeededRandom(b"machine"))
    hv = Hypervisor(machine)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x5a" * 64))
    relay = GuestRequestRelay(psp)
    image = build_image(0x40000, sections=SECTIONS, seed=b"svsm guest checks")
    launched = launch_snp(hv, psp, image, SnpLaunchConfig(policy=0x30000), relay)
    vcpu = launched.guest.vcpus[0]
    vcpu.vmrun()
    svsm = Svsm.start(vcpu, launched.secrets_gpa, MonotonicCounter(), SeededRandom(b"svsm"))
    svsm.grant(BUFFER, 2)
    return SvsmGuest(vcpu, svsm, BUFFER, SCRATCH)


def _answering(guest: SvsmGuest, answer: tuple[int, int, int, int]) -> SvsmGuest:
    """The same guest OS whose SVSM answers every call with ``answer`` (RAX, RCX, RDX, R8)."""
    other = SvsmGuest(guest.vcpu, guest.svsm, guest.buffer_gpa, guest.scratch_gpa)
    other.call = lambda *args, **kwargs: answer  # type: ignore[method-assign]
    return other


def test_a_call_loads_the_protocol_and_call_into_rax_and_returns_the_answer(
        guest: SvsmGuest) -> None:
    result, rcx, _, _ = guest.call(PROTOCOL_CORE, CORE_QUERY_PROTOCOL, PROTOCOL_VTPM << 32 | 1)
    assert (result, rcx) == (0, 1 << 32 | 1)
    result, commands, _, _ = guest.call(PROTOCOL_VTPM, VTPM_QUERY)
    assert (result, commands) == (0, 1 << 8)
    assert guest.call(PROTOCOL_VTPM, 1 << 16 | VTPM_QUERY)[0] == SvsmResult.ERR_UNSUPPORTED_CALL


def test_query_protocol_reads_lowest_and_highest_from_rcx(guest: SvsmGuest) -> None:
    assert _answering(guest, (0, 0x0000_0007_0000_0002, 0, 0)).query_protocol(2) == (2, 7)


def test_a_refused_query_protocol_carries_the_result(guest: SvsmGuest) -> None:
    code = int(SvsmResult.ERR_INVALID_PARAMETER)
    with pytest.raises(StatusError) as refused:
        _answering(guest, (code, 0, 0, 0)).query_protocol(PROTOCOL_VTPM)
    assert str(refused.value) == "SVSM_CORE_QUERY_PROTOCOL failed: 0x80000005"
    assert refused.value.code == code


def test_a_refused_vtpm_query_carries_the_result(guest: SvsmGuest) -> None:
    code = int(SvsmResult.ERR_UNSUPPORTED_PROTOCOL)
    with pytest.raises(StatusError) as refused:
        _answering(guest, (code, 1 << 8, 0, 0)).vtpm_query()
    assert str(refused.value) == "SVSM_VTPM_QUERY failed: 0x80000001"
    assert refused.value.code == code


def test_a_refused_vtpm_command_carries_the_result(guest: SvsmGuest) -> None:
    with pytest.raises(StatusError) as refused:
        guest.tpm_execute(bytes(10), locality=3)
    assert str(refused.value) == "SVSM_VTPM_COMMAND failed: 0x80000005"
    assert refused.value.code == SvsmResult.ERR_INVALID_PARAMETER


def test_a_refused_pvalidate_names_the_pages_done(guest: SvsmGuest) -> None:
    page = 0x30000
    assert guest.pvalidate([page]) == 1
    with pytest.raises(StatusError) as refused:
        guest.pvalidate([page])
    assert str(refused.value) == "SVSM_CORE_PVALIDATE failed after 0 page(s): 0x80001010"
    assert refused.value.code == SvsmResult.ERR_PVALIDATE_FAIL_UNCHANGED
    assert guest.pvalidate([page], validate=False) == 1


def test_a_refused_attestation_carries_the_result(guest: SvsmGuest) -> None:
    code = int(SvsmResult.ERR_INVALID_ADDRESS)
    with pytest.raises(StatusError) as refused:
        _answering(guest, (code, 0, 0, 0)).attest(hashlib.sha512(b"nonce").digest())
    assert str(refused.value) == "SVSM attestation call failed: 0x80000003"
    assert refused.value.code == code


def test_registers_the_svsm_does_not_answer_come_back_as_the_guest_set_them(
        guest: SvsmGuest) -> None:
    """RCX, RDX and R8 default to 0; an unsupported protocol leaves each where it was put."""
    unsupported = int(SvsmResult.ERR_UNSUPPORTED_PROTOCOL)
    assert guest.call(7, 0) == (unsupported, 0, 0, 0)
    assert guest.call(7, 0, 5, 6, 7) == (unsupported, 5, 6, 7)


def test_the_command_is_zero_padded_in_the_buffer_the_svsm_reads(
        guest: SvsmGuest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The buffer page as the SVSM reads it: the request, then zeros (not what an earlier
    exchange left there)."""
    seen: list[bytes] = []
    parse = VtpmCommandRequest.from_bytes

    def spy(data: bytes) -> VtpmCommandRequest:
        seen.append(bytes(data))
        return parse(data)

    monkeypatch.setattr(VtpmCommandRequest, "from_bytes", staticmethod(spy))
    guest.vcpu.write(BUFFER, b"\xee" * BUFFER_SIZE)
    with pytest.raises(StatusError):
        guest.tpm_execute(b"\x80\x01", locality=3)
    request = VtpmCommandRequest(3, b"\x80\x01").to_bytes()
    assert seen == [request + bytes(BUFFER_SIZE - len(request))]


def test_the_attestation_request_places_its_buffers_in_the_scratch_page(
        guest: SvsmGuest) -> None:
    nonce = hashlib.sha512(b"request layout").digest()
    guest.vcpu.write(SCRATCH, bytes(0x100))
    guest.attest(nonce, single_service=False)
    page = guest.vcpu.read(SCRATCH, 0x100)
    assert page[ATTEST_REQUEST_SIZE:0x100] == bytes(0x100 - ATTEST_REQUEST_SIZE)  # no GUID
    assert AttestRequest.from_bytes(page, single=False) == AttestRequest(
        SCRATCH + 0x800, 0x800, SCRATCH + 0x100, 64, SCRATCH + 0x400, 0x400)
    guest.attest(nonce)
    page = guest.vcpu.read(SCRATCH, 0x100)
    assert AttestRequest.from_bytes(page, single=True) == AttestRequest(
        SCRATCH + 0x800, 0x800, SCRATCH + 0x100, 64, SCRATCH + 0x400, 0x400,
        service=VTPM_SERVICE_GUID)
