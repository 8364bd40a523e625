"""``cvm image build --target qemu``: the initramfs, the disk, the prediction and the seal.

Built from Debian's real packages (the tests' download cache) and sealed to a real swtpm's SRK
(``cvm vm tpm-setup``); the real boot of such an image is in tests/interop/test_qemu_boot.py.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.disk.volume import Luks2Volume
from cvm.errors import UsageError
from cvm.formats.cpio import CpioArchive
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.tpm2b import parse_tpm2b
from cvm.image.debian_packages import BootInputs
from cvm.image.qemu_initramfs import MODULES, sealed_initramfs
from cvm.image.qemu_target import (
    DEFAULT_WORKLOAD,
    DISK_MIB,
    MANIFEST,
    QemuTargetSpec,
    build_qemu_image,
    seal_token,
)
from cvm.image.vm_profile import PROFILES
from cvm.vtpm.policy import PolicyDigest

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_the_initramfs_holds_the_tools_their_libraries_and_the_modules(
    boot_inputs: BootInputs,
) -> None:
    archive = CpioArchive.parse(gzip.decompress(
        sealed_initramfs(boot_inputs.busybox, boot_inputs.modules, (4, 7, 8, 9))))
    names = {entry.name for entry in archive.entries}
    init = archive.get("init")
    assert init is not None and init.mode == 0o100755
    assert b"sha256:4,7,8,9" in init.data
    for name in ("bin/busybox", "usr/bin/tpm2", "usr/sbin/cryptsetup",
                 "usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0"):
        assert name in names
    assert any(n.endswith("ld-linux-x86-64.so.2") for n in names)
    assert any("libcryptsetup.so" in n for n in names)
    order = archive.get("modules/order")
    assert order is not None
    loaded = order.data.decode().split()
    assert set(MODULES) <= set(loaded)
    assert loaded.index("dm-mod") < loaded.index("dm-crypt")
    assert loaded.index("virtio_ring") < loaded.index("virtio_blk")
    for module in loaded:
        assert f"modules/{module}.ko" in names
    for folder in ("usr", "usr/bin", "proc", "dev", "modules"):
        entry = archive.get(folder)
        assert entry is not None and entry.mode == 0o040755


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, boot_inputs: BootInputs,
          srk: Path) -> Path:
    out = tmp_path_factory.mktemp("qemu-image") / "img"
    key = Public.from_bytes(parse_tpm2b(srk.read_bytes(), "srk"))
    build_qemu_image(out, QemuTargetSpec("shim-grub", PROFILES["q35"], key), boot_inputs)
    return out


def _root(out: Path) -> tuple[Luks2Volume, FileStorage]:
    storage = FileStorage(out / "disk.img", read_only=True)
    window = StorageWindow(storage, DISK_MIB << 20, storage.size() - (DISK_MIB << 20) - 2048
                           * LBA_SIZE)
    return Luks2Volume.open(window), storage


def test_the_prediction_is_what_cvm_pcr_predict_says_of_the_disk(
    built: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert execute(["pcr", "predict", str(built / "disk.img"), "--varstore",
                    str(built / "OVMF_VARS.fd"), "--profile", "q35", "--json"]) == 0
    by_cli = json.loads(capsys.readouterr().out)
    written = json.loads((built / "predicted-pcrs.json").read_text())
    for bank in ("sha1", "sha256"):
        assert written[bank] == by_cli[bank]
    assert set(written["unknown"]) == set(by_cli["unknown"]) == {"0", "10"}


def test_the_root_opens_with_the_owners_key_and_holds_the_workload(built: Path) -> None:
    volume, storage = _root(built)
    with storage:
        key = volume.unlock((built / "owner" / "root.key").read_bytes())
        data = volume.data_device(key).read(0, len(DEFAULT_WORKLOAD))
    assert bytes(data) == DEFAULT_WORKLOAD
    assert (built / "owner" / "root.key").stat().st_mode & 0o077 == 0


def test_the_token_is_sealed_to_the_predicted_pcrs(built: Path) -> None:
    import base64

    volume, storage = _root(built)
    with storage:
        token = volume.tokens[0]
    manifest = json.loads((built / MANIFEST).read_text())
    assert manifest["sealed"] == {"token": 0, "bank": "sha256", "pcrs": [4, 7, 8, 9]}
    assert token["type"] == "cvm-tpm2-import" and token["cvm-pcrs"] == [4, 7, 8, 9]
    public = Public.from_bytes(parse_tpm2b(base64.b64decode(token["cvm-public"]), "public"))
    predicted = json.loads((built / "predicted-pcrs.json").read_text())["sha256"]
    policy = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", [4, 7, 8, 9]),
                                      [bytes.fromhex(predicted[str(p)]) for p in (4, 7, 8, 9)])
    assert public.auth_policy == policy.value


def test_a_pcr_cvm_cannot_predict_is_never_sealed_to(built: Path, srk: Path) -> None:
    predicted = json.loads((built / "predicted-pcrs.json").read_text())
    key = Public.from_bytes(parse_tpm2b(srk.read_bytes(), "srk"))
    with pytest.raises(UsageError, match=r"PCR \[0\]"):
        seal_token(key, bytes(32), (0, 4), predicted, os.urandom)


@pytest.mark.parametrize(("args", "code"), [
    (["--target", "cloud"], 64),
    (["--target", "qemu", "--chain", "grub"], 64),
    (["--target", "qemu", "--profile", "pc"], 64),
    (["--target", "qemu", "--srk-public", "/nonexistent/srk.pub"], 74),  # the OS's error
])
def test_bad_arguments_are_refused(tmp_path: Path, args: list[str], code: int) -> None:
    assert execute(["image", "build", str(tmp_path / "out"), *args]) == code


def test_an_srk_that_is_not_a_tpm2b_public_is_refused(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "srk.pub").write_bytes(b"\x00\x04abcd")
    assert execute(["image", "build", str(tmp_path / "out"), "--target", "qemu",
                    "--srk-public", str(tmp_path / "srk.pub")]) == 65
    assert "srk.pub" in capsys.readouterr().err


def test_an_existing_image_is_not_overwritten(built: Path) -> None:
    assert execute(["image", "build", str(built), "--target", "qemu"]) == 64


@pytest.fixture(scope="session")
def built_uki(tmp_path_factory: pytest.TempPathFactory, boot_inputs: BootInputs,
              srk: Path) -> Path:
    out = tmp_path_factory.mktemp("qemu-uki") / "img"
    key = Public.from_bytes(parse_tpm2b(srk.read_bytes(), "srk"))
    build_qemu_image(out, QemuTargetSpec("uki", PROFILES["q35-nodefaults"], key), boot_inputs)
    return out


def test_the_owners_uki_is_signed_for_the_owners_varstore_only(
    built_uki: Path, require_tool: Callable[[str], str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import subprocess

    from cvm.image.qemu_target import ESP_FIRST_LBA, MS_VARS

    manifest = json.loads((built_uki / MANIFEST).read_text())
    assert manifest["esp"] == ["/EFI/BOOT/BOOTX64.EFI"] and manifest["sealed"]["pcrs"] == [4, 7, 11]
    uki = tmp_path / "uki.efi"
    subprocess.run([require_tool("mcopy"), "-i",
                    f"{built_uki / 'disk.img'}@@{ESP_FIRST_LBA * LBA_SIZE}",
                    "::/EFI/BOOT/BOOTX64.EFI", str(uki)], check=True, capture_output=True)
    assert execute(["sb", "verify", str(uki), "--varstore", str(built_uki / "OVMF_VARS.fd")]) == 0
    assert execute(["sb", "verify", str(uki), "--varstore", str(MS_VARS)]) == 1
    assert (built_uki / "owner" / "db.key").stat().st_mode & 0o077 == 0
    capsys.readouterr()
    assert execute(["pcr", "predict", str(built_uki / "disk.img"), "--varstore",
                    str(built_uki / "OVMF_VARS.fd"), "--profile", "q35-nodefaults",
                    "--json"]) == 0
    by_cli = json.loads(capsys.readouterr().out)
    written = json.loads((built_uki / "predicted-pcrs.json").read_text())
    assert written["sha256"] == by_cli["sha256"] and written["sha256"]["11"] != "00" * 32
