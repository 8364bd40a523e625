"""Extended-report certificate table (GHCB 56421 Table 8): layout, strictness, round trips."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError, UsageError
from cvm.formats.snp.cert_table import (
    ARK_GUID,
    ASK_GUID,
    ENTRY_SIZE,
    VCEK_GUID,
    CertTable,
)
from cvm.wire import Guid


def test_canonical_layout() -> None:
    table = CertTable(((VCEK_GUID, b"vcek"), (ASK_GUID, b"ask!!"), (ARK_GUID, b"ark")))
    data = table.to_bytes()
    assert data[:16] == bytes.fromhex("8d75da6364e66445adc5f4b93be8accd")
    assert int.from_bytes(data[16:20], "little") == 4 * ENTRY_SIZE
    assert int.from_bytes(data[20:24], "little") == 4
    assert data[3 * ENTRY_SIZE : 4 * ENTRY_SIZE] == bytes(ENTRY_SIZE)
    assert data[4 * ENTRY_SIZE :] == b"vcekask!!ark"
    assert CertTable.from_bytes(data) == table
    assert table.get(ASK_GUID) == b"ask!!" and table.get(Guid(uuid.uuid4())) is None


def test_padded_host_buffer_is_accepted() -> None:
    table = CertTable(((VCEK_GUID, b"v" * 10),))
    assert CertTable.from_bytes(table.to_bytes() + bytes(4000)) == table


def test_bad_tables() -> None:
    good = CertTable(((VCEK_GUID, b"vcek"),)).to_bytes()
    with pytest.raises(FormatError):
        CertTable.from_bytes(good[:ENTRY_SIZE])  # no terminator
    with pytest.raises(FormatError):
        CertTable.from_bytes(good[:-1])  # certificate runs past the end
    pointing_inside = bytearray(good)
    pointing_inside[16:20] = (0).to_bytes(4, "little")
    with pytest.raises(FormatError):
        CertTable.from_bytes(bytes(pointing_inside))
    with pytest.raises(UsageError):
        CertTable(((VCEK_GUID, b"a"), (VCEK_GUID, b"b")))


guids = st.uuids().filter(lambda u: u.int != 0).map(Guid)


@given(
    st.lists(
        st.tuples(guids, st.binary(min_size=1, max_size=64)),
        max_size=6,
        unique_by=lambda entry: entry[0],
    )
)
def test_round_trip(entries: list[tuple[Guid, bytes]]) -> None:
    table = CertTable(tuple(entries))
    data = table.to_bytes()
    assert CertTable.from_bytes(data) == table
    assert CertTable.from_bytes(data).to_bytes() == data


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    try:
        table = CertTable.from_bytes(data)
    except FormatError:
        return
    assert all(certificate for _, certificate in table.entries)
