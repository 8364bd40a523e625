"""Authenticated Secure Boot variable updates, rule by rule: which variables, which attributes,
who may sign each, Setup Mode, timestamps and appends, and each refusal's class and message."""

from __future__ import annotations

import pytest
from tests.guest.boot.test_secureboot_variables import T0, T1, Keys, _esl, enrolled, keys

from cvm.crypto.pkcs7 import OID_DATA, parse_any
from cvm.crypto.x509_edk2 import Certificate, PrivateKey
from cvm.errors import ChainError, FormatError, PolicyError, SignatureError, UsageError
from cvm.formats.uefi.efi_time import EfiTime
from cvm.formats.uefi.guids import EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.variable import EfiVariable, VariableAuthentication2
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.secure_variables import AUTHORITIES, apply_update, sign_update
from cvm.wire import Guid

__all__ = ["enrolled", "keys"]  # the fixtures, shared with the variables' own tests

OWNER = Guid.parse("5d3c2b1a-0000-4000-8000-000000000002")
T2 = EfiTime(2026, 1, 1)


def test_who_may_sign_each_variable() -> None:
    assert AUTHORITIES == {"PK": ("PK",), "KEK": ("PK",), "db": ("KEK", "PK"),
                           "dbx": ("KEK", "PK"), "dbt": ("KEK", "PK"), "dbr": ("KEK", "PK")}


def test_sign_update_needs_a_vendor(keys: Keys) -> None:
    with pytest.raises(UsageError) as caught:
        sign_update("MokList", b"", *keys.pk, T0)
    assert str(caught.value) == "no vendor GUID known for variable 'MokList'; give one"
    payload = sign_update("MokList", b"", *keys.pk, T0, vendor=OWNER)
    auth, data = VariableAuthentication2.parse(payload)
    assert (auth.timestamp, data) == (T0, b"") and auth.pkcs7


def test_only_secure_boot_variables_are_updated(keys: Keys, enrolled: Varstore) -> None:
    payload = sign_update("MokList", b"", *keys.pk, T1, vendor=OWNER)
    for vendor in (None, OWNER):
        with pytest.raises(UsageError) as caught:
            apply_update(enrolled, "MokList", payload, vendor=vendor)
        assert str(caught.value) == (
            "'MokList' is not a Secure Boot variable (PK, KEK, db, dbx, dbt, dbr)")


def test_time_based_authenticated_writes_are_required(keys: Keys, enrolled: Varstore) -> None:
    payload = sign_update("db", _esl(keys.db[1]), *keys.kek, T1, attributes=0x07)
    with pytest.raises(PolicyError) as caught:
        apply_update(enrolled, "db", payload, attributes=0x07)
    assert str(caught.value) == "db: a Secure Boot variable needs time-based authenticated writes"


def test_the_stored_variable_keeps_its_attributes_vendor_data_and_timestamp(
    keys: Keys, enrolled: Varstore,
) -> None:
    data = _esl(keys.other[1])
    store = apply_update(enrolled, "dbx", sign_update("dbx", data, *keys.kek, T1))
    assert store.get("dbx") == EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE, 0x27, data, T1)
    kek = store.get("KEK")
    assert kek is not None and kek.vendor == EFI_GLOBAL_VARIABLE


def test_the_signature_covers_name_vendor_attributes_timestamp_and_data(
    keys: Keys, enrolled: Varstore,
) -> None:
    good = sign_update("db", _esl(keys.other[1]), *keys.kek, T1)
    auth, _ = VariableAuthentication2.parse(good)
    for name, data, attributes, timestamp in (
            ("dbx", _esl(keys.other[1]), 0x27, T1), ("db", _esl(keys.db[1]), 0x27, T1),
            ("db", _esl(keys.other[1]), 0x37, T1), ("db", _esl(keys.other[1]), 0x27, T2)):
        forged = VariableAuthentication2(timestamp, auth.pkcs7).to_bytes() + data
        with pytest.raises(SignatureError, match="messageDigest does not match"):
            apply_update(enrolled, name, forged, attributes=attributes)


