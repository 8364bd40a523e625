"""The cursors' fixed-width integers: each width, each byte order, its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.wire import Reader, Writer

WIDTHS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}


@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("name", WIDTHS)
@given(data=st.data())
def test_each_width_round_trips_in_each_order(name: str, endian: str, data: st.DataObject
                                              ) -> None:
    size = WIDTHS[name]
    value = data.draw(st.integers(0, (1 << (8 * size)) - 1))
    written = getattr(Writer(endian), name)(value).put(b"!").to_bytes()  # type: ignore[arg-type]
    assert written == value.to_bytes(size, endian) + b"!"  # type: ignore[arg-type]
    reader = Reader(written, "demo", endian)  # type: ignore[arg-type]
    assert getattr(reader, name)() == value
    assert reader.offset == size
    assert reader.rest() == b"!"


@pytest.mark.parametrize("name", WIDTHS)
def test_a_short_read_names_the_field_and_moves_nothing(name: str) -> None:
    size = WIDTHS[name]
    reader = Reader(b"\x00" * (size + 1), "demo")
    reader.take(2)
    with pytest.raises(FormatError, match=f"demo: tail needs {size} bytes at offset 0x2, only "
                                          f"{size - 1} left"):
        getattr(reader, name)("tail")
    assert reader.offset == 2


@pytest.mark.parametrize("name", WIDTHS)
def test_exactly_enough_bytes_is_read(name: str) -> None:
    size = WIDTHS[name]
    reader = Reader(b"\xff" * size, "demo")
    assert getattr(reader, name)() == (1 << (8 * size)) - 1
    reader.expect_end()


@pytest.mark.parametrize("name", WIDTHS)
def test_a_value_that_does_not_fit_is_refused(name: str) -> None:
    size = WIDTHS[name]
    for value in (-1, 1 << (8 * size)):
        with pytest.raises(UsageError, match=f"does not fit in {size} bytes"):
            getattr(Writer(), name)(value)
    assert getattr(Writer(), name)((1 << (8 * size)) - 1).to_bytes() == b"\xff" * size


@pytest.mark.parametrize("endian", ["little", "big"])
@given(value=st.binary(max_size=300))
def test_a_sized_string_round_trips(endian: str, value: bytes) -> None:
    written = Writer(endian).sized(value, 2).u8(7).to_bytes()  # type: ignore[arg-type]
    assert written == len(value).to_bytes(2, endian) + value + b"\x07"  # type: ignore[arg-type]
    reader = Reader(written, "demo", endian)  # type: ignore[arg-type]
    assert reader.sized(2, "name", 300) == value
    assert reader.u8() == 7


def test_a_sized_string_above_its_maximum_is_refused_after_its_length() -> None:
    reader = Reader(b"\x00\x05hello", "demo", "big")
    with pytest.raises(FormatError, match=r"demo: name.size 5 exceeds the maximum 4 "
                                          r"\(at offset 0x2\)"):
        reader.sized(2, "name", 4)
    assert Reader(b"\x00\x05hello", "demo", "big").sized(2, "name", 5) == b"hello"


def test_a_short_sized_string_names_the_part_missing() -> None:
    with pytest.raises(FormatError, match=r"demo: name\.size needs 2 bytes at offset 0x0, "
                                          r"only 1 left"):
        Reader(b"\x00", "demo", "big").sized(2, "name", 10)
    with pytest.raises(FormatError, match="demo: name needs 5 bytes at offset 0x2, only 4 left"):
        Reader(b"\x00\x05hell", "demo", "big").sized(2, "name", 10)
