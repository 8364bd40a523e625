"""The SVSM vTPM protocol's decisions, one by one (AMD 58019 section 8): the query's answer,
which buffers and platform commands it refuses, and what it writes back."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, StateError
from cvm.formats.svsm.vtpm_command import VtpmCommandRequest, VtpmCommandResponse
from cvm.formats.tpm2.command import Response
from cvm.formats.tpm2.response_code import TpmRc
from cvm.guest.svsm.result import CallReply, SvsmResult
from cvm.guest.svsm.vtpm import PROTOCOL_VTPM, VTPM_COMMAND, VTPM_QUERY, VtpmProtocol

from .memory import GuestMemory

BUFFER = 0x60000
COMMAND = bytes.fromhex("80010000000c0000017b0008")  # TPM2_GetRandom(8)
ANSWER = bytes.fromhex("80010000000a00000000")


class Engine:
    """The loaded vTPM as the protocol sees it: records each command, answers or raises."""

    def __init__(self, answer: bytes = ANSWER, error: Exception | None = None) -> None:
        self.commands: list[tuple[bytes, int]] = []
        self.answer, self.error = answer, error

    def __call__(self, command: bytes, locality: int) -> bytes:
        self.commands.append((command, locality))
        if self.error is not None:
            raise self.error
        return self.answer


def _guest(request: bytes) -> GuestMemory:
    memory = GuestMemory()
    memory.put(BUFFER, request.ljust(0x1000, b"\xcc"))
    return memory


def test_the_protocol_numbers() -> None:
    """58019 Table 14: the vTPM protocol is 2, SVSM_VTPM_QUERY call 0, SVSM_VTPM_CMD call 1."""
    assert (PROTOCOL_VTPM, VTPM_QUERY, VTPM_COMMAND) == (2, 0, 1)


def test_query_answers_send_command_and_no_features() -> None:
    memory, engine = GuestMemory(), Engine()
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_QUERY, BUFFER)
    assert reply == CallReply(SvsmResult.SUCCESS, {"rcx": 0x100, "rdx": 0})
    assert engine.commands == [] and memory.reads == []


@pytest.mark.parametrize("call", [2, 3, 0xFFFF_FFFF])
def test_other_vtpm_calls_are_unsupported(call: int) -> None:
    memory, engine = _guest(VtpmCommandRequest(0, COMMAND).to_bytes()), Engine()
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(call, BUFFER)
    assert reply == CallReply(SvsmResult.ERR_UNSUPPORTED_CALL, {})
    assert engine.commands == [] and memory.reads == [] and memory.writes == []


def test_a_command_runs_at_locality_0_and_its_response_fills_the_page() -> None:
    memory, engine = _guest(VtpmCommandRequest(0, COMMAND).to_bytes()), Engine()
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER)
    assert reply == CallReply(SvsmResult.SUCCESS, {})
    assert engine.commands == [(COMMAND, 0)]
    assert memory.reads == [(BUFFER, 0x1000)]
    page = VtpmCommandResponse(ANSWER).to_bytes().ljust(0x1000, b"\x00")
    assert memory.writes == [(BUFFER, page)]


@pytest.mark.parametrize("offset", [1, 8, 0x800, 0xFFF])
def test_a_buffer_not_page_aligned_is_an_invalid_address(offset: int) -> None:
    memory, engine = _guest(VtpmCommandRequest(0, COMMAND).to_bytes()), Engine()
    memory.put(BUFFER + offset, VtpmCommandRequest(0, COMMAND).to_bytes())
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER + offset)
    assert reply == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {})
    assert engine.commands == [] and memory.reads == []


def test_a_buffer_the_svsm_cannot_read_whole_is_an_invalid_address() -> None:
    memory, engine = _guest(VtpmCommandRequest(0, COMMAND).to_bytes()), Engine()
    memory.readable = [(BUFFER, BUFFER + 0xFFF)]
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER)
    assert reply == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {})
    assert engine.commands == []


def test_a_request_longer_than_the_page_is_an_invalid_format() -> None:
    request = (8).to_bytes(4, "little") + b"\x00" + (0x1000 - 9 + 1).to_bytes(4, "little")
    memory, engine = _guest(request), Engine()
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER)
    assert reply == CallReply(SvsmResult.ERR_INVALID_FORMAT, {})
    assert engine.commands == [] and memory.writes == []


@pytest.mark.parametrize(("platform_command", "locality"), [(7, 0), (9, 0), (0, 0), (8, 1),
                                                            (8, 4), (8, 0xFF)])
def test_another_platform_command_or_locality_is_an_invalid_parameter(
        platform_command: int, locality: int) -> None:
    request = VtpmCommandRequest(locality, COMMAND, platform_command).to_bytes()
    memory, engine = _guest(request), Engine()
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER)
    assert reply == CallReply(SvsmResult.ERR_INVALID_PARAMETER, {})
    assert engine.commands == [] and memory.writes == []


def test_a_command_the_tpm_cannot_parse_gets_tpm_rc_failure() -> None:
    memory = _guest(VtpmCommandRequest(0, b"\x80\x01").to_bytes())
    engine = Engine(error=FormatError("TPM command: 2 bytes"))
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER)
    assert reply == CallReply(SvsmResult.SUCCESS, {})
    failure = Response(TpmRc.FAILURE).to_bytes(False)
    assert failure == bytes.fromhex("80010000000a00000101")
    assert memory.writes == [(BUFFER, VtpmCommandResponse(failure).to_bytes().ljust(0x1000,
                                                                                  b"\x00"))]


def test_the_svsms_own_fault_is_not_an_answer() -> None:
    """Only a command the TPM cannot parse is answered TPM_RC_FAILURE; the SVSM's own fault
    (corrupt state pages) raises, and nothing is written."""
    memory = _guest(VtpmCommandRequest(0, COMMAND).to_bytes())
    engine = Engine(error=StateError("vTPM state pages are corrupt"))
    with pytest.raises(StateError, match="corrupt"):
        VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER)
    assert memory.writes == []


def test_a_buffer_the_svsm_cannot_write_back_is_an_invalid_address() -> None:
    memory, engine = _guest(VtpmCommandRequest(0, COMMAND).to_bytes()), Engine()
    memory.writable = []
    reply = VtpmProtocol(memory.read, memory.write, engine).handle(VTPM_COMMAND, BUFFER)
    assert reply == CallReply(SvsmResult.ERR_INVALID_ADDRESS, {})
    assert engine.commands == [(COMMAND, 0)]
