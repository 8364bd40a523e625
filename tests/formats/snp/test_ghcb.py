"""GHCB, GHCB MSR protocol and PSC buffer: round trips and strict parsing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.snp.ghcb import GHCB_SIZE, SAVE_AREA_REGISTERS, Ghcb
from cvm.formats.snp.ghcb_msr import MsrFunction, MsrMessage, cpuid_request, sev_info_response
from cvm.formats.snp.psc_buffer import PscBuffer, PscEntry
from cvm.formats.snp.vmsa import VMSA_SIZE, Vmsa

registers = st.dictionaries(st.sampled_from(SAVE_AREA_REGISTERS), st.integers(0, 255))


@given(registers, st.binary(max_size=64))
def test_ghcb_round_trip(values: dict[str, int], shared: bytes) -> None:
    ghcb = Ghcb.build(shared, **values)
    data = ghcb.to_bytes()
    assert len(data) == GHCB_SIZE
    assert Ghcb.from_bytes(data) == ghcb
    assert Ghcb.from_bytes(data).to_bytes() == data


def test_ghcb_refuses_unmarked_values_and_reserved_bytes() -> None:
    data = bytearray(Ghcb.build(rax=1).to_bytes())
    data[0x308] = 7  # rcx without its valid bit
    with pytest.raises(FormatError, match="rcx is non-zero but not marked valid"):
        Ghcb.from_bytes(bytes(data))
    data = bytearray(Ghcb.build(rax=1).to_bytes())
    data[0x10] = 1
    with pytest.raises(FormatError, match="reserved"):
        Ghcb.from_bytes(bytes(data))


@given(st.lists(st.tuples(st.integers(0, GHCB_SIZE - 1), st.integers(0, 255)), max_size=40))
def test_mutated_ghcb_bytes_give_only_format_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(Ghcb.build(b"hello", rax=1, sw_exitcode=0x72).to_bytes())
    for index, value in edits:
        data[index] = value
    with contextlib.suppress(FormatError):
        Ghcb.from_bytes(bytes(data))


def test_msr_protocol_fields() -> None:
    message = MsrMessage.parse(cpuid_request(0x8000_001F, "ebx"))
    assert message.function is MsrFunction.CPUID_REQUEST
    assert message.data >> 20 == 0x8000_001F and (message.data >> 18) & 3 == 1
    info = MsrMessage.parse(sev_info_response(2, 1, 51))
    assert (info.data >> 36, info.data >> 20 & 0xFFFF, info.data >> 12 & 0xFF) == (2, 1, 51)
    with pytest.raises(FormatError, match="0x3ff is unknown"):
        MsrMessage.parse(0x3FF)


@given(
    st.lists(
        st.tuples(st.integers(0, (1 << 40) - 1), st.sampled_from([1, 2])), min_size=1, max_size=253
    )
)
def test_psc_buffer_round_trip(entries: list[tuple[int, int]]) -> None:
    buffer = PscBuffer(tuple(PscEntry(gfn, op) for gfn, op in entries))
    data = buffer.to_bytes()
    assert PscBuffer.from_bytes(data.ljust(0x7F0, b"\0")) == buffer


def test_psc_buffer_rejects_unknown_operations() -> None:
    data = bytearray(PscBuffer((PscEntry(1, 1),)).to_bytes())
    data[8 + 6] = 0x70  # operation 7
    with pytest.raises(FormatError, match="unknown operation 7"):
        PscBuffer.from_bytes(bytes(data))


@given(
    st.dictionaries(
        st.sampled_from(["rax", "rip", "rsp", "cr3", "r15", "efer"]), st.integers(0, 2**64 - 1)
    )
)
def test_vmsa_round_trip(values: dict[str, int]) -> None:
    vmsa = Vmsa(values)
    data = vmsa.to_bytes()
    assert len(data) == VMSA_SIZE
    assert Vmsa.from_bytes(data) == vmsa
    assert Vmsa.from_bytes(data).to_bytes() == data
