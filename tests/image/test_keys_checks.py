"""The owner's keys on disk: the ``owner/`` folder is the owner's alone (0700) and every private
file is created 0600 — not written readable and narrowed afterwards, which leaves a moment in
which another local user can open it — and what is saved loads back."""

from __future__ import annotations

import dataclasses
import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from cvm.crypto.drbg import SeededRandom
from cvm.crypto.rsa_pss import derive_private_key
from cvm.crypto.x509_edk2 import der, pem, private_key_pem
from cvm.errors import FormatError, UsageError
from cvm.formats.uefi.guids import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
)
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.variable import SECURE_BOOT_ATTRIBUTES
from cvm.guest.boot.secureboot import as_database, verify_image
from cvm.image.boot_chain import make_kernel
from cvm.image.keys import (
    KEY_SEED_SIZE,
    OWNER_GUID,
    PROVISIONING_KEY_SIZE,
    README,
    SERIAL_SIZE,
    KeyPair,
    OwnerKeys,
    certificate_serial,
    new_key_pair,
    new_rsa_key,
)

PRIVATE = {"pk.key", "kek.key", "db.key", "vendor.key", "pcr-policy.key", "provisioning.key"}
PUBLIC = {"README", "pk.crt", "kek.crt", "db.crt", "vendor.crt", "pcr-policy.pem"}


