"""EFI_VARIABLE_AUTHENTICATION_2, EFI_TIME and variable names: each refusal and its message, the
authenticated time stamp's zero fields, the exact bytes written and signed."""

from __future__ import annotations

import datetime

import pytest

from cvm.errors import FormatError
from cvm.formats.uefi.efi_time import EFI_TIME_SIZE, EfiTime
from cvm.formats.uefi.guids import (
    EFI_CERT_TYPE_PKCS7,
    EFI_CERT_X509,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
)
from cvm.formats.uefi.variable import (
    SECURE_BOOT_ATTRIBUTES,
    EfiVariable,
    VariableAuthentication2,
    attribute_names,
    decode_name,
    encode_name,
    signed_bytes,
)

STAMP = EfiTime(2025, 6, 7, 8, 9, 10)
PAD_MESSAGE = ("EFI_TIME of an authenticated variable: Pad1, Nanosecond, TimeZone, Daylight and "
               "Pad2 must be zero")


def _payload(pkcs7: bytes = b"SIGNED", data: bytes = b"DATA", *, length: int | None = None,
             revision: int = 0x0200, kind: int = 0x0EF1, cert_type: bytes | None = None,
             stamp: bytes | None = None) -> bytes:
    header = (
        (24 + len(pkcs7) if length is None else length).to_bytes(4, "little")
        + revision.to_bytes(2, "little") + kind.to_bytes(2, "little")
        + (EFI_CERT_TYPE_PKCS7.to_bytes() if cert_type is None else cert_type)
    )
    return (STAMP.to_bytes() if stamp is None else stamp) + header + pkcs7 + data


def _refused(payload: bytes, message: str) -> None:
    with pytest.raises(FormatError) as caught:
        VariableAuthentication2.parse(payload)
    assert str(caught.value) == message


# --- EFI_VARIABLE_AUTHENTICATION_2 ----------------------------------------------------------

def test_a_payload_splits_into_time_signature_and_data() -> None:
    auth, data = VariableAuthentication2.parse(_payload())
    assert auth == VariableAuthentication2(STAMP, b"SIGNED") and data == b"DATA"


def test_the_written_descriptor_is_byte_exact() -> None:
    written = VariableAuthentication2(STAMP, b"SIGNED").to_bytes()
    assert written == _payload(data=b"")
    assert written[16:20] == (30).to_bytes(4, "little")
    assert written[20:24] == b"\x00\x02\xf1\x0e"


def test_a_payload_shorter_than_the_header_is_refused() -> None:
    _refused(_payload(b"", b"")[:39],
             "EFI_VARIABLE_AUTHENTICATION_2: 39 bytes, header needs 40")
    auth, data = VariableAuthentication2.parse(_payload(b"", b""))
    assert auth.pkcs7 == b"" and data == b""


def test_the_revision_type_and_cert_type_are_checked() -> None:
    _refused(_payload(revision=0x0100), "EFI_VARIABLE_AUTHENTICATION_2: wRevision is not 0x0200")
    _refused(_payload(kind=0x0002),
             "EFI_VARIABLE_AUTHENTICATION_2: wCertificateType is not 0x0EF1")
    _refused(_payload(kind=0x0EF0),
             "EFI_VARIABLE_AUTHENTICATION_2: wCertificateType is not 0x0EF1")
    _refused(_payload(cert_type=EFI_CERT_X509.to_bytes()),
             "EFI_VARIABLE_AUTHENTICATION_2: CertType is not PKCS7")


@pytest.mark.parametrize("length", [0, 23, 24 + 6 + 4 + 1, 0xFFFFFFFF])
def test_a_length_out_of_range_is_refused(length: int) -> None:
    _refused(_payload(length=length),
             f"EFI_VARIABLE_AUTHENTICATION_2: dwLength {length} out of range")


def test_dwlength_decides_where_the_data_starts() -> None:
    assert VariableAuthentication2.parse(_payload(length=24)) == (
        VariableAuthentication2(STAMP, b""), b"SIGNEDDATA")
    assert VariableAuthentication2.parse(_payload(length=34)) == (
        VariableAuthentication2(STAMP, b"SIGNEDDATA"), b"")


@pytest.mark.parametrize("field_offset", [7, 8, 11, 12, 13, 14, 15])
def test_the_time_stamp_of_a_payload_must_have_its_extra_fields_zero(field_offset: int) -> None:
    stamp = bytearray(STAMP.to_bytes())
    stamp[field_offset] = 1
    _refused(_payload(stamp=bytes(stamp)), PAD_MESSAGE)
    # The same time stamp in a variable store record is read as it is.
    assert EfiTime.from_bytes(bytes(stamp)).to_bytes() == bytes(stamp)


