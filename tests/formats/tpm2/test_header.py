"""The 10-byte command/response header: big-endian tag, size, code; short or wide refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.tpm2.command import HEADER_LAYOUT, HEADER_SIZE, Header


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF), st.integers(0, 0xFFFF_FFFF),
       st.binary(max_size=8))
def test_the_header_is_the_layouts_bytes(tag: int, size: int, code: int, tail: bytes) -> None:
    header = Header(tag, size, code)
    data = header.to_bytes()
    assert data == HEADER_LAYOUT.pack({"tag": tag, "size": size, "code": code})
    assert data == tag.to_bytes(2, "big") + size.to_bytes(4, "big") + code.to_bytes(4, "big")
    assert Header.from_bytes(data + tail) == header  # only the first ten bytes are read


@pytest.mark.parametrize("length", [0, 1, HEADER_SIZE - 1])
def test_a_short_header_is_refused(length: int) -> None:
    with pytest.raises(FormatError, match=f"header: expected 0xa bytes, got {length:#x}"):
        Header.from_bytes(bytes(length))


@pytest.mark.parametrize(("tag", "size", "code"), [(0x10000, 10, 0), (0x8001, 1 << 32, 0),
                                                   (0x8001, 10, -1)])
def test_a_field_out_of_range_is_refused(tag: int, size: int, code: int) -> None:
    with pytest.raises(UsageError, match="does not fit"):
        Header(tag, size, code).to_bytes()
