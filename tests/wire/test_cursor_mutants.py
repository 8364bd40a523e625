"""The byte reader and writer under every parser: exact bounds, empty fields, byte order, and
error messages that name the structure, the field, the size and the offset."""

from __future__ import annotations

import re
import uuid

import pytest

from cvm.errors import FormatError, TruncatedError, UsageError
from cvm.wire import Guid, Reader, Writer


def _message(text: str) -> str:
    return "^" + re.escape(text) + "$"


# --- Reader: construction and position ---------------------------------------------------


def test_a_reader_starts_at_offset_zero_on_a_copy_in_little_endian() -> None:
    source = bytearray(b"\x01\x02\x03")
    reader = Reader(source, "demo")
    source[0] = 0xFF
    assert reader.offset == 0 and reader.remaining == 3
    assert reader.data == b"\x01\x02\x03" and reader.what == "demo"
    assert reader.u16() == 0x0201
    assert reader.offset == 2 and reader.remaining == 1


def test_the_first_read_is_the_first_byte() -> None:
    assert Reader(b"\x07\x08", "demo").u8() == 7
    assert Reader(b"\x07\x08", "demo").take(1) == b"\x07"
    assert Reader(b"\x07\x08", "demo", "big").uint(2) == 0x0708


# --- take ------------------------------------------------------------------------------


def test_take_returns_the_bytes_and_advances() -> None:
    reader = Reader(b"abcdef", "demo")
    assert reader.take(2) == b"ab"
    assert reader.take(3) == b"cde"
    assert reader.offset == 5
    assert reader.take(1) == b"f"
    reader.expect_end()


def test_take_of_zero_bytes_is_empty_even_at_the_end() -> None:
    """An empty field (a TPM2B of size 0, an empty name) is legal anywhere, also last."""
    reader = Reader(b"ab", "demo")
    assert reader.take(0) == b""
    assert reader.offset == 0
    reader.take(2)
    assert reader.take(0) == b""
    assert reader.offset == 2


def test_take_of_a_negative_size_is_refused_and_moves_nothing() -> None:
    reader = Reader(b"abc", "demo")
    with pytest.raises(TruncatedError, match=_message(
            "demo: length needs -1 bytes at offset 0x0, only 3 left")):
        reader.take(-1, "length")
    assert reader.offset == 0


def test_take_past_the_end_names_the_default_field() -> None:
    reader = Reader(b"abc", "a table")
    reader.take(1)
    with pytest.raises(TruncatedError, match=_message(
            "a table: data needs 3 bytes at offset 0x1, only 2 left")):
        reader.take(3)
    assert reader.offset == 1
    assert reader.take(2) == b"bc"


# --- uint ------------------------------------------------------------------------------


def test_uint_reads_any_width_in_the_readers_order() -> None:
    little = Reader(b"\x01\x02\x03\x04", "demo")
    assert little.uint(3) == 0x030201
    assert little.offset == 3
    assert little.uint(1) == 4
    little.expect_end()
    big = Reader(b"\x01\x02\x03", "demo", "big")
    assert big.uint(3) == 0x010203


def test_uint_takes_an_explicit_order_over_the_readers() -> None:
    assert Reader(b"\x01\x02", "demo", "little").uint(2, endian="big") == 0x0102
    assert Reader(b"\x01\x02", "demo", "big").uint(2, endian="little") == 0x0201
    reader = Reader(b"\x01\x02\x01\x02", "demo", "big")
    assert reader.uint(2, endian="little") == 0x0201
    assert reader.uint(2) == 0x0102


def test_uint_of_zero_bytes_is_zero() -> None:
    reader = Reader(b"", "demo")
    assert reader.uint(0) == 0
    assert reader.offset == 0


def test_uint_reads_exactly_to_the_end() -> None:
    reader = Reader(b"\xff\xff\xff", "demo")
    assert reader.uint(3) == 0xFFFFFF
    reader.expect_end()


def test_uint_refusals_name_the_field_size_and_offset() -> None:
    reader = Reader(b"\x00\x01\x02", "demo")
    reader.u8()
    with pytest.raises(TruncatedError, match=_message(
            "demo: integer needs 3 bytes at offset 0x1, only 2 left")):
        reader.uint(3)
    with pytest.raises(TruncatedError, match=_message(
            "demo: count needs -2 bytes at offset 0x1, only 2 left")):
        reader.uint(-2, "count")
    assert reader.offset == 1
    assert reader.uint(2) == 0x0201


# --- the fixed widths --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)])
def test_each_fixed_width_names_itself_when_short(name: str, size: int) -> None:
    reader = Reader(bytes(size - 1), "demo")
    with pytest.raises(TruncatedError, match=_message(
            f"demo: {name} needs {size} bytes at offset 0x0, only {size - 1} left")):
        getattr(reader, name)()


