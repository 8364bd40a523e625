"""The attribute certificate table's checks one by one: dwLength's bounds, the 8-byte alignment
of the entries, the revisions and types accepted, each message, and which bytes are the PKCS#7."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError
from cvm.formats.pe.certificate_table import (
    EFI_CERT_TYPE_PKCS7_GUID,
    WinCertificate,
    certificate_table_bytes,
    entry_length,
    entry_pkcs7,
    parse_certificate_table,
)
from cvm.wire import Guid


def _entry(length: int, revision: int = 0x0200, kind: int = 0x0002, body: bytes = b"") -> bytes:
    return length.to_bytes(4, "little") + revision.to_bytes(2, "little") + \
        kind.to_bytes(2, "little") + body


def _refused(table: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        parse_certificate_table(table)
    assert str(caught.value) == message


def test_an_entry_is_written_padded_to_eight_bytes() -> None:
    entry = WinCertificate(b"abc", 0x0EF1, 0x0100)
    assert entry.length == entry_length(b"abc") == 11
    assert entry.to_bytes() == _entry(11, 0x0100, 0x0EF1, b"abc") + bytes(5)
    assert WinCertificate(b"12345678").to_bytes() == _entry(16, body=b"12345678")
    assert certificate_table_bytes([entry, WinCertificate(b"")]) == (
        entry.to_bytes() + _entry(8))


def test_entries_follow_each_other_at_eight_byte_boundaries() -> None:
    table = _entry(11, body=b"abc") + b"\xee" * 5 + _entry(9, 0x0100, 0x0EF0, b"z") + bytes(7)
    assert parse_certificate_table(table) == (
        WinCertificate(b"abc"), WinCertificate(b"z", 0x0EF0, 0x0100))
    assert parse_certificate_table(b"") == ()


def test_stray_bytes_after_the_last_entry_are_refused() -> None:
    table = WinCertificate(b"12345678").to_bytes()
    _refused(table + bytes(7), "certificate table: 7 stray bytes at offset 0x10")
    _refused(bytes(1), "certificate table: 1 stray bytes at offset 0x0")


@pytest.mark.parametrize("length", [0, 7, 25, 0xFFFFFFFF])
def test_a_length_out_of_range_is_refused(length: int) -> None:
    table = _entry(length, body=bytes(16))
    _refused(table, f"certificate table: entry at 0x0 has dwLength {length:#x}, table size "
                    "is 0x18")


def test_a_length_up_to_the_table_end_is_accepted() -> None:
    assert parse_certificate_table(_entry(24, body=bytes(16))) == (WinCertificate(bytes(16)),)
    assert parse_certificate_table(_entry(8)) == (WinCertificate(b""),)
    second = _entry(8) + _entry(25, body=bytes(16))
    _refused(second, "certificate table: entry at 0x8 has dwLength 0x19, table size is 0x20")


def test_an_unaligned_last_entry_must_be_padded() -> None:
    # dwLength 9 ends at 9; the walk goes on at 16, past an 9-byte table.
    _refused(_entry(9, body=b"x"), "certificate table: entries end at 0x10, the table is 0x9 bytes")


@pytest.mark.parametrize("revision", [0x0000, 0x00FF, 0x0101, 0x0201, 0x0300])
def test_only_revisions_1_0_and_2_0(revision: int) -> None:
    _refused(_entry(8, revision), f"certificate table: entry at 0x0 revision {revision:#x}")


@pytest.mark.parametrize("kind", [0x0000, 0x0001, 0x0003, 0x0004, 0x0EEF, 0x0EF2])
def test_only_the_known_types(kind: int) -> None:
    _refused(_entry(8, kind=kind), f"certificate table: entry at 0x0 type {kind:#x}")
    assert parse_certificate_table(_entry(8, kind=0x0EF0))[0].certificate_type == 0x0EF0


def test_which_bytes_are_the_pkcs7() -> None:
    pkcs7_guid = EFI_CERT_TYPE_PKCS7_GUID.to_bytes()
    assert entry_pkcs7(0x0002, b"\x30\x03") == b"\x30\x03"
    assert entry_pkcs7(0x0EF1, pkcs7_guid + b"\x30\x03") == b"\x30\x03"
    assert entry_pkcs7(0x0EF1, pkcs7_guid) == b""
    assert entry_pkcs7(0x0EF1, pkcs7_guid[:15]) is None
    other = Guid.parse("a7717414-c616-4977-9420-844712a735bf")   # EFI_CERT_TYPE_RSA2048_SHA256
    assert entry_pkcs7(0x0EF1, other.to_bytes() + b"\x30\x03") is None
    assert entry_pkcs7(0x0EF0, pkcs7_guid + b"\x30\x03") is None
    assert WinCertificate(pkcs7_guid + b"sig", 0x0EF1).pkcs7 == b"sig"
