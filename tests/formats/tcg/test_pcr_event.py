"""TCG_PCR_EVENT2 writing (PFP 1.05 r23 Table 20): the exact bytes, and the records refused."""

from __future__ import annotations

import pytest

from cvm.errors import UsageError
from cvm.formats.tcg.pcr_event import PcrEvent
from cvm.formats.tcg.spec_id_event import AlgorithmSize, SpecIdEvent

SPEC = SpecIdEvent((AlgorithmSize(0x0004, 20), AlgorithmSize(0x000B, 32)))


def test_event2_bytes_field_by_field() -> None:
    event = PcrEvent(7, 0x800000E0, ((0x000B, b"\x0b" * 32), (0x0004, b"\x04" * 20)), b"data")
    assert event.to_event2(SPEC) == (
        b"\x07\0\0\0" + b"\xe0\0\0\x80" + b"\x02\0\0\0"
        + b"\x0b\x00" + b"\x0b" * 32 + b"\x04\x00" + b"\x04" * 20
        + b"\x04\0\0\0" + b"data"
    )
    assert PcrEvent(0, 3, (), b"").to_event2(SPEC) == bytes(4) + b"\x03\0\0\0" + bytes(8)


@pytest.mark.parametrize(
    ("digests", "message"),
    [
        (((0x000B, bytes(31)),), "digest for bank 0x000b must be 32 bytes"),
        (((0x000C, bytes(48)),), "0x000c"),
    ],
)
def test_event2_refuses_digests_the_spec_does_not_allow(
    digests: tuple[tuple[int, bytes], ...], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        PcrEvent(0, 0x0D, digests, b"").to_event2(SPEC)


def test_event2_refuses_a_bank_id_beyond_sixteen_bits() -> None:
    wide = SpecIdEvent((AlgorithmSize(0x1_000B, 32),))
    with pytest.raises(UsageError, match="does not fit in 2 bytes"):
        PcrEvent(0, 0x0D, ((0x1_000B, bytes(32)),), b"").to_event2(wide)