@pytest.mark.parametrize(("name", "size"), [("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)])
def test_each_fixed_width_reads_at_the_offset_and_advances(name: str, size: int) -> None:
    data = bytes(range(1, 2 * size + 2))
    reader = Reader(data, "demo", "big")
    reader.u8()
    assert getattr(reader, name)() == int.from_bytes(data[1:1 + size], "big")
    assert reader.offset == 1 + size
    assert getattr(reader, name)() == int.from_bytes(data[1 + size:1 + 2 * size], "big")
    reader.expect_end()


# --- sized -----------------------------------------------------------------------------


def test_an_empty_sized_string_at_the_very_end_is_read() -> None:
    reader = Reader(b"\x07\x00\x00", "demo", "big")
    reader.u8()
    assert reader.sized(2, "buffer", 16) == b""
    assert reader.offset == 3
    reader.expect_end()


def test_a_sized_string_in_little_endian_with_a_four_byte_length() -> None:
    reader = Reader(b"\x03\x00\x00\x00abcX", "demo")
    assert reader.sized(4, "blob", 3) == b"abc"
    assert reader.offset == 7
    assert reader.rest() == b"X"


# --- rest, expect_end, fail ----------------------------------------------------------------


def test_rest_is_what_is_left_and_empty_at_the_end() -> None:
    reader = Reader(b"abcd", "demo")
    reader.take(1)
    assert reader.rest() == b"bcd"
    assert reader.offset == 4 and reader.remaining == 0
    assert reader.rest() == b""
    reader.expect_end()


def test_trailing_bytes_are_refused_with_their_count_and_offset() -> None:
    reader = Reader(b"abcde", "a record")
    reader.take(2)
    with pytest.raises(FormatError, match=_message(
            "a record: 3 unexpected trailing bytes at offset 0x2")):
        reader.expect_end()
    reader.take(2)
    with pytest.raises(FormatError, match=_message(
            "a record: 1 unexpected trailing bytes at offset 0x4")):
        reader.expect_end()
    reader.take(1)
    reader.expect_end()


def test_fail_names_the_structure_and_the_position() -> None:
    reader = Reader(b"abcdefghijklmnopq", "an event")
    reader.take(17)
    error = reader.fail("unknown algorithm 0x99")
    assert type(error) is FormatError
    assert str(error) == "an event: unknown algorithm 0x99 (at offset 0x11)"


# --- Writer ------------------------------------------------------------------------------


def test_writer_uint_writes_any_width_in_either_order_and_chains() -> None:
    writer = Writer()
    assert writer.uint(0x030201, 3) is writer
    writer.uint(0x0102, 2, endian="big").uint(0, 0)
    assert writer.to_bytes() == b"\x01\x02\x03\x01\x02"
    assert Writer("big").uint(0x010203, 3).to_bytes() == b"\x01\x02\x03"
    assert Writer("big").uint(0x0201, 2, endian="little").to_bytes() == b"\x01\x02"


def test_writer_uint_bounds() -> None:
    assert Writer().uint(0xFFFFFF, 3).to_bytes() == b"\xff\xff\xff"
    assert Writer().uint(0, 3).to_bytes() == b"\x00\x00\x00"
    with pytest.raises(UsageError, match=_message("value 16777216 does not fit in 3 bytes")):
        Writer().uint(1 << 24, 3)
    with pytest.raises(UsageError, match=_message("value -1 does not fit in 3 bytes")):
        Writer().uint(-1, 3)
    with pytest.raises(UsageError, match=_message("value 1 does not fit in 0 bytes")):
        Writer().uint(1, 0)


@pytest.mark.parametrize(("name", "size"), [("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)])
def test_each_fixed_width_appends_after_what_was_written(name: str, size: int) -> None:
    writer = Writer("big").put(b"head")
    assert getattr(writer, name)(1) is writer
    assert writer.to_bytes() == b"head" + (1).to_bytes(size, "big")
    with pytest.raises(UsageError, match=_message(
            f"value {1 << (8 * size)} does not fit in {size} bytes")):
        getattr(writer, name)(1 << (8 * size))
    with pytest.raises(UsageError, match=_message(f"value -1 does not fit in {size} bytes")):
        getattr(writer, name)(-1)
    assert writer.to_bytes() == b"head" + (1).to_bytes(size, "big")


def test_writer_sized_and_put_append_and_chain() -> None:
    writer = Writer("big")
    assert writer.put(b"A") is writer
    assert writer.sized(b"xyz", 4) is writer
    assert writer.sized(b"", 2).to_bytes() == b"A\x00\x00\x00\x03xyz\x00\x00"
    assert Writer().sized(b"q", 2).to_bytes() == b"\x01\x00q"
    assert isinstance(writer.to_bytes(), bytes)


# --- Guid ------------------------------------------------------------------------------

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_GLOBAL_VARIABLE_WIRE = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")


def test_a_guid_is_stored_mixed_endian() -> None:
    """UEFI stores the first three groups little-endian (EFI_GLOBAL_VARIABLE as edk2 has it)."""
    guid = Guid.parse(EFI_GLOBAL_VARIABLE)
    assert guid.to_bytes() == EFI_GLOBAL_VARIABLE_WIRE
    assert Guid.from_bytes(EFI_GLOBAL_VARIABLE_WIRE) == guid
    assert str(guid) == EFI_GLOBAL_VARIABLE
    assert str(Guid.from_bytes(EFI_GLOBAL_VARIABLE_WIRE)) == EFI_GLOBAL_VARIABLE
    assert guid.value == uuid.UUID(EFI_GLOBAL_VARIABLE)


def test_a_guid_of_the_wrong_size_is_refused_with_its_size() -> None:
    for size in (0, 15, 17):
        with pytest.raises(FormatError, match=_message(
                f"GUID: expected 16 bytes, got {size}")):
            Guid.from_bytes(bytes(size))


def test_a_text_that_is_no_guid_is_refused_and_quoted() -> None:
    with pytest.raises(FormatError, match=_message("not a GUID: 'db-vendor'")):
        Guid.parse("db-vendor")