def test_a_malformed_signature_database_is_refused(keys: Keys, enrolled: Varstore) -> None:
    payload = sign_update("db", b"\x01\x02\x03", *keys.kek, T1)
    with pytest.raises(FormatError):
        apply_update(enrolled, "db", payload)


def test_an_empty_update_deletes_the_data(keys: Keys, enrolled: Varstore) -> None:
    store = apply_update(enrolled, "db", sign_update("db", b"", *keys.kek, T1))
    db = store.get("db")
    assert db is not None and db.data == b""


def test_setup_mode(keys: Keys) -> None:
    empty = Varstore.empty_4m()
    # Unsigned KEK and db are accepted while no PK is enrolled.
    unsigned = VariableAuthentication2(T0, b"").to_bytes() + _esl(keys.kek[1])
    assert apply_update(empty, "KEK", unsigned).get("KEK") is not None
    # So is a PK signed by any key (nothing to chain to yet)...
    signed = sign_update("PK", _esl(keys.pk[1]), *keys.other, T0)
    assert apply_update(empty, "PK", signed).get("PK") is not None
    # ...but with a KEK enrolled, a db update in Setup Mode must chain to it.
    with_kek = apply_update(empty, "KEK", unsigned)
    with pytest.raises(ChainError):
        apply_update(with_kek, "db", sign_update("db", _esl(keys.db[1]), *keys.other, T0))
    assert apply_update(with_kek, "db", sign_update("db", _esl(keys.db[1]), *keys.kek, T0))


def test_outside_setup_mode_an_unsigned_update_is_refused(keys: Keys, enrolled: Varstore) -> None:
    unsigned = VariableAuthentication2(T1, b"").to_bytes() + _esl(keys.db[1])
    with pytest.raises(SignatureError) as caught:
        apply_update(enrolled, "db", unsigned)
    assert str(caught.value).startswith("db: the update's PKCS#7 does not parse (")


@pytest.mark.parametrize(("name", "signer", "authorities"), [
    ("PK", "kek", "PK"), ("KEK", "kek", "PK"), ("db", "db", "KEK or PK"),
    ("dbx", "other", "KEK or PK"),
])
def test_unauthorised_signers_are_refused(keys: Keys, enrolled: Varstore, name: str,
                                          signer: str, authorities: str) -> None:
    pair: tuple[PrivateKey, Certificate] = getattr(keys, signer)
    with pytest.raises(ChainError) as caught:
        apply_update(enrolled, name, sign_update(name, _esl(keys.other[1]), *pair, T1))
    assert str(caught.value) == f"{name}: the update is not signed by {authorities}"


def test_any_certificate_of_an_authority_may_sign(keys: Keys, enrolled: Varstore) -> None:
    store = apply_update(enrolled, "KEK", sign_update(
        "KEK", _esl(keys.other[1], keys.kek[1]), *keys.pk, T1))
    # The second KEK certificate signs; the first does not verify and the search goes on.
    assert apply_update(store, "db", sign_update("db", _esl(keys.db[1]), *keys.kek, T1))
    assert apply_update(store, "db", sign_update("db", _esl(keys.db[1]), *keys.other, T1))
    # PK may sign db too, and a PK update may be signed by the PK only.
    assert apply_update(store, "db", sign_update("db", _esl(keys.db[1]), *keys.pk, T1))
    assert apply_update(store, "PK", sign_update("PK", _esl(keys.pk[1]), *keys.pk, T1))


def test_a_kek_certificate_under_another_vendor_is_no_authority(keys: Keys,
                                                                enrolled: Varstore) -> None:
    store = enrolled.set(EfiVariable("KEK", OWNER, 0x27, _esl(keys.other[1]), T0))
    with pytest.raises(ChainError):
        apply_update(store, "db", sign_update("db", _esl(keys.db[1]), *keys.other, T1))


