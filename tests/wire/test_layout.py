"""The byte-layout kit: tiling checked at declaration, strict parse, exact serialise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, InternalError, UsageError
from cvm.wire import Guid, Layout, Reader, Writer, raw, reserved, u8, u16, u32, u64
from cvm.wire.layout import Field

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


def wide() -> Layout:
    """Declared when a test runs (so a changed declaration helper shows in that test)."""
    return Layout("WIDE", 0x20, [u8("a", 0), reserved(1, 1), u16("b", 2), u32("c", 4),
                                 u64("d", 8), raw("e", 0x10, 8), reserved(0x18, 8)], "big")


def test_declaration_helpers_and_the_compiled_struct() -> None:
    layout = wide()
    assert [(f.name, f.offset, f.size, f.kind) for f in layout.fields] == [
        ("a", 0, 1, "uint"), ("reserved_0x1", 1, 1, "reserved"), ("b", 2, 2, "uint"),
        ("c", 4, 4, "uint"), ("d", 8, 8, "uint"), ("e", 0x10, 8, "bytes"),
        ("reserved_0x18", 0x18, 8, "reserved")]
    assert layout._struct is not None and layout._struct.format == ">B1sHIQ8s8s"
    assert layout._names == ("a", "", "b", "c", "d", "e", "")
    assert layout._ints == ("a", "b", "c", "d") and layout._areas == (("e", 8),)
    assert layout._zeros == ((1, bytes(1)), (6, bytes(8)))
    little = Layout("L", 4, [u16("x", 0), u16("y", 2)])
    assert little._struct is not None and little._struct.format == "<HH"
    assert little.pack({"x": 1, "y": 2}) == b"\x01\x00\x02\x00"
    assert little.unpack(b"\x01\x00\x02\x00") == {"x": 1, "y": 2}  # no reserved range
    assert little.field("y").offset == 2 and little.span("x", "y") == slice(0, 4)
    with pytest.raises(InternalError, match="layout L has no field 'z'"):
        little.field("z")


@given(st.integers(0, 255), st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**64 - 1), st.binary(min_size=8, max_size=8))
def test_the_struct_path_equals_the_field_path(a: int, b: int, c: int, d: int,
                                               e: bytes) -> None:
    """pack/unpack through the compiled struct give exactly the field-by-field bytes and
    values, in both byte orders."""
    layout = wide()
    values = {"a": a, "b": b, "c": c, "d": d, "e": e}
    packed = layout.pack(values)
    assert packed == layout._pack_fields(values) == layout._pack_struct(values)
    assert layout.unpack(packed) == layout._unpack_fields(packed) == values
    assert packed[2:4] == b.to_bytes(2, "big")


def test_the_struct_path_refuses_what_the_field_path_refuses() -> None:
    layout = wide()
    base = {"a": 1, "b": 2, "c": 3, "d": 4, "e": bytes(8)}
    for change, message in (({"a": True}, "a: expected an integer"),
                            ({"a": 256}, "a: 256 does not fit in 1 bytes"),
                            ({"d": -1}, "d: -1 does not fit"),
                            ({"e": bytes(9)}, "e: expected 8 bytes"),
                            ({"e": "x" * 8}, "e: expected 8 bytes")):
        with pytest.raises(UsageError, match=message):
            layout.pack({**base, **change})  # type: ignore[dict-item]
    with pytest.raises(InternalError, match="no value for field d"):
        layout.pack({k: v for k, v in base.items() if k != "d"})
    with pytest.raises(InternalError, match=r"unknown fields \['f'\]"):
        layout.pack({**base, "f": 0})
    with pytest.raises(InternalError, match="no value for field e"):
        layout.pack({**{k: v for k, v in base.items() if k != "e"}, "f": 0})
    assert layout.pack({**base, "e": bytearray(8)}) == layout.pack(base)  # the field path's rule
    packed = bytearray(layout.pack(base))
    for offset in (1, 0x1F):
        bad = bytearray(packed)
        bad[offset] = 1
        with pytest.raises(FormatError, match="reserved bytes"):
            layout.unpack(bytes(bad))
        with pytest.raises(FormatError, match="reserved bytes"):
            layout._unpack_fields(bytes(bad))


def test_a_layout_with_other_integer_widths_uses_the_field_path() -> None:
    odd = Layout("ODD", 8, [u8("a", 0), Field("b", 1, 3, "uint"), u32("c", 4)])
    values = {"a": 1, "b": 0xABCDEF, "c": 7}
    assert odd._struct is None
    assert odd.unpack(odd.pack(values)) == values
    assert odd.pack(values)[1:4] == (0xABCDEF).to_bytes(3, "little")


def test_the_struct_path_hands_over_what_it_does_not_judge() -> None:
    """Every valid value set goes through the struct; a bool, an int subclass, a bytearray or
    a wrong length goes to the field path, which decides."""
    layout = wide()
    base = {"a": 1, "b": 2, "c": 3, "d": 4, "e": bytes(8)}
    assert layout._pack_struct(base) == layout._pack_fields(base)
    for change in ({"a": True}, {"e": bytearray(8)}, {"e": bytes(7)}, {"d": 1 << 64}):
        assert layout._pack_struct({**base, **change}) is None
    assert layout._pack_struct({k: v for k, v in base.items() if k != "c"}) is None


def test_zero_sized_and_repeated_fields_fail_at_declaration() -> None:
    with pytest.raises(InternalError, match="layout X: field b has size 0"):
        Layout("X", 2, [u8("a", 0), Field("b", 1, 0, "uint"), u8("c", 1)])
    with pytest.raises(InternalError, match="layout X: field a declared twice"):
        Layout("X", 2, [u8("a", 0), u8("a", 1)])