# --- EFI_TIME -------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["pad1", "nanosecond", "time_zone", "daylight", "pad2"])
def test_each_extra_field_of_an_authenticated_time_is_refused(field: str) -> None:
    stamp = EfiTime(2025, 1, 1, **{field: 1})
    with pytest.raises(FormatError) as caught:
        EfiTime.from_bytes(stamp.to_bytes(), authenticated=True)
    assert str(caught.value) == PAD_MESSAGE
    assert EfiTime.from_bytes(stamp.to_bytes()) == stamp
    assert EfiTime.from_bytes(STAMP.to_bytes(), authenticated=True) == STAMP


def test_the_efi_time_layout() -> None:
    stamp = EfiTime(0x07E9, 2, 3, 4, 5, 6, 0x01020304, 0x0506, 7, 8, 9)
    assert stamp.to_bytes() == bytes.fromhex("e907 02 03 04 05 06 08 04030201 0605 07 09")
    assert EFI_TIME_SIZE == 16
    assert EfiTime.from_bytes(stamp.to_bytes()) == stamp


def test_efi_time_from_a_datetime_and_as_text() -> None:
    moment = datetime.datetime(2024, 11, 30, 23, 58, 7, 999_999, tzinfo=datetime.UTC)
    assert EfiTime.from_datetime(moment) == EfiTime(2024, 11, 30, 23, 58, 7)
    assert str(EfiTime(987, 1, 2, 3, 4, 5)) == "0987-01-02 03:04:05"


def test_efi_time_ordering_is_by_date_then_time() -> None:
    ordered = [EfiTime(2024, 12, 31, 23, 59, 59), EfiTime(2025, 1, 1), EfiTime(2025, 1, 1, 0, 0, 1),
               EfiTime(2025, 1, 1, 0, 1), EfiTime(2025, 1, 1, 1), EfiTime(2025, 1, 2),
               EfiTime(2025, 2, 1)]
    assert sorted(reversed(ordered)) == ordered


# --- names, attributes and the signed content -----------------------------------------------

def test_attribute_names() -> None:
    assert attribute_names(0) == "0"
    assert attribute_names(0xFF) == "NV|BS|RT|HR|AW|AT|AP|EA"
    assert attribute_names(0x1027) == "NV|BS|RT|AT|0x1000"
    assert attribute_names(0x300) == "0x300"
    assert SECURE_BOOT_ATTRIBUTES == 0x27


def test_a_name_that_utf16_cannot_encode_is_refused() -> None:
    with pytest.raises(FormatError) as caught:
        encode_name("db\ud800")
    assert str(caught.value) == "variable name 'db\\ud800' is not UTF-16 encodable"
    assert encode_name("Boot0001") == "Boot0001".encode("utf-16-le")


def test_decoding_a_name() -> None:
    assert decode_name("PK".encode("utf-16-le") + b"\0\0" + "zz".encode("utf-16-le")) == "PK"
    assert decode_name("\U0001f600".encode("utf-16-le")) == "\U0001f600"
    assert decode_name(b"") == ""
    # The first NUL ends the name, whatever follows (another NUL and more text here).
    assert decode_name("PK\0zz\0y".encode("utf-16-le")) == "PK"
    with pytest.raises(FormatError) as caught:
        decode_name(b"P\0K")
    assert str(caught.value) == "variable name: odd number of bytes for UTF-16"
    with pytest.raises(FormatError) as caught:
        decode_name(b"\x00\xd8P\x00")
    assert str(caught.value) == "variable name: unpaired UTF-16 surrogate"


def test_the_signed_content_is_name_vendor_attributes_time_data() -> None:
    assert signed_bytes("KEK", EFI_GLOBAL_VARIABLE, 0x12345667, STAMP, b"xy") == (
        "KEK".encode("utf-16-le") + EFI_GLOBAL_VARIABLE.to_bytes() + b"\x67\x56\x34\x12"
        + STAMP.to_bytes() + b"xy")


def test_a_variable_is_keyed_by_name_and_vendor() -> None:
    variable = EfiVariable("db", EFI_IMAGE_SECURITY_DATABASE, 0x27, b"")
    assert variable.key == ("db", EFI_IMAGE_SECURITY_DATABASE)
    assert variable.timestamp == EfiTime() and variable.monotonic_count == 0
