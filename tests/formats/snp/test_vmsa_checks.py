"""The VMSA's segment registers and the initial state a VMM builds: each field, pinned.

A segment register is 16 little-endian bytes (selector, attributes, limit, base); the initial
save area's CS base and RIP split the reset address. Both enter the launch digest through
the VMSA pages, so a field read from the wrong bytes changes the measurement every verifier
compares.
"""

from __future__ import annotations

import pytest

from cvm.errors import UsageError
from cvm.formats.snp.vmsa import SEGMENT_NAMES, Segment, Vmsa, initial_vmsa


def test_a_segment_is_selector_attributes_limit_base_little_endian() -> None:
    segment = Segment(0x1234, 0x0A9B, 0x0102_0304, 0x1122_3344_5566_7788)
    data = segment.to_bytes()
    assert data == bytes.fromhex("3412" "9b0a" "04030201" "8877665544332211")
    assert Segment.from_bytes(data) == segment


@pytest.mark.parametrize("name", SEGMENT_NAMES)
def test_each_segment_is_read_from_its_own_16_bytes(name: str) -> None:
    segment = Segment(0xFF01, 0x8002, 0xFFFF_0003, 0xFFFF_FFFF_0000_0004)
    vmsa = Vmsa.from_bytes(Vmsa().replace(segments={name: segment}).to_bytes())
    assert vmsa.segment(name) == segment
    others = [other for other in SEGMENT_NAMES if other != name]
    assert all(vmsa.segment(other) == Segment(0, 0, 0, 0) for other in others)


def test_replace_refuses_an_unknown_segment_by_name() -> None:
    with pytest.raises(UsageError) as caught:
        Vmsa().replace(segments={"xs": Segment(0, 0, 0, 0)})
    assert str(caught.value) == "VMSA has no segment 'xs'"


@pytest.mark.parametrize("eip", [0x0080_B005, 0xFFFF_FFFF, 0x0001_0001])
def test_the_reset_address_splits_into_the_cs_base_and_rip(eip: int) -> None:
    vmsa = initial_vmsa(eip, sev_features=1, vcpu_signature=0x800F12)
    assert vmsa.segment("cs").base == eip & 0xFFFF_0000
    assert vmsa.segment("cs").selector == 0xF000 and vmsa.segment("cs").limit == 0xFFFF
    assert vmsa.registers["rip"] == eip & 0xFFFF
