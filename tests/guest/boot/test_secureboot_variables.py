"""Authenticated PK/KEK/db updates: only the right key, only a newer timestamp (edk2 rules)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cvm.crypto.x509_edk2 import Certificate, PrivateKey, der, generate_rsa_key, issue_certificate
from cvm.errors import ChainError, FormatError, PolicyError, SignatureError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.signature_list import EFI_CERT_X509, SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import VariableAuthentication2
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.secure_variables import apply_update, sign_update
from cvm.wire import Guid

OWNER = Guid.parse("5d3c2b1a-0000-4000-8000-000000000001")
T0, T1 = EfiTime(2025, 1, 1), EfiTime(2025, 6, 1)


@dataclass(frozen=True)
class Keys:
    pk: tuple[PrivateKey, Certificate]
    kek: tuple[PrivateKey, Certificate]
    db: tuple[PrivateKey, Certificate]
    other: tuple[PrivateKey, Certificate]  # a key no variable names


@pytest.fixture(scope="module")
def keys() -> Keys:
    made = []
    for name in ("PK", "KEK", "db", "other"):
        key = generate_rsa_key()
        made.append((key, issue_certificate(f"Owner {name}", key)))
    return Keys(*made)


def _esl(*certificates: Certificate) -> bytes:
    lists = tuple(SignatureList.of(EFI_CERT_X509, OWNER, der(c)) for c in certificates)
    return SignatureDatabase(lists).to_bytes()


@pytest.fixture(scope="module")
def enrolled(keys: Keys) -> Varstore:
    store = Varstore.empty_4m()
    store = apply_update(store, "PK", sign_update("PK", _esl(keys.pk[1]), *keys.pk, T0))
    store = apply_update(store, "KEK", sign_update("KEK", _esl(keys.kek[1]), *keys.pk, T0))
    return apply_update(store, "db", sign_update("db", _esl(keys.db[1]), *keys.kek, T0))


def test_enrolment_chain(enrolled: Varstore, keys: Keys) -> None:
    db = enrolled.get("db", EFI_IMAGE_SECURITY_DATABASE)
    assert db is not None and db.timestamp == T0 and db.attributes == 0x27
    assert SignatureDatabase.parse(db.data).certificates()[0].data == der(keys.db[1])


def test_setup_mode_accepts_an_unsigned_pk(keys: Keys) -> None:
    payload = VariableAuthentication2(T0, b"").to_bytes() + _esl(keys.pk[1])
    assert apply_update(Varstore.empty_4m(), "PK", payload).get("PK") is not None


def test_db_update_signed_by_pk_or_kek_only(enrolled: Varstore, keys: Keys) -> None:
    assert apply_update(enrolled, "db", sign_update("db", _esl(keys.pk[1]), *keys.pk, T1))
    with pytest.raises(ChainError):
        apply_update(enrolled, "db", sign_update("db", _esl(keys.pk[1]), *keys.db, T1))


def test_kek_update_needs_pk(enrolled: Varstore, keys: Keys) -> None:
    with pytest.raises(ChainError):
        apply_update(enrolled, "KEK", sign_update("KEK", _esl(keys.db[1]), *keys.kek, T1))


def test_replayed_or_older_updates_are_refused(enrolled: Varstore, keys: Keys) -> None:
    with pytest.raises(PolicyError, match="update refused"):
        apply_update(enrolled, "db", sign_update("db", _esl(keys.db[1]), *keys.kek, T0))


def test_append_keeps_the_old_entries(enrolled: Varstore, keys: Keys) -> None:
    payload = sign_update("db", _esl(keys.kek[1]), *keys.kek, T0, attributes=0x67)
    store = apply_update(enrolled, "db", payload, attributes=0x67)
    db = store.get("db", EFI_IMAGE_SECURITY_DATABASE)
    assert db is not None and len(SignatureDatabase.parse(db.data)) == 2


def test_tampered_payload_is_refused(enrolled: Varstore, keys: Keys) -> None:
    payload = bytearray(sign_update("db", _esl(keys.pk[1]), *keys.kek, T1))
    payload[-1] ^= 1
    with pytest.raises((SignatureError, FormatError)):
        apply_update(enrolled, "db", bytes(payload))
    with pytest.raises(SignatureError):
        apply_update(enrolled, "db", VariableAuthentication2(T1, b"junk").to_bytes())
