"""A seeded build (``cvm image build --seed N``) is reproducible to the byte — the owner's keys,
their certificates, the ESP's time stamps and serial, the disk, the sealed state — a different
seed changes the keys and the disk, an unseeded build differs each time, and the seeded keys
are real RSA-2048 keys whose Secure Boot chain boots."""

from __future__ import annotations

import datetime
import random
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cvm.disk.esp import run_tool
from cvm.guest.run import boot_bundle
from cvm.image.build_epoch import SEEDED_EPOCH
from cvm.image.bundle import BuiltImage, ImageSpec, build_image
from cvm.image.keys import KeyPair, OwnerKeys

from .conftest import esp_stamps, folder_files

UKI = {"chain": "uki", "seal": "both", "modes": ("plain", "sev-snp"), "kdf_cost": "fast"}
GRUB = {"chain": "shim-grub", "modes": ("sev-snp",), "kdf_cost": "fast"}


def _public(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _pairs(keys: OwnerKeys) -> dict[str, KeyPair]:
    found = {"pk": keys.pk, "kek": keys.kek, "db": keys.db}
    if keys.vendor is not None:
        found["vendor"] = keys.vendor
    return found


def _publics(keys: OwnerKeys) -> list[bytes]:
    found = [_public(pair.key) for pair in _pairs(keys).values()]
    return found + ([_public(keys.pcr_policy)] if keys.pcr_policy is not None else [])


def _esp(built: BuiltImage) -> str:
    return f"{built.out / 'disk.img'}@@{built.plan.layout.esp_offset}"


@pytest.mark.parametrize("spec", [UKI, GRUB], ids=["uki", "shim-grub"])
def test_the_same_seed_builds_every_file_byte_for_byte(tmp_path: Path,
                                                      spec: dict[str, object]) -> None:
    first = build_image(tmp_path / "a", ImageSpec(seed=7, **spec))  # type: ignore[arg-type]
    again = build_image(tmp_path / "b", ImageSpec(seed=7, **spec))  # type: ignore[arg-type]
    files, files_again = folder_files(first.out), folder_files(again.out)
    assert {"disk.img", "image.json", "owner/pk.key", "owner/db.key", "owner/kek.crt",
            "owner/recovery.key", "vtpm-state.bin"} <= set(files)
    assert set(files) == set(files_again)
    for name, data in files.items():
        assert files_again[name] == data, name
    assert first.manifest["seeded"] is True


def test_a_seeded_esp_has_the_seeded_time_and_serial(tmp_path: Path) -> None:
    built = build_image(tmp_path / "a", ImageSpec(seed=7, **UKI))  # type: ignore[arg-type]
    # 2025-01-01 00:00 UTC on every entry, whatever the clock or the time zone says
    assert esp_stamps(_esp(built)) == {"2025-01-01 0:00"}
    info = run_tool("minfo", "-i", _esp(built), "::")
    serial = re.search(r"serial number: ([0-9A-F]{8})", info)
    assert serial is not None and int(serial.group(1), 16) == built.plan.esp_serial
    epoch = int(datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC).timestamp())
    dated = build_image(tmp_path / "b", ImageSpec(seed=7, source_date_epoch=epoch,
                                                  **UKI))  # type: ignore[arg-type]
    assert esp_stamps(_esp(dated)) == {"2023-11-14 22:13"}
    assert dated.keys.pk.certificate.not_valid_before_utc == datetime.datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)


def test_source_date_epoch_alone_stamps_an_unseeded_build(tmp_path: Path) -> None:
    epoch = 1700000000
    built = build_image(tmp_path / "a", ImageSpec(source_date_epoch=epoch,
                                                  **UKI))  # type: ignore[arg-type]
    assert esp_stamps(_esp(built)) == {"2023-11-14 22:13"}
    for pair in _pairs(built.keys).values():
        assert pair.certificate.not_valid_before_utc.timestamp() == epoch
    assert built.manifest["seeded"] is False


