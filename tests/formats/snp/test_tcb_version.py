"""TCB_VERSION (56860 Table 3): both layouts, ordering, strictness, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion


def test_milan_layout_known_answer() -> None:
    tcb = TcbVersion.from_int(0x4405000000000002)
    assert (tcb.boot_loader, tcb.tee, tcb.snp, tcb.microcode) == (2, 0, 5, 68)
    assert tcb.to_int() == 0x4405000000000002


def test_turin_layout_known_answer() -> None:
    tcb = TcbVersion(fmc=1, boot_loader=2, tee=3, snp=4, microcode=9, layout=TcbLayout.TURIN)
    assert tcb.to_bytes() == bytes([1, 2, 3, 4, 0, 0, 0, 9])
    assert TcbVersion.from_bytes(tcb.to_bytes(), TcbLayout.TURIN) == tcb
    assert "fmc" in tcb.components()


@pytest.mark.parametrize("index", [2, 3, 4, 5])
def test_milan_reserved_bytes_must_be_zero(index: int) -> None:
    data = bytearray(8)
    data[index] = 1
    with pytest.raises(FormatError):
        TcbVersion.from_bytes(bytes(data))


@pytest.mark.parametrize("index", [4, 5, 6])
def test_turin_reserved_bytes_must_be_zero(index: int) -> None:
    data = bytearray(8)
    data[index] = 1
    with pytest.raises(FormatError):
        TcbVersion.from_bytes(bytes(data), TcbLayout.TURIN)


def test_ordering_is_component_wise() -> None:
    low = TcbVersion(boot_loader=2, snp=5, microcode=68)
    high = TcbVersion(boot_loader=3, snp=8, microcode=115)
    assert high.at_least(low) and low.at_most(high) and not low.at_least(high)
    mixed = TcbVersion(boot_loader=9, snp=1, microcode=200)
    assert not mixed.at_least(low) and not low.at_least(mixed)


def test_invalid_values() -> None:
    with pytest.raises(UsageError):
        TcbVersion(boot_loader=256)
    with pytest.raises(UsageError):
        TcbVersion(fmc=1)
    with pytest.raises(FormatError):
        TcbVersion.from_bytes(bytes(7))


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from(list(TcbLayout)),
)
def test_round_trip(bl: int, tee: int, snp: int, uc: int, fmc: int, layout: TcbLayout) -> None:
    tcb = TcbVersion(bl, tee, snp, uc, fmc if layout is TcbLayout.TURIN else 0, layout)
    assert TcbVersion.from_bytes(tcb.to_bytes(), layout) == tcb
    assert TcbVersion.from_int(tcb.to_int(), layout) == tcb


@given(st.binary(min_size=8, max_size=8), st.sampled_from(list(TcbLayout)))
def test_bytes_round_trip_or_format_error(data: bytes, layout: TcbLayout) -> None:
    try:
        tcb = TcbVersion.from_bytes(data, layout)
    except FormatError:
        return
    assert tcb.to_bytes() == data
