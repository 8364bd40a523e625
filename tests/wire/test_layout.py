"""The byte-layout kit: tiling checked at declaration, strict parse, exact serialise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, InternalError, UsageError
from cvm.wire import Guid, Layout, Reader, Writer, raw, reserved, u8, u16, u32

DEMO = Layout(
    "DEMO", 0x10, [u32("magic", 0x0), u16("version", 0x4), reserved(0x6, 2), raw("id", 0x8, 8)]
)


def test_gaps_overlaps_and_short_layouts_fail_at_declaration() -> None:
    with pytest.raises(InternalError, match="gap before field b at 0x5"):
        Layout("X", 8, [u32("a", 0), u8("b", 5), u16("c", 6)])
    with pytest.raises(InternalError, match="overlap before field b"):
        Layout("X", 8, [u32("a", 0), u32("b", 3)])
    with pytest.raises(InternalError, match="structure size is 0x10"):
        Layout("X", 0x10, [u32("a", 0)])


def test_strict_parse() -> None:
    good = DEMO.pack({"magic": 0x1234, "version": 2, "id": b"abcdefgh"})
    assert DEMO.unpack(good)["version"] == 2
    with pytest.raises(FormatError, match="expected 0x10 bytes, got 0xf"):
        DEMO.unpack(good[:-1])
    bad = bytearray(good)
    bad[7] = 1
    with pytest.raises(FormatError, match=r"reserved bytes at 0x6\.\.0x7"):
        DEMO.unpack(bytes(bad))


def test_pack_range_checks() -> None:
    with pytest.raises(UsageError, match="version: 65536 does not fit"):
        DEMO.pack({"magic": 0, "version": 1 << 16, "id": bytes(8)})
    with pytest.raises(UsageError, match="id: expected 8 bytes"):
        DEMO.pack({"magic": 0, "version": 0, "id": bytes(7)})


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1), st.binary(min_size=8, max_size=8))
def test_round_trip(magic: int, version: int, ident: bytes) -> None:
    values = {"magic": magic, "version": version, "id": ident}
    assert DEMO.unpack(DEMO.pack(values)) == values


def test_reader_names_what_is_missing() -> None:
    reader = Reader(b"\x01\x02\x03", "EVENT")
    assert reader.u16("count") == 0x0201
    with pytest.raises(FormatError, match="EVENT: size needs 4 bytes at offset 0x2"):
        reader.u32("size")
    assert Writer("big").u16(0x0102).put(b"x").to_bytes() == b"\x01\x02x"


def test_guid_mixed_endian() -> None:
    guid = Guid.parse("96b582de-1fb2-45f7-baea-a366c55a082d")
    assert guid.to_bytes()[:4] == bytes.fromhex("de82b596")
    assert Guid.from_bytes(guid.to_bytes()) == guid
    with pytest.raises(FormatError):
        Guid.parse("nope")
