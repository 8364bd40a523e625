"""The attribute certificate table: 8-byte aligned WIN_CERTIFICATE entries, strict walk."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.pe.certificate_table import (
    EFI_CERT_TYPE_PKCS7_GUID,
    WIN_CERT_TYPE_EFI_GUID,
    WIN_CERT_TYPE_PKCS_SIGNED_DATA,
    WinCertificate,
    certificate_table_bytes,
    parse_certificate_table,
)

entries = st.builds(
    WinCertificate, st.binary(max_size=64),
    st.sampled_from([WIN_CERT_TYPE_PKCS_SIGNED_DATA, WIN_CERT_TYPE_EFI_GUID]),
    st.sampled_from([0x0100, 0x0200]),
)


@given(st.lists(entries, max_size=4))
def test_round_trip(items: list[WinCertificate]) -> None:
    table = certificate_table_bytes(items)
    assert len(table) % 8 == 0
    assert parse_certificate_table(table) == tuple(items)


def test_efi_guid_entries_carry_pkcs7() -> None:
    entry = WinCertificate(EFI_CERT_TYPE_PKCS7_GUID.to_bytes() + b"\x30\x00",
                           WIN_CERT_TYPE_EFI_GUID)
    assert entry.pkcs7 == b"\x30\x00"
    assert WinCertificate(b"\x30\x00").pkcs7 == b"\x30\x00"
    assert WinCertificate(bytes(20), WIN_CERT_TYPE_EFI_GUID).pkcs7 is None


@pytest.mark.parametrize("table", [
    bytes(4),
    (4).to_bytes(4, "little") + b"\x00\x02\x02\x00",
    (64).to_bytes(4, "little") + b"\x00\x02\x02\x00" + bytes(8),
    (8).to_bytes(4, "little") + b"\x00\x03\x02\x00",
    (8).to_bytes(4, "little") + b"\x00\x02\x09\x00",
    WinCertificate(b"abc").to_bytes() + bytes(3),
])
def test_malformed_tables(table: bytes) -> None:
    with pytest.raises(FormatError):
        parse_certificate_table(table)


@given(st.binary(max_size=100))
def test_random_tables_only_raise_format_errors(blob: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_certificate_table(blob)
