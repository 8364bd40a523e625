"""The extended report's certificate table: each refusal and the message that names it."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.cert_table import (
    ARK_GUID,
    ASK_GUID,
    ENTRY_SIZE,
    MAX_ENTRIES,
    VCEK_GUID,
    CertTable,
)
from cvm.wire import Guid

ZERO_GUID = Guid.from_bytes(bytes(16))


def _entry(guid: Guid, offset: int, length: int) -> bytes:
    return guid.to_bytes() + offset.to_bytes(4, "little") + length.to_bytes(4, "little")


def test_the_constructor_refuses_a_repeated_zero_or_empty_entry() -> None:
    cases = [
        (((VCEK_GUID, b"a"), (VCEK_GUID, b"b")), "certificate table: a GUID appears twice"),
        (((ZERO_GUID, b"a"),), "certificate table: the zero GUID is the terminator"),
        (((ASK_GUID, b"a"), (ARK_GUID, b"")), "certificate table: empty certificate"),
    ]
    for entries, message in cases:
        with pytest.raises(UsageError) as caught:
            CertTable(entries)
        assert str(caught.value) == message


def test_a_table_without_its_terminator_is_refused_as_such() -> None:
    """Entries that run to the end of the buffer, or stop inside the next entry."""
    one = _entry(VCEK_GUID, 2 * ENTRY_SIZE, 1)
    for data in (one, one + bytes(ENTRY_SIZE - 1), b"", bytes(ENTRY_SIZE - 1)):
        with pytest.raises(FormatError) as caught:
            CertTable.from_bytes(data)
        assert str(caught.value) == "certificate table: no terminating all-zero entry"


def test_an_entry_outside_the_certificate_area_is_named() -> None:
    data = _entry(VCEK_GUID, ENTRY_SIZE, 4) + bytes(ENTRY_SIZE) + b"vcek"
    with pytest.raises(FormatError) as caught:
        CertTable.from_bytes(data)
    assert str(caught.value) == (
        f"certificate table: entry {VCEK_GUID} points to 0x18+0x4, outside the certificate "
        "area 0x30..0x34"
    )
    # The first byte after the terminator, and the last byte of the buffer, are inside.
    assert CertTable.from_bytes(
        _entry(VCEK_GUID, 2 * ENTRY_SIZE, 4) + bytes(ENTRY_SIZE) + b"vcek"
    ).get(VCEK_GUID) == b"vcek"
    with pytest.raises(FormatError, match="outside the certificate area"):
        CertTable.from_bytes(_entry(VCEK_GUID, 2 * ENTRY_SIZE, 5) + bytes(ENTRY_SIZE) + b"vcek")
    with pytest.raises(FormatError, match="points to 0x30\\+0x0"):
        CertTable.from_bytes(_entry(VCEK_GUID, 2 * ENTRY_SIZE, 0) + bytes(ENTRY_SIZE) + b"vcek")


def test_the_constructors_refusals_reach_the_parser_as_format_errors() -> None:
    area = 3 * ENTRY_SIZE
    twice = (_entry(VCEK_GUID, area, 1) + _entry(VCEK_GUID, area, 1) + bytes(ENTRY_SIZE) + b"x")
    with pytest.raises(FormatError) as caught:
        CertTable.from_bytes(twice)
    assert str(caught.value) == "certificate table: a GUID appears twice"
    # A zero GUID with a non-zero offset is an entry, not the terminator.
    zero = _entry(ZERO_GUID, 2 * ENTRY_SIZE, 1) + bytes(ENTRY_SIZE) + b"x"
    with pytest.raises(FormatError) as caught:
        CertTable.from_bytes(zero)
    assert str(caught.value) == "certificate table: the zero GUID is the terminator"


def test_at_most_64_entries() -> None:
    def table(count: int) -> bytes:
        area = (count + 1) * ENTRY_SIZE
        guids = [Guid.from_bytes(index.to_bytes(16, "little")) for index in range(1, count + 1)]
        return b"".join(_entry(guid, area, 1) for guid in guids) + bytes(ENTRY_SIZE) + b"x"

    assert len(CertTable.from_bytes(table(MAX_ENTRIES)).entries) == MAX_ENTRIES
    with pytest.raises(FormatError) as caught:
        CertTable.from_bytes(table(MAX_ENTRIES + 1))
    assert str(caught.value) == "certificate table: more than 64 entries"
