"""What edk2 refuses in a PK, KEK, db, dbx or dbt written in Setup Mode (no authentication, so
``CheckSignatureListFormat`` is the only check): unknown types, signature headers, a PK of two
signatures. dbr is not checked, nor is any variable once a PK is enrolled."""

from __future__ import annotations

import pytest

from cvm.errors import FormatError, SignatureError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import (
    EFI_CERT_SHA256,
    EFI_CERT_TYPE_PKCS7,
    EFI_CERT_X509,
    EFI_GLOBAL_VARIABLE,
)
from cvm.formats.uefi.signature_list import SignatureData, SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import EfiVariable, VariableAuthentication2
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.secure_variables import SETUP_MODE_CHECKED, apply_update
from cvm.wire import Guid

OWNER = Guid.parse("5d3c2b1a-0000-4000-8000-000000000003")
STAMP = EfiTime(2025, 5, 5)


def _unsigned(*lists: SignatureList) -> bytes:
    return VariableAuthentication2(STAMP, b"").to_bytes() + SignatureDatabase(lists).to_bytes()


def test_the_checked_variables() -> None:
    assert SETUP_MODE_CHECKED == ("PK", "KEK", "db", "dbx", "dbt")


@pytest.mark.parametrize("name", ["PK", "KEK", "db", "dbx", "dbt"])
def test_an_unknown_signature_type_is_refused(name: str) -> None:
    odd = SignatureList.of(EFI_CERT_TYPE_PKCS7, OWNER, b"\x30\x00")
    with pytest.raises(FormatError) as caught:
        apply_update(Varstore.empty_4m(), name, _unsigned(odd))
    assert str(caught.value) == (
        f"{name}: EFI_SIGNATURE_LIST 0 (4aafd29d-68df-49ee-8aa9-347d375665a7): a signature "
        "type the firmware does not take")


def test_a_signature_header_is_refused() -> None:
    good = SignatureList.of(EFI_CERT_SHA256, OWNER, bytes(32))
    headed = SignatureList(EFI_CERT_SHA256, (SignatureData(OWNER, bytes(32)),), b"h")
    with pytest.raises(FormatError) as caught:
        apply_update(Varstore.empty_4m(), "dbx", _unsigned(good, headed))
    assert str(caught.value) == (
        "dbx: EFI_SIGNATURE_LIST 1 (EFI_CERT_SHA256): SignatureHeaderSize 1, the firmware takes 0")


def test_a_pk_of_two_signatures_is_refused() -> None:
    two = SignatureList.of(EFI_CERT_X509, OWNER, b"cert-one", b"cert-two")
    with pytest.raises(FormatError) as caught:
        apply_update(Varstore.empty_4m(), "PK", _unsigned(two))
    assert str(caught.value) == "PK: 2 signatures, the firmware takes one"
    # Two signatures are fine in a KEK.
    assert apply_update(Varstore.empty_4m(), "KEK", _unsigned(two)).get("KEK") is not None


def test_dbr_and_user_mode_are_not_checked() -> None:
    odd = SignatureList.of(EFI_CERT_TYPE_PKCS7, OWNER, b"\x30\x00")
    assert apply_update(Varstore.empty_4m(), "dbr", _unsigned(odd)).get("dbr") is not None
    # With a PK enrolled the update needs a signature, refused before any list check (the
    # signed path of edk2 does not run CheckSignatureListFormat).
    with_pk = Varstore.empty_4m().set(EfiVariable("PK", EFI_GLOBAL_VARIABLE, 0x27, b""))
    with pytest.raises(SignatureError) as caught:
        apply_update(with_pk, "db", _unsigned(odd))
    assert str(caught.value).startswith("db: the update's PKCS#7 does not parse")


def test_an_empty_write_deletes_in_setup_mode() -> None:
    store = apply_update(Varstore.empty_4m(), "db", _unsigned())
    db = store.get("db")
    assert db is not None and db.data == b""
