"""SVSM_CORE_PVALIDATE request (58019 section 5.2): round trips and strict parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.svsm.pvalidate_request import (
    MAX_ENTRIES,
    PvalidateEntry,
    PvalidateRequest,
)

entries = st.builds(PvalidateEntry, st.integers(0, (1 << 52) - 1), st.booleans(),
                    st.sampled_from([0, 1]), st.booleans())


@given(st.lists(entries, max_size=20), st.data())
def test_round_trip(values: list[PvalidateEntry], data: st.DataObject) -> None:
    request = PvalidateRequest(tuple(values), data.draw(st.integers(0, len(values))))
    assert PvalidateRequest.from_bytes(request.to_bytes()) == request


def test_layout_of_an_entry() -> None:
    raw = PvalidateRequest((PvalidateEntry(0x12345, True, ignore_cf=True),)).to_bytes()
    assert raw == bytes([1, 0, 0, 0, 0, 0, 0, 0]) + (0x12345 << 12 | 0b1100).to_bytes(8, "little")


@pytest.mark.parametrize("raw", [
    bytes(4),  # short header
    (2).to_bytes(2, "little") + bytes(6) + bytes(8),  # 2 entries announced, 1 given
    (1).to_bytes(2, "little") + (2).to_bytes(2, "little") + bytes(4) + bytes(8),  # next > entries
    (MAX_ENTRIES + 1).to_bytes(2, "little") + bytes(6),  # more than a page
    (1).to_bytes(2, "little") + bytes(6) + (0x10).to_bytes(8, "little"),  # reserved bit
    (1).to_bytes(2, "little") + bytes(6) + (0x2).to_bytes(8, "little"),  # page size 2
])
def test_malformed_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(FormatError):
        PvalidateRequest.from_bytes(raw)
