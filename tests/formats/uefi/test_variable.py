"""EFI variables, EFI_TIME and EFI_VARIABLE_AUTHENTICATION_2: layouts and round trips."""

from __future__ import annotations

import contextlib
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import FormatError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.variable import (
    SECURE_BOOT_ATTRIBUTES,
    VariableAuthentication2,
    attribute_names,
    decode_name,
    encode_name,
    signed_bytes,
)

times = st.builds(EfiTime, st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255),
                  st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))


@given(times, st.binary(max_size=300), st.binary(max_size=64))
def test_authentication_2_round_trip(time: EfiTime, pkcs7: bytes, data: bytes) -> None:
    auth = VariableAuthentication2(time, pkcs7)
    payload = auth.to_bytes() + data
    assert VariableAuthentication2.parse(payload) == (auth, data)
    assert len(auth.to_bytes()) == 16 + 24 + len(pkcs7)


@given(st.builds(EfiTime, st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255),
                 st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                 st.integers(0, 2**32 - 1), st.integers(0, 65535), st.integers(0, 255),
                 st.integers(0, 255), st.integers(0, 255)))
def test_efi_time_round_trip(time: EfiTime) -> None:
    assert EfiTime.from_bytes(time.to_bytes()) == time


def test_authenticated_time_must_have_zero_padding() -> None:
    with pytest.raises(FormatError):
        EfiTime.from_bytes(EfiTime(2025, 1, 1, nanosecond=5).to_bytes(), authenticated=True)
    moment = datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    assert str(EfiTime.from_datetime(moment)) == "2025-03-04 05:06:07"
    assert EfiTime(2025, 1, 2) > EfiTime(2025, 1, 1, 23, 59, 59)


def test_signed_bytes_layout() -> None:
    message = signed_bytes("db", EFI_IMAGE_SECURITY_DATABASE, SECURE_BOOT_ATTRIBUTES,
                           EfiTime(2025, 1, 1), b"DATA")
    assert message[:4] == "db".encode("utf-16-le")
    assert message[4:20] == EFI_IMAGE_SECURITY_DATABASE.to_bytes()
    assert message[20:24] == b"\x27\x00\x00\x00"
    assert message[24:26] == (2025).to_bytes(2, "little")
    assert message[-4:] == b"DATA"
    assert attribute_names(0x27) == "NV|BS|RT|AT"
    assert attribute_names(0x100) == "0x100"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=20))
def test_names_round_trip(name: str) -> None:
    assert decode_name(encode_name(name) + b"\0\0") == name


@given(st.binary(max_size=80))
def test_random_payloads_only_raise_format_errors(blob: bytes) -> None:
    with contextlib.suppress(FormatError):
        VariableAuthentication2.parse(blob)
    with contextlib.suppress(FormatError):
        decode_name(blob)
