"""A seeded ``--target qemu`` build (``cvm image build --target qemu --seed N``) is
reproducible to the byte — the owner's keys, certificates and signatures, the ESP's time stamps
and serial, the LUKS2 header and the seal — from the same Debian packages and SRK; another seed
changes every secret, and an unseeded build differs each time. No QEMU boot here: the real boot
of a seeded image is tests/interop/test_qemu_boot.py's sealed root."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from cvm.cli.image import QEMU_SEEDED_WARNING
from cvm.cli.main import execute
from cvm.disk.esp import run_tool
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.disk.volume import Luks2Volume
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.tpm2b import parse_tpm2b
from cvm.image.debian_packages import BootInputs
from cvm.image.qemu_target import (
    DISK_MIB,
    ESP_FIRST_LBA,
    MANIFEST,
    QemuTargetSpec,
    build_qemu_image,
)
from cvm.image.vm_profile import PROFILES

from .conftest import esp_stamps, folder_files

pytestmark = [pytest.mark.interop, pytest.mark.slow]

UKI_FILES = {"OVMF_VARS.fd", "disk.img", "owner/README", "owner/db.crt", "owner/db.key",
             "owner/kek.crt", "owner/kek.key", "owner/pk.crt", "owner/pk.key",
             "owner/provisioning.key", "owner/root.key", "predicted-pcrs.json", MANIFEST}
SHIM_GRUB_FILES = {"OVMF_VARS.fd", "disk.img", "owner/root.key", "predicted-pcrs.json", MANIFEST}
SECRETS = {"owner/db.key", "owner/kek.key", "owner/pk.key", "owner/provisioning.key",
           "owner/root.key"}
Build = Callable[[str, str, int | None], Path]


def _esp(image: Path) -> str:
    return f"{image / 'disk.img'}@@{ESP_FIRST_LBA * LBA_SIZE}"


def _esp_serial(image: Path) -> str:
    found = re.search(r"serial number: ([0-9A-F]{8})",
                      run_tool("minfo", "-i", _esp(image), "::"))
    assert found is not None
    return found.group(1)


def _luks_uuid(image: Path) -> str:
    with FileStorage(image / "disk.img", read_only=True) as storage:
        window = StorageWindow(storage, DISK_MIB << 20,
                               storage.size() - (DISK_MIB << 20) - 2048 * LBA_SIZE)
        return Luks2Volume.open(window).uuid


def _certificate(image: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((image / "owner" / f"{name}.crt").read_bytes())


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory, boot_inputs: BootInputs,
          srk: Path) -> Build:
    """``build(name, chain, seed)``: a ``--target qemu`` image sealed to the tests' SRK, built
    once per name."""
    root = tmp_path_factory.mktemp("qemu-seeded")
    key = Public.from_bytes(parse_tpm2b(srk.read_bytes(), "srk"))
    made: dict[str, Path] = {}

    def make(name: str, chain: str, seed: int | None) -> Path:
        if name not in made:
            made[name] = root / name
            build_qemu_image(made[name], QemuTargetSpec(chain, PROFILES["q35"], key, seed=seed),
                             boot_inputs)
        return made[name]

    return make


@pytest.mark.parametrize(("chain", "names"), [("uki", UKI_FILES),
                                              ("shim-grub", SHIM_GRUB_FILES)])
def test_the_same_seed_builds_every_file_byte_for_byte(build: Build, chain: str,
                                                      names: set[str]) -> None:
    first, again = build(f"{chain}-7", chain, 7), build(f"{chain}-7-again", chain, 7)
    files, files_again = folder_files(first), folder_files(again)
    assert set(files) == set(files_again) == names
    for name, data in files.items():
        assert files_again[name] == data, name
    manifest = json.loads(files[MANIFEST])
    assert manifest["seeded"] is True and manifest["sealed"] is not None
    # 2025-01-01 00:00 UTC on every entry, whatever the clock or the time zone says
    assert esp_stamps(_esp(first)) == {"2025-01-01 0:00"}


def test_a_seeded_uki_is_signed_by_keys_from_the_seed(build: Build, tmp_path: Path) -> None:
    image = build("uki-7", "uki", 7)
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    serials = set()
    for name in ("pk", "kek", "db"):
        certificate = _certificate(image, name)
        assert certificate.not_valid_before_utc == start, name
        assert 1 << 158 <= certificate.serial_number < 1 << 159, name
        serials.add(certificate.serial_number)
    assert len(serials) == 3
    uki = tmp_path / "uki.efi"
    run_tool("mcopy", "-i", _esp(image), "::/EFI/BOOT/BOOTX64.EFI", str(uki))
    assert execute(["sb", "verify", str(uki), "--varstore", str(image / "OVMF_VARS.fd")]) == 0


def test_another_seed_changes_every_secret_and_the_disk(build: Build) -> None:
    seven, eight = build("uki-7", "uki", 7), build("uki-8", "uki", 8)
    files, other = folder_files(seven), folder_files(eight)
    assert set(files) == set(other)
    assert {name for name in files if files[name] != other[name]} == UKI_FILES - {
        "owner/README", MANIFEST}
    assert SECRETS <= UKI_FILES
    assert _luks_uuid(seven) != _luks_uuid(eight)
    assert _esp_serial(seven) != _esp_serial(eight)
    assert _certificate(seven, "pk").serial_number != _certificate(eight, "pk").serial_number


def test_an_unseeded_build_differs_each_time(build: Build) -> None:
    first, again = build("grub-a", "shim-grub", None), build("grub-b", "shim-grub", None)
    files, files_again = folder_files(first), folder_files(again)
    assert {name for name in files if files[name] != files_again[name]} == {
        "disk.img", "owner/root.key"}
    assert _luks_uuid(first) != _luks_uuid(again)
    assert _esp_serial(first) != _esp_serial(again)
    assert json.loads(files[MANIFEST])["seeded"] is False
    assert esp_stamps(_esp(first)) != {"2025-01-01 0:00"}  # the clock's time
    seeded = build("shim-grub-7", "shim-grub", 7)
    assert (seeded / "owner/root.key").read_bytes() != files["owner/root.key"]


def test_the_cli_builds_a_seeded_image_warns_and_takes_source_date_epoch(
        tmp_path: Path, srk: Path, debian_boot_binaries: dict[str, Path],
        boot_inputs: BootInputs, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = debian_boot_binaries["kernel"].parents[2]  # the tests' Debian package cache
    out = tmp_path / "img"
    args = ["image", "build", str(out), "--target", "qemu", "--chain", "uki", "--seed", "5",
            "--srk-public", str(srk), "--cache", str(cache), "--json"]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000x")
    assert execute(args) == 64
    assert "SOURCE_DATE_EPOCH" in capsys.readouterr().err and not out.exists()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert execute(args) == 0
    captured = capsys.readouterr()
    assert captured.err == QEMU_SEEDED_WARNING + "\n"
    assert json.loads(captured.out)["manifest"]["seeded"] is True
    assert esp_stamps(_esp(out)) == {"2023-11-14 22:13"}
    assert _certificate(out, "pk").not_valid_before_utc == datetime.datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)
    library = tmp_path / "library"  # the same seed and time through the library: the same bytes
    key = Public.from_bytes(parse_tpm2b(srk.read_bytes(), "srk"))
    build_qemu_image(library, QemuTargetSpec("uki", PROFILES["q35"], key, seed=5,
                                             source_date_epoch=1700000000), boot_inputs)
    assert folder_files(library) == folder_files(out)
