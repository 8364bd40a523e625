"""The SVSM attestation protocol's decisions, one by one (AMD 58019 section 7): which calls,
which requests and buffers it refuses, what it binds into REPORT_DATA and what RCX/RDX/R8
answer."""

from __future__ import annotations

import hashlib

import pytest

from cvm.formats.svsm.attest_request import AttestRequest
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID, ServicesManifest
from cvm.guest.svsm.attestation import (
    ATTEST_SERVICES,
    ATTEST_SINGLE_SERVICE,
    MAX_NONCE,
    PROTOCOL_ATTEST,
    AttestationProtocol,
)
from cvm.guest.svsm.result import CallReply, SvsmResult
from cvm.wire import Guid

from .memory import GuestMemory

REQUEST, NONCE, MANIFEST, REPORT = 0x50000, 0x51000, 0x52000, 0x53000
EK = b"the vTPM's EK TPMT_PUBLIC"
REPORT_BYTES = b"R" * 0x4A0


class Psp:
    """MSG_REPORT_REQ as the protocol sees it: records REPORT_DATA, answers a fixed report."""

    def __init__(self) -> None:
        self.report_data: list[bytes] = []

    def __call__(self, report_data: bytes) -> bytes:
        self.report_data.append(report_data)
        return REPORT_BYTES


def _protocol(memory: GuestMemory, psp: Psp | None = None) -> AttestationProtocol:
    return AttestationProtocol(memory.read, memory.write, lambda: EK,
                               psp if psp is not None else Psp())


def _services_manifest() -> bytes:
    return ServicesManifest(((VTPM_SERVICE_GUID, EK),)).to_bytes()


def _guest(nonce: bytes = b"n" * 64, single: bool = True, service: Guid = VTPM_SERVICE_GUID,
           report_size: int = 0x1000, manifest_size: int = 0x1000,
           nonce_size: int | None = None) -> GuestMemory:
    memory = GuestMemory()
    request = AttestRequest(REPORT, report_size, NONCE,
                            len(nonce) if nonce_size is None else nonce_size,
                            MANIFEST, manifest_size, service=service if single else None)
    memory.put(REQUEST, request.to_bytes())
    memory.put(NONCE, nonce)
    memory.put(MANIFEST, bytes(0x1000))
    memory.put(REPORT, bytes(0x1000))
    return memory


def test_the_protocol_numbers() -> None:
    """58019 Table 9: the attestation protocol is 1, ATTEST_SERVICES call 0, SINGLE_SERVICE 1."""
    assert (PROTOCOL_ATTEST, ATTEST_SERVICES, ATTEST_SINGLE_SERVICE) == (1, 0, 1)


@pytest.mark.parametrize("call", [2, 3, 0xFFFF_FFFF])
def test_other_attestation_calls_are_unsupported(call: int) -> None:
    memory, psp = _guest(), Psp()
    reply = _protocol(memory, psp).handle(call, REQUEST)
    assert reply == CallReply(SvsmResult.ERR_UNSUPPORTED_CALL, {})
    assert memory.reads == [] and psp.report_data == []


def test_single_service_binds_the_ek_and_answers_the_sizes() -> None:
    nonce = bytes(range(64))
    memory, psp = _guest(nonce), Psp()
    reply = _protocol(memory, psp).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    assert reply == CallReply(SvsmResult.SUCCESS,
                              {"rcx": len(REPORT_BYTES), "rdx": len(EK), "r8": 0})
    assert psp.report_data == [hashlib.sha512(nonce + EK).digest()]
    assert memory.get(REPORT, len(REPORT_BYTES) + 1) == REPORT_BYTES + b"\x00"
    assert memory.get(MANIFEST, len(EK) + 1) == EK + b"\x00"
    assert memory.reads[:2] == [(REQUEST, 0x58), (NONCE, 64)]


def test_services_binds_the_services_manifest_and_reads_the_short_request() -> None:
    nonce = b"\x11" * 32
    memory, psp = _guest(nonce, single=False), Psp()
    memory.readable = [(REQUEST, REQUEST + 0x40), (NONCE, NONCE + 32)]  # no byte past 0x40
    table = _services_manifest()
    reply = _protocol(memory, psp).handle(ATTEST_SERVICES, REQUEST)
    assert reply == CallReply(SvsmResult.SUCCESS,
                              {"rcx": len(REPORT_BYTES), "rdx": len(table), "r8": 0})
    assert psp.report_data == [hashlib.sha512(nonce + table).digest()]
    assert memory.get(MANIFEST, len(table)) == table
    assert memory.reads == [(REQUEST, 0x40), (NONCE, 32)]


def test_a_request_the_svsm_cannot_read_is_an_invalid_address() -> None:
    memory, psp = _guest(), Psp()
    memory.readable = [(REQUEST, REQUEST + 0x57)]  # one byte short of the single-service form
    reply = _protocol(memory, psp).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    assert reply == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {})
    assert psp.report_data == []