def test_another_seed_changes_the_keys_and_the_disk(tmp_path: Path) -> None:
    seven = build_image(tmp_path / "a", ImageSpec(seed=7, **GRUB))  # type: ignore[arg-type]
    eight = build_image(tmp_path / "b", ImageSpec(seed=8, **GRUB))  # type: ignore[arg-type]
    assert not set(_publics(seven.keys)) & set(_publics(eight.keys))
    for name in ("pk", "kek", "db", "vendor"):
        assert (seven.out / "owner" / f"{name}.key").read_bytes() != \
            (eight.out / "owner" / f"{name}.key").read_bytes(), name
    assert seven.keys.provisioning != eight.keys.provisioning
    assert seven.plan.luks_uuid != eight.plan.luks_uuid
    assert seven.plan.esp_serial != eight.plan.esp_serial
    assert (seven.out / "disk.img").read_bytes() != (eight.out / "disk.img").read_bytes()
    assert (seven.out / "owner/recovery.key").read_bytes() != \
        (eight.out / "owner/recovery.key").read_bytes()


def test_an_unseeded_build_differs_each_time(tmp_path: Path) -> None:
    first = build_image(tmp_path / "a", ImageSpec(**GRUB))  # type: ignore[arg-type]
    again = build_image(tmp_path / "b", ImageSpec(**GRUB))  # type: ignore[arg-type]
    assert not set(_publics(first.keys)) & set(_publics(again.keys))
    serials = {pair.certificate.serial_number for pair in
               [*_pairs(first.keys).values(), *_pairs(again.keys).values()]}
    assert len(serials) == 8
    assert first.keys.provisioning != again.keys.provisioning
    assert first.plan != again.plan
    assert (first.out / "disk.img").read_bytes() != (again.out / "disk.img").read_bytes()
    assert first.manifest["seeded"] is False
    # no SOURCE_DATE_EPOCH: the ESP has the clock's date, the certificates their usual start
    assert esp_stamps(_esp(first)) != {"2025-01-01 0:00"}
    assert first.keys.pk.certificate.not_valid_before_utc == datetime.datetime(
        2025, 1, 1, tzinfo=datetime.UTC)


def test_seeded_keys_are_rsa_2048_with_certificates_that_verify(tmp_path: Path) -> None:
    built = build_image(tmp_path / "a", ImageSpec(seed=7, **GRUB))  # type: ignore[arg-type]
    keys = built.keys
    start = datetime.datetime.fromtimestamp(SEEDED_EPOCH, datetime.UTC)
    assert start == datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    for name, pair in _pairs(keys).items():
        key = pair.key
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048, name
        numbers = key.private_numbers()
        assert numbers.public_numbers.e == 65537
        assert numbers.p * numbers.q == numbers.public_numbers.n
        assert pair.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
            _public(key)
        pair.certificate.verify_directly_issued_by(pair.certificate)  # self-signed, verifies
        assert pair.certificate.not_valid_before_utc == start
        assert pair.certificate.not_valid_after_utc == start + datetime.timedelta(days=3650)
        assert 1 << 158 <= pair.certificate.serial_number < 1 << 159
    assert len({pair.certificate.serial_number for pair in _pairs(keys).values()}) == 4
    loaded = OwnerKeys.load(built.out / "owner")
    assert _publics(loaded) == _publics(keys)


@pytest.mark.parametrize("spec", [UKI, GRUB], ids=["uki", "shim-grub"])
def test_a_seeded_image_boots_through_its_secure_boot_chain(
        tmp_path: Path, spec: dict[str, object]) -> None:
    built = build_image(tmp_path / "a", ImageSpec(seed=7, **spec))  # type: ignore[arg-type]
    trace = boot_bundle(built.out, "sev-snp", random=random.Random(3).randbytes)
    assert trace.refused is None and trace.launch_accepted is True
    assert trace.pcrs_match and trace.unsealed and trace.workload_ok and trace.ok


def test_a_given_db_key_is_kept_and_the_other_keys_follow_the_seed(tmp_path: Path) -> None:
    plain = build_image(tmp_path / "a", ImageSpec(seed=7, **GRUB))  # type: ignore[arg-type]
    db = KeyPair.generate("someone's db")
    kept = build_image(tmp_path / "b", ImageSpec(seed=7, **GRUB),  # type: ignore[arg-type]
                       db=db)
    assert kept.keys.db is db
    assert _public(kept.keys.pk.key) == _public(plain.keys.pk.key)
    assert kept.keys.vendor is not None and plain.keys.vendor is not None
    assert _public(kept.keys.vendor.key) == _public(plain.keys.vendor.key)
