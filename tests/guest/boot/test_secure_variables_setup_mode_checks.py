"""What edk2 refuses in a PK, KEK, db, dbx or dbt written in Setup Mode (no authentication, so
``CheckSignatureListFormat`` is the only check): unknown types, signature headers, a PK of two
signatures, an X.509 list whose first certificate has no RSA key. dbr is not checked, nor is
any variable once a PK is enrolled."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
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


@pytest.fixture(scope="module")
def rsa_certificates() -> tuple[bytes, bytes]:
    first = issue_certificate("Setup RSA 1", generate_rsa_key(), serial=0x5E71)
    second = issue_certificate("Setup RSA 2", generate_rsa_key(), serial=0x5E72)
    # The same length, as one EFI_SIGNATURE_LIST needs.
    assert len(der(first)) == len(der(second))
    return der(first), der(second)


def test_a_pk_of_two_signatures_is_refused(rsa_certificates: tuple[bytes, bytes]) -> None:
    two = SignatureList.of(EFI_CERT_X509, OWNER, *rsa_certificates)
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


def test_the_first_certificate_of_an_x509_list_needs_an_rsa_key(
    rsa_certificates: tuple[bytes, bytes],
) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_certificate = der(issue_certificate("Setup EC", ec_key))
    good = SignatureList.of(EFI_CERT_X509, OWNER, rsa_certificates[0])
    with pytest.raises(FormatError) as caught:
        apply_update(Varstore.empty_4m(), "db",
                     _unsigned(good, SignatureList.of(EFI_CERT_X509, OWNER, ec_certificate)))
    assert str(caught.value) == (
        "db: EFI_SIGNATURE_LIST 1 (EFI_CERT_X509): the first certificate has no RSA key")
    with pytest.raises(FormatError) as caught:
        apply_update(Varstore.empty_4m(), "KEK",
                     _unsigned(SignatureList.of(EFI_CERT_X509, OWNER, b"\x30\x03\x02\x01\x01")))
    assert str(caught.value).startswith(
        "KEK: EFI_SIGNATURE_LIST 0 (EFI_CERT_X509): not an X.509 certificate: ")
    # Hash lists need no certificate; an RSA certificate passes; an X.509 list after a hash
    # list is checked all the same.
    hashes = SignatureList.of(EFI_CERT_SHA256, OWNER, bytes(32))
    assert apply_update(Varstore.empty_4m(), "db", _unsigned(hashes, good)).get("db") is not None
    with pytest.raises(FormatError) as caught:
        apply_update(Varstore.empty_4m(), "db",
                     _unsigned(hashes, SignatureList.of(EFI_CERT_X509, OWNER, ec_certificate)))
    assert str(caught.value) == (
        "db: EFI_SIGNATURE_LIST 1 (EFI_CERT_X509): the first certificate has no RSA key")