def test_a_request_with_reserved_bytes_set_is_an_invalid_format() -> None:
    memory, psp = _guest(), Psp()
    memory.put(REQUEST + 0x0C, b"\x01")  # reserved after the report size
    reply = _protocol(memory, psp).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    assert reply == CallReply(SvsmResult.ERR_INVALID_FORMAT, {})
    assert psp.report_data == []


def test_a_single_service_request_for_another_service_is_an_invalid_parameter() -> None:
    other = Guid.parse("c476f1eb-0123-45a5-9641-b4e7dde5bfe4")
    memory, psp = _guest(service=other), Psp()
    reply = _protocol(memory, psp).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    assert reply == CallReply(SvsmResult.ERR_INVALID_PARAMETER, {})
    assert psp.report_data == [] and memory.writes == []


def test_the_services_call_ignores_what_follows_its_request() -> None:
    """ATTEST_SERVICES has no service GUID: bytes after its 0x40-byte request are not read as
    one, so a foreign GUID there refuses nothing."""
    memory = _guest(single=False)
    memory.put(REQUEST + 0x40, b"\xee" * 0x18)
    assert _protocol(memory).handle(ATTEST_SERVICES, REQUEST).result is SvsmResult.SUCCESS


@pytest.mark.parametrize(("size", "accepted"), [(MAX_NONCE, True), (MAX_NONCE + 1, False),
                                                (0xFFFF, False), (0, True)])
def test_a_nonce_may_be_at_most_one_page(size: int, accepted: bool) -> None:
    memory, psp = _guest(b"\x22" * size), Psp()
    reply = _protocol(memory, psp).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    if accepted:
        assert reply.result is SvsmResult.SUCCESS
        assert psp.report_data == [hashlib.sha512(b"\x22" * size + EK).digest()]
    else:
        assert reply == CallReply(SvsmResult.ERR_INVALID_PARAMETER, {})
        assert psp.report_data == [] and memory.reads == [(REQUEST, 0x58)]


def test_a_nonce_the_svsm_cannot_read_is_an_invalid_address() -> None:
    memory, psp = _guest(b"n" * 16, nonce_size=17), Psp()
    reply = _protocol(memory, psp).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    assert reply == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {})
    assert psp.report_data == []


def test_the_nonce_and_gpas_come_from_the_request() -> None:
    """The nonce is read at the request's nonce GPA, with its size; the answers go to its
    report and manifest GPAs."""
    memory = _guest()
    request = AttestRequest(REPORT + 0x100, 0x800, NONCE + 0x10, 8, MANIFEST + 0x20, 0x100,
                            service=VTPM_SERVICE_GUID)
    memory.put(REQUEST, request.to_bytes())
    memory.put(NONCE + 0x10, b"12345678")
    psp = Psp()
    assert _protocol(memory, psp).handle(ATTEST_SINGLE_SERVICE, REQUEST).result == 0
    assert psp.report_data == [hashlib.sha512(b"12345678" + EK).digest()]
    assert memory.writes == [(REPORT + 0x100, REPORT_BYTES), (MANIFEST + 0x20, EK)]


@pytest.mark.parametrize(("report_size", "manifest_size", "accepted"), [
    (len(REPORT_BYTES), len(EK), True),
    (len(REPORT_BYTES) - 1, len(EK), False),
    (len(REPORT_BYTES), len(EK) - 1, False),
    (0, 0, False),
])
def test_buffers_too_small_refuse_and_still_answer_the_sizes(
        report_size: int, manifest_size: int, accepted: bool) -> None:
    """A buffer exactly the size needed is enough; one byte less is
    SVSM_ERR_INVALID_PARAMETER with RCX/RDX/R8 the sizes needed, and nothing written."""
    memory = _guest(report_size=report_size, manifest_size=manifest_size)
    reply = _protocol(memory).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    sizes = {"rcx": len(REPORT_BYTES), "rdx": len(EK), "r8": 0}
    expected = SvsmResult.SUCCESS if accepted else SvsmResult.ERR_INVALID_PARAMETER
    assert reply == CallReply(expected, sizes)
    assert bool(memory.writes) is accepted


@pytest.mark.parametrize("writable", ["report", "manifest"])
def test_a_buffer_the_svsm_cannot_write_is_an_invalid_address(writable: str) -> None:
    """Either buffer unwritable refuses the call, whichever of the two it is."""
    memory = _guest()
    memory.writable = [(REPORT, REPORT + 0x1000) if writable == "report"
                       else (MANIFEST, MANIFEST + 0x1000)]
    reply = _protocol(memory).handle(ATTEST_SINGLE_SERVICE, REQUEST)
    assert reply == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {})