def test_timestamps_must_increase_unless_appending(keys: Keys, enrolled: Varstore) -> None:
    with pytest.raises(PolicyError) as caught:
        apply_update(enrolled, "db", sign_update("db", _esl(keys.db[1]), *keys.kek, T0))
    (finding,) = caught.value.findings
    assert (finding.claim, finding.expected, finding.actual) == (
        "timestamp", f"later than {T0}", str(T0))
    assert str(caught.value) == f"db: update refused: {finding}"
    older = EfiTime(2024, 1, 1)
    with pytest.raises(PolicyError):
        apply_update(enrolled, "db", sign_update("db", _esl(keys.db[1]), *keys.kek, older))
    # An older timestamp is accepted for an append, which keeps the later of the two.
    appended = apply_update(enrolled, "db", sign_update(
        "db", _esl(keys.other[1]), *keys.kek, older, attributes=0x67), attributes=0x67)
    db = appended.get("db")
    assert db is not None
    assert db == EfiVariable("db", EFI_IMAGE_SECURITY_DATABASE, 0x27,
                             _esl(keys.db[1]) + _esl(keys.other[1]), T0)
    later = apply_update(enrolled, "db", sign_update(
        "db", _esl(keys.other[1]), *keys.kek, T2, attributes=0x67), attributes=0x67)
    assert later.get("db") == EfiVariable("db", EFI_IMAGE_SECURITY_DATABASE, 0x27,
                                          _esl(keys.db[1]) + _esl(keys.other[1]), T2)


def test_an_append_to_an_absent_variable_creates_it(keys: Keys, enrolled: Varstore) -> None:
    store = apply_update(enrolled, "dbx", sign_update(
        "dbx", _esl(keys.other[1]), *keys.kek, T1, attributes=0x67), attributes=0x67)
    assert store.get("dbx") == EfiVariable("dbx", EFI_IMAGE_SECURITY_DATABASE, 0x27,
                                           _esl(keys.other[1]), T1)


def test_the_signature_is_detached(keys: Keys) -> None:
    auth, _ = VariableAuthentication2.parse(sign_update("db", _esl(keys.db[1]), *keys.kek, T1))
    signed = parse_any(auth.pkcs7)
    assert signed.content is None and signed.content_type == OID_DATA


def _global_pk(keys: Keys) -> Varstore:
    return Varstore.empty_4m().set(EfiVariable("PK", EFI_GLOBAL_VARIABLE, 0x27,
                                               _esl(keys.pk[1]), T0))


def test_authorities_are_the_global_pk_and_kek_only(keys: Keys) -> None:
    store = _global_pk(keys).set(EfiVariable("KEK", OWNER, 0x27, _esl(keys.other[1]), T0))
    with pytest.raises(ChainError):
        apply_update(store, "db", sign_update("db", _esl(keys.db[1]), *keys.other, T1))
    # Without a KEK the PK still signs db.
    assert apply_update(_global_pk(keys), "db", sign_update("db", _esl(keys.db[1]), *keys.pk, T1))


def test_setup_mode_and_the_current_value_are_read_under_their_vendors(keys: Keys) -> None:
    # A PK under another vendor does not end Setup Mode.
    foreign_pk = Varstore.empty_4m().set(EfiVariable("PK", OWNER, 0x27, _esl(keys.pk[1]), T0))
    unsigned = VariableAuthentication2(T0, b"").to_bytes() + _esl(keys.kek[1])
    assert apply_update(foreign_pk, "KEK", unsigned).get("KEK", EFI_GLOBAL_VARIABLE) is not None
    # A later db under another vendor is not the db being replaced.
    store = _global_pk(keys).set(EfiVariable("db", OWNER, 0x27, _esl(keys.other[1]), T2))
    updated = apply_update(store, "db", sign_update("db", _esl(keys.db[1]), *keys.pk, T1))
    assert updated.get("db", EFI_IMAGE_SECURITY_DATABASE) == EfiVariable(
        "db", EFI_IMAGE_SECURITY_DATABASE, 0x27, _esl(keys.db[1]), T1)


def test_a_replay_names_its_reason(keys: Keys, enrolled: Varstore) -> None:
    with pytest.raises(PolicyError) as caught:
        apply_update(enrolled, "db", sign_update("db", _esl(keys.db[1]), *keys.kek, T0))
    assert caught.value.findings[0].hint == (
        "an authenticated update must carry a newer timestamp (replay?)")
