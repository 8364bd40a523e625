"""A reader's errors say which kind of malformation they are: the vTPM answers a truncated
field with TPM_RC_INSUFFICIENT and an oversized one with TPM_RC_SIZE by their class alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.errors import FormatError, OversizeError, TruncatedError
from cvm.wire import Reader


@pytest.mark.parametrize("read", [
    lambda r: r.u16("field"), lambda r: r.u32("field"), lambda r: r.u64("field"),
    lambda r: r.take(3, "field"), lambda r: r.uint(2, "field"),
    lambda r: r.sized(2, "field", 16),
])
def test_a_field_the_bytes_end_inside_is_a_truncation(read: Callable[[Reader], object]) -> None:
    source = Reader(b"\x00", "a record", endian="big")
    with pytest.raises(TruncatedError) as caught:
        read(source)
    assert "a record: field" in str(caught.value) and "only 1 left" in str(caught.value)


def test_a_size_above_its_maximum_is_oversize_and_names_where() -> None:
    source = Reader(b"\x00\x09" + bytes(9), "a record", endian="big")
    with pytest.raises(OversizeError) as caught:
        source.sized(2, "buffer", 8)
    assert str(caught.value) == "a record: buffer.size 9 exceeds the maximum 8 (at offset 0x2)"
    assert issubclass(OversizeError, FormatError) and issubclass(TruncatedError, FormatError)
    assert Reader(b"\x00\x08" + bytes(8), "a record", endian="big").sized(2, "b", 8) == bytes(8)