@pytest.fixture(scope="module")
def keys() -> OwnerKeys:
    return OwnerKeys.generate(os.urandom)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_owner_folder_and_its_private_files_are_the_owners_alone(
        keys: OwnerKeys, tmp_path: Path, umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "bundle" / "owner"
    # Narrowing a file after writing it is what this refuses: with chmod doing nothing, each
    # private file must still have been created 0600.
    real_chmod = Path.chmod

    def chmod(path: Path, mode: int, **options: object) -> None:
        if path.is_dir():
            real_chmod(path, mode)
    monkeypatch.setattr(Path, "chmod", chmod)
    keys.save(folder)
    assert {p.name for p in folder.iterdir()} == PRIVATE | PUBLIC
    assert _mode(folder) == 0o700
    for name in PRIVATE:
        assert _mode(folder / name) == 0o600, name
    for name in PUBLIC:
        assert _mode(folder / name) == 0o644, name


def test_an_existing_owner_folder_is_narrowed_and_its_keys_replaced(
        keys: OwnerKeys, tmp_path: Path, umask: None) -> None:
    folder = tmp_path / "owner"
    folder.mkdir(mode=0o755)
    (folder / "db.key").write_bytes(b"an old key")
    (folder / "db.key").chmod(0o644)
    keys.save(folder)
    assert _mode(folder) == 0o700 and _mode(folder / "db.key") == 0o600
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    loaded = OwnerKeys.load(folder)
    assert loaded.provisioning == keys.provisioning
    assert loaded.db.certificate == keys.db.certificate
    assert loaded.pcr_policy_public_pem() == keys.pcr_policy_public_pem()


def test_the_built_bundles_secret_files_are_created_private(
        tmp_path: Path, umask: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recovery key is created 0600 inside the 0700 ``owner/``; with ``chmod`` made a no-op
    a file written readable and narrowed afterwards would stay 0644."""
    import random

    from cvm.image.bundle import ImageSpec, build_image

    monkeypatch.setattr(Path, "chmod", lambda self, mode, **_: None)
    built = build_image(tmp_path / "img", ImageSpec(kdf_cost="fast"),
                        random=random.Random(5).randbytes)
    assert _mode(built.out / "owner" / "recovery.key") == 0o600


# What the keys are and what they sign: each checked against the firmware's own rules.

NAMES = {"pk": "cvm owner PK", "kek": "cvm owner KEK", "db": "cvm owner db",
         "vendor": "cvm owner shim vendor"}


def _common_name(pair: KeyPair) -> str:
    (attribute,) = pair.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


def _public(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def test_generated_keys_are_distinct_rsa_2048_with_their_names() -> None:
    keys = OwnerKeys.generate(os.urandom)  # its own: what a shared fixture made is not rerun
    pairs = {"pk": keys.pk, "kek": keys.kek, "db": keys.db, "vendor": keys.vendor}
    for name, pair in pairs.items():
        assert pair is not None
        assert _common_name(pair) == NAMES[name]
        assert isinstance(pair.key, rsa.RSAPrivateKey) and pair.key.key_size == 2048
        assert _public(pair.key) == pair.certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert keys.pcr_policy is not None
    publics = {_public(pair.key) for pair in pairs.values() if pair is not None}
    assert len(publics | {_public(keys.pcr_policy)}) == 5


def test_generate_draws_the_provisioning_key_and_leaves_out_what_is_not_asked(
        keys: OwnerKeys) -> None:
    asked: list[int] = []

    def random(size: int) -> bytes:
        asked.append(size)
        return bytes(range(1, size + 1))
    bare = OwnerKeys.generate(random, vendor=False, pcr_policy=False, db=keys.db)
    assert asked == [PROVISIONING_KEY_SIZE] and PROVISIONING_KEY_SIZE == 32
    assert bare.provisioning == bytes(range(1, 33))
    assert bare.db is keys.db
    assert bare.vendor is None and bare.pcr_policy is None
    assert _public(bare.pk.key) != _public(keys.pk.key)
    with pytest.raises(UsageError) as vendor:
        bare.sign_vendor(make_kernel())
    assert str(vendor.value) == "these owner keys have no shim vendor key"
    with pytest.raises(UsageError) as policy:
        bare.pcr_policy_public_pem()
    assert str(policy.value) == "these owner keys have no PCR-policy signing key"


def test_db_and_vendor_sign_images_the_firmware_accepts_under_their_own_key_only(
        keys: OwnerKeys) -> None:
    assert keys.vendor is not None
    image = make_kernel()
    db = as_database([der(keys.db.certificate)])
    vendor = as_database([der(keys.vendor.certificate)])
    by_db, by_vendor = keys.sign_db(image), keys.sign_vendor(image)
    assert verify_image(by_db, db).allowed and not verify_image(by_db, vendor).allowed
    assert verify_image(by_vendor, vendor).allowed and not verify_image(by_vendor, db).allowed
    assert not verify_image(image, db).allowed


def test_the_pcr_policy_public_key_is_the_private_keys(keys: OwnerKeys) -> None:
    assert keys.pcr_policy is not None
    assert keys.pcr_policy_public_pem() == _public(keys.pcr_policy)
    ec_keys = dataclasses.replace(keys, pcr_policy=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(UsageError) as refused:
        ec_keys.pcr_policy_public_pem()
    assert str(refused.value) == "the PCR-policy signing key must be an RSA key"


def test_the_varstore_enrolls_pk_kek_db_and_the_given_dbx(keys: OwnerKeys) -> None:
    store = keys.varstore()
    expected = {"PK": (EFI_GLOBAL_VARIABLE, keys.pk), "KEK": (EFI_GLOBAL_VARIABLE, keys.kek),
                "db": (EFI_IMAGE_SECURITY_DATABASE, keys.db)}
    assert sorted(v.name for v in store.variables) == sorted(expected)
    for name, (vendor, pair) in expected.items():
        variable = store.get(name, vendor)
        assert variable is not None, name
        assert variable.attributes == SECURE_BOOT_ATTRIBUTES
        database = SignatureDatabase.parse(variable.data)
        assert [(lst.signature_type, [(e.owner, e.data) for e in lst.signatures])
                for lst in database.lists] == [
            (EFI_CERT_X509, [(OWNER_GUID, der(pair.certificate))])]
    revoked = (bytes(range(32)), b"\xee" * 32)
    with_dbx = keys.varstore(revoked)
    dbx = with_dbx.get("dbx", EFI_IMAGE_SECURITY_DATABASE)
    assert dbx is not None and dbx.attributes == SECURE_BOOT_ATTRIBUTES
    assert [(lst.signature_type, [(e.owner, e.data) for e in lst.signatures])
            for lst in SignatureDatabase.parse(dbx.data).lists] == [
        (EFI_CERT_SHA256, [(OWNER_GUID, d) for d in revoked])]
    assert [v for v in with_dbx.variables if v.name != "dbx"] == list(store.variables)


@pytest.mark.parametrize("size", [31, 33])
def test_a_dbx_entry_that_is_not_a_sha256_digest_is_refused(keys: OwnerKeys, size: int) -> None:
    with pytest.raises(UsageError) as refused:
        keys.varstore((bytes(32), bytes(size)))
    assert str(refused.value) == "dbx entries are SHA-256 Authenticode digests (32 bytes)"


def test_what_is_saved_is_each_key_and_certificate(keys: OwnerKeys, tmp_path: Path,
                                                   umask: None) -> None:
    keys.save(tmp_path)
    assert keys.vendor is not None and keys.pcr_policy is not None
    assert (tmp_path / "README").read_text() == README
    assert "owner's secrets" in README
    for name, pair in (("pk", keys.pk), ("kek", keys.kek), ("db", keys.db),
                       ("vendor", keys.vendor)):
        assert (tmp_path / f"{name}.key").read_bytes() == private_key_pem(pair.key)
        assert (tmp_path / f"{name}.crt").read_bytes() == pem(pair.certificate)
    assert (tmp_path / "pcr-policy.key").read_bytes() == private_key_pem(keys.pcr_policy)
    assert (tmp_path / "pcr-policy.pem").read_bytes() == _public(keys.pcr_policy)
    assert (tmp_path / "provisioning.key").read_bytes() == keys.provisioning
    loaded = OwnerKeys.load(tmp_path)
    assert loaded.vendor is not None and loaded.pcr_policy is not None
    for mine, theirs in ((keys.pk, loaded.pk), (keys.kek, loaded.kek), (keys.db, loaded.db),
                         (keys.vendor, loaded.vendor)):
        assert theirs.certificate == mine.certificate
        assert private_key_pem(theirs.key) == private_key_pem(mine.key)
    assert private_key_pem(loaded.pcr_policy) == private_key_pem(keys.pcr_policy)


def test_keys_without_vendor_or_policy_save_and_load_without_them(
        keys: OwnerKeys, tmp_path: Path, umask: None) -> None:
    bare = dataclasses.replace(keys, vendor=None, pcr_policy=None)
    bare.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == (
        PRIVATE | PUBLIC) - {"vendor.key", "vendor.crt", "pcr-policy.key", "pcr-policy.pem"}
    loaded = OwnerKeys.load(tmp_path)
    assert loaded.vendor is None and loaded.pcr_policy is None
    assert loaded.provisioning == keys.provisioning


@pytest.mark.parametrize("missing", ["pk.key", "kek.crt", "db.key", "vendor.crt"])
def test_a_missing_key_file_is_named(keys: OwnerKeys, tmp_path: Path, umask: None,
                                     missing: str) -> None:
    keys.save(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(UsageError) as refused:
        OwnerKeys.load(tmp_path)
    assert str(refused.value) == f"owner keys: cannot read {tmp_path / missing}"


@pytest.mark.parametrize("broken", ["pk.key", "kek.crt", "db.crt", "vendor.key",
                                    "pcr-policy.key"])
def test_a_key_file_that_does_not_parse_is_named(keys: OwnerKeys, tmp_path: Path,
                                                 umask: None, broken: str) -> None:
    keys.save(tmp_path)
    (tmp_path / broken).write_bytes(b"garbage")
    with pytest.raises(FormatError) as refused:
        OwnerKeys.load(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / broken}: not an ")


def test_a_missing_or_short_provisioning_key_is_named(keys: OwnerKeys, tmp_path: Path,
                                                      umask: None) -> None:
    keys.save(tmp_path)
    path = tmp_path / "provisioning.key"
    path.unlink()
    with pytest.raises(UsageError) as missing:
        OwnerKeys.load(tmp_path)
    assert str(missing.value) == f"owner keys: cannot read {path}"
    for size in (31, 33):
        path.write_bytes(bytes(size))
        with pytest.raises(FormatError) as wrong:
            OwnerKeys.load(tmp_path)
        assert str(wrong.value) == f"{path}: {size} bytes, expected 32"
    path.write_bytes(bytes(32))
    assert OwnerKeys.load(tmp_path).provisioning == bytes(32)


# Seeded keys (``cvm image build --seed``): derived from the keys' seed, one draw of the build.

SEED_DRAWS = [PROVISIONING_KEY_SIZE, KEY_SEED_SIZE]
START = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)  # the certificates' usual start
GIVEN = datetime.datetime(2024, 3, 1, 12, 30, tzinfo=datetime.UTC)  # another, as a build's time


class Recorder:
    """A seeded random that remembers the size of every draw."""

    def __init__(self, seed: bytes) -> None:
        self.stream = SeededRandom(seed, b"test")
        self.asked: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.asked.append(size)
        return self.stream(size)


def _seeded(seed: bytes = b"7", **options: object) -> tuple[OwnerKeys, list[int]]:
    random = Recorder(seed)
    keys = OwnerKeys.generate(random, seeded=True, not_before=GIVEN,  # type: ignore[arg-type]
                              **options)
    return keys, random.asked


def test_seeded_keys_are_derived_from_one_draw_after_the_provisioning_key() -> None:
    keys, asked = _seeded()
    assert asked == SEED_DRAWS and KEY_SEED_SIZE == 32 and SERIAL_SIZE == 20
    stream = SeededRandom(b"7", b"test")
    assert keys.provisioning == stream(32)
    seed = stream(32)
    for name, pair in (("pk", keys.pk), ("kek", keys.kek), ("db", keys.db),
                       ("vendor", keys.vendor)):
        assert pair is not None
        assert _common_name(pair) == NAMES[name]
        assert _public(pair.key) == _public(derive_private_key(seed, NAMES[name], 2048))
        drawn = int.from_bytes(SeededRandom(seed, b"serial/" + NAMES[name].encode())(20), "big")
        assert pair.certificate.serial_number == (drawn >> 2) | (1 << 158)
        assert pair.certificate.not_valid_before_utc == GIVEN
        pair.certificate.verify_directly_issued_by(pair.certificate)
    assert keys.pcr_policy is not None
    assert _public(keys.pcr_policy) == _public(
        derive_private_key(seed, "cvm owner PCR policy", 2048))


def test_seeded_keys_do_not_depend_on_which_others_are_made(keys: OwnerKeys) -> None:
    every, _ = _seeded()
    some, asked = _seeded(vendor=False, pcr_policy=False, db=keys.db)
    assert asked == SEED_DRAWS
    assert some.db is keys.db and some.vendor is None and some.pcr_policy is None
    assert _public(some.pk.key) == _public(every.pk.key)
    assert some.pk.certificate == every.pk.certificate
    assert some.kek.certificate == every.kek.certificate
    other, _ = _seeded(b"8")
    assert _public(other.pk.key) != _public(every.pk.key)
    assert other.provisioning != every.provisioning


def test_unseeded_keys_draw_only_the_provisioning_key_and_start_where_asked() -> None:
    random = Recorder(b"7")
    later = datetime.datetime(2030, 6, 1, tzinfo=datetime.UTC)
    keys = OwnerKeys.generate(random, not_before=later)
    again = OwnerKeys.generate(Recorder(b"7"))
    assert random.asked == [PROVISIONING_KEY_SIZE]
    assert keys.provisioning == again.provisioning
    assert _public(keys.pk.key) != _public(again.pk.key)  # the system's keys
    assert keys.pk.certificate.not_valid_before_utc == later
    assert again.pk.certificate.not_valid_before_utc == START  # the usual start


@pytest.mark.parametrize(("fill", "serial"), [
    (b"\x00", 1 << 158), (b"\xff", (1 << 159) - 1),
    (b"\x04", (1 << 158) | int.from_bytes(b"\x01" * 20, "big"))])
def test_a_seeded_serial_is_positive_and_20_octets(fill: bytes, serial: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SeededRandom, "__call__", lambda self, size: fill * size)
    assert certificate_serial(b"seed", "x") == serial


def test_new_rsa_key_is_the_systems_without_a_seed() -> None:
    assert _public(new_rsa_key("x", None)) != _public(new_rsa_key("x", None))
    assert _public(new_rsa_key("x", b"s" * 32)) == _public(new_rsa_key("x", b"s" * 32))
    assert _public(new_rsa_key("x", b"s" * 32)) != _public(new_rsa_key("y", b"s" * 32))
    key = new_rsa_key("x", None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    pair = new_key_pair("x", None, None)
    assert pair.certificate.not_valid_before_utc == START
    assert pair.certificate.serial_number != new_key_pair("x", None, None).certificate \
        .serial_number
