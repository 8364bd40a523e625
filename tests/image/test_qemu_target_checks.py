"""``cvm image build --target qemu`` (`cvm.image.qemu_target`) built from synthetic boot
binaries, without Debian's packages or a boot: the spec's limits, the ESP of each chain, the GPT
disk, the prediction against cvm's emulated boot, the token sealed to an SRK (imported back as
the TPM would) and the files of the image."""

from __future__ import annotations

import base64
import datetime
import errno
import json
import os
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.disk.esp import write_esp
from cvm.disk.storage import FileStorage, StorageWindow
from cvm.disk.volume import Luks2Volume
from cvm.errors import UsageError
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.luks2.metadata import Pbkdf2Kdf
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.section_append import append_sections
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.tpm2b import parse_tpm2b
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.firmware import DEFAULT_LOADER, GptDisk
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image import qemu_target
from cvm.image.build_epoch import SEEDED_EPOCH
from cvm.image.debian_packages import BootInputs
from cvm.image.disk_layout import read_esp_file
from cvm.image.keys import OwnerKeys
from cvm.image.offline_seal import ImportableSeal
from cvm.image.pcr_report import FIRMWARE_LOG_SETTLES
from cvm.image.qemu_target import (
    CMDLINE,
    DEFAULT_WORKLOAD,
    DISK_GUID,
    ESP_GUID,
    GRUB_CFG,
    MANIFEST,
    ROOT_GUID,
    QemuTargetSpec,
    build_qemu_image,
    esp_tree,
    predict_disk,
    seal_token,
    write_disk,
)
from cvm.image.vm_profile import PROFILES
from cvm.vtpm.policy import PolicyDigest

from .conftest import esp_stamps, folder_files
from .test_offline_seal_checks import _import, _srk
from .test_qemu_initramfs import _kernel

MIB = 1 << 20
EPOCH = 1_700_000_000  # 2023-11-14 22:13:20 UTC
STUB = build_pe([SectionSpec(".text", b"\xc3", CODE),
                 *(SectionSpec(f".pad{i}", b"p") for i in range(4))])  # room for 4 headers
KERNEL = build_pe([SectionSpec(".text", b"\x90\xc3", CODE)])
# the owner's Secure Boot keys and the provisioning key, no shim vendor or PCR-policy key
OWNER_FILES = ["README", "db.crt", "db.key", "kek.crt", "kek.key", "pk.crt", "pk.key",
               "provisioning.key", "root.key"]


def _grub(prefix: bytes) -> bytes:
    """A GRUB core image whose prefix is ``prefix`` (what cvm's boot model reads)."""
    modules = b""
    for kind, text in ((2, b""), (3, prefix)):
        body = text + b"\0" + bytes(-(len(text) + 1) % 8)
        modules += struct.pack("<II", kind, 8 + len(body)) + body
    mods = struct.pack("<IIQQ", 0x676D696D, 0, 24, 24 + len(modules)) + modules
    return build_pe([SectionSpec(".text", b"\xc3", CODE), SectionSpec("mods", mods)])


def _inputs(stub: bytes | None = STUB) -> BootInputs:
    return BootInputs(_grub(b"/EFI/debian"), b"grub", KERNEL, _kernel(),  # type: ignore[arg-type]
                      b"busybox", stub)


class Signer:
    """Stands for the owner's keys in :func:`esp_tree`: marks what it signs."""

    def sign_db(self, image: bytes) -> bytes:
        return b"signed by db: " + image


# --- the spec and the ESP ----------------------------------------------------------------------

def test_the_spec_takes_a_known_chain_and_a_workload_of_1_byte_to_1_mib() -> None:
    for chain in ("shim-grub", "uki"):
        QemuTargetSpec(chain, PROFILES["q35"]).check()
    QemuTargetSpec("uki", PROFILES["q35"], workload=b"x").check()
    QemuTargetSpec("uki", PROFILES["q35"], workload=bytes(MIB)).check()
    with pytest.raises(UsageError) as caught:
        QemuTargetSpec("grub", PROFILES["q35"]).check()
    assert str(caught.value) == "--chain 'grub': the qemu target builds shim-grub or uki"
    for workload in (b"", bytes(MIB + 1)):
        with pytest.raises(UsageError) as caught:
            QemuTargetSpec("uki", PROFILES["q35"], workload=workload).check()
        assert str(caught.value) == "the workload must be 1 byte to 1 MiB"


def test_the_shim_grub_esp_is_debians_layout() -> None:
    inputs = _inputs()
    assert esp_tree("shim-grub", inputs, b"initrd", None) == {
        "EFI/BOOT/BOOTX64.EFI": inputs.shim, "EFI/BOOT/grubx64.efi": b"grub",
        "EFI/debian/grub.cfg": GRUB_CFG.encode(), "vmlinuz": KERNEL, "initrd.img": b"initrd"}
    assert GRUB_CFG == ("set timeout=0\nlinux /vmlinuz console=ttyS0 panic=-1 no_timer_check\n"
                        "initrd /initrd.img\nboot\n")


def test_the_uki_esp_is_the_stub_with_its_sections_signed_by_the_owner() -> None:
    files = esp_tree("uki", _inputs(), b"initrd", Signer())  # type: ignore[arg-type]
    uki = append_sections(STUB, [(".osrel", b"ID=cvm\n"), (".cmdline", CMDLINE.encode()),
                                 (".linux", KERNEL), (".initrd", b"initrd")])
    assert files == {"EFI/BOOT/BOOTX64.EFI": b"signed by db: " + uki}
    for inputs, keys in ((_inputs(None), Signer()), (_inputs(), None)):
        with pytest.raises(UsageError) as caught:
            esp_tree("uki", inputs, b"initrd", keys)  # type: ignore[arg-type]
        assert str(caught.value) == "the uki chain needs systemd's EFI stub and the owner's keys"


# --- the disk ----------------------------------------------------------------------------------

def _tree(folder: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return folder


def test_the_disk_is_the_esp_at_1_mib_and_the_root_at_64_mib(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "esp", {"EFI/BOOT/BOOTX64.EFI": b"loader", "a/b": b"c"})
    root = b"\xa5" * (MIB + 1)  # 2 MiB of partition
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xff" * (80 * MIB))  # an older, larger file
    write_disk(disk, tree, root)
    data = disk.read_bytes()
    assert len(data) == (64 + 2 + 1) * MIB
    assert data[64 * MIB : 64 * MIB + len(root)] == root
    assert data[64 * MIB + len(root) : 66 * MIB] == bytes(MIB - 1)
    table = PartitionTable.parse(lambda offset, size: data[offset : offset + size], len(data))
    assert table.disk_guid == DISK_GUID and table.warnings == ()
    esp, part = (e for e in table.entries if e.used)
    assert (esp.partition_type_guid, esp.unique_partition_guid, esp.starting_lba,
            esp.ending_lba, esp.name) == (partition_types.ESP, ESP_GUID, 2048,
                                          2048 + 60 * 2048 - 1, "EFI System Partition")
    assert (part.partition_type_guid, part.unique_partition_guid, part.starting_lba,
            part.ending_lba, part.name) == (partition_types.LINUX_DATA, ROOT_GUID, 64 * 2048,
                                            66 * 2048 - 1, "root")
    assert read_esp_file(disk, MIB, "EFI/BOOT/BOOTX64.EFI") == b"loader"
    assert read_esp_file(disk, MIB, "a/b") == b"c"
    assert data[MIB + 60 * MIB : 64 * MIB].count(0xFF) == 0


# --- the prediction ----------------------------------------------------------------------------

def _emulated(disk: Path, files: dict[str, bytes], varstore: Varstore, profile: str
              ) -> SoftwarePcrBank:
    chosen = PROFILES[profile]
    pcrs = SoftwarePcrBank(("sha1", "sha256"))
    esp = EspFiles({"/" + path: data for path, data in files.items()})
    gpt = GptDisk.from_disk(disk.read_bytes()[:MIB], 1)
    BootChain(esp, chosen.with_boot_options(varstore), gpt, chosen.settings(),
              DEFAULT_LOADER).run(pcrs)
    return pcrs


def test_the_prediction_is_the_emulated_boot_of_the_disk(tmp_path: Path) -> None:
    files = esp_tree("shim-grub", _inputs(), b"initrd", None)
    disk = tmp_path / "disk.img"
    write_disk(disk, _tree(tmp_path / "esp", files), bytes(MIB))
    varstore = Varstore.empty_4m()
    for profile in ("q35", "q35-net"):
        document = predict_disk(disk, files, varstore, profile=PROFILES[profile])
        pcrs = _emulated(disk, files, varstore, profile)
        unknown = {"0", "10"} | ({"2"} if profile == "q35-net" else set())
        assert set(document) == {"sha1", "sha256", "profile", "unknown"}
        assert document["profile"] == profile
        assert set(document["unknown"]) == unknown
        assert document["unknown"]["10"] == {
            "reason": "PCR 10 is extended by the running kernel (IMA), after the boot chain",
            "settle": "nothing before the boot"}
        assert document["unknown"]["0"]["settle"] == FIRMWARE_LOG_SETTLES
        for bank in ("sha1", "sha256"):
            assert document[bank] == {str(p): None if str(p) in unknown else
                                      pcrs.read(p, bank).hex() for p in range(16)}


# --- the seal ----------------------------------------------------------------------------------

def _predicted(values: dict[int, bytes | None]) -> dict[str, Any]:
    return {"sha256": {str(p): None if v is None else v.hex() for p, v in values.items()}}


def _unseal(token: dict[str, Any], scalar: bytes, srk: Public) -> bytes:
    def field(name: str) -> bytes:
        return parse_tpm2b(base64.b64decode(token[name]), name)

    seal = ImportableSeal(Public.from_bytes(field("cvm-public")), field("cvm-duplicate"),
                          field("cvm-seed"))
    sensitive = _import("p256", scalar, srk, seal)
    return sensitive.sensitive


def test_the_token_seals_the_key_under_the_predicted_pcrs() -> None:
    scalar, srk = _srk()
    values = {4: b"\x04" * 32, 7: b"\x07" * 32, 11: b"\x0b" * 32, 0: None}
    token = seal_token(srk, b"K" * 32, (4, 7, 11), _predicted(values), os.urandom)
    assert set(token) == {"type", "keyslots", "cvm-pcr-bank", "cvm-pcrs", "cvm-public",
                          "cvm-duplicate", "cvm-seed"}
    assert (token["type"], token["keyslots"], token["cvm-pcr-bank"], token["cvm-pcrs"]) == (
        "cvm-tpm2-import", ["0"], "sha256", [4, 7, 11])
    public = Public.from_bytes(parse_tpm2b(base64.b64decode(token["cvm-public"]), "public"))
    policy = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", [4, 7, 11]),
                                      [b"\x04" * 32, b"\x07" * 32, b"\x0b" * 32])
    assert public.auth_policy == policy.value
    assert _unseal(token, scalar, srk) == b"K" * 32


def test_a_pcr_cvm_cannot_predict_is_never_sealed_to() -> None:
    _, srk = _srk()
    for values in ({4: b"\x04" * 32, 0: None}, {4: b"\x04" * 32}):
        with pytest.raises(UsageError) as caught:
            seal_token(srk, bytes(32), (0, 4), _predicted(values), os.urandom)
        assert str(caught.value) == ("cannot seal to PCR [0]: cvm cannot predict them for this "
                                     "image")


# --- the image ---------------------------------------------------------------------------------

@pytest.fixture
def initramfs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, object, tuple[int, ...]]]:
    """The initramfs replaced by a marker naming its inputs (it has its own tests); the calls."""
    calls: list[tuple[bytes, object, tuple[int, ...]]] = []

    def sealed(busybox: bytes, kernel: object, pcrs: tuple[int, ...]) -> bytes:
        calls.append((busybox, kernel, pcrs))
        return b"initramfs for PCRs " + repr(pcrs).encode()

    monkeypatch.setattr(qemu_target, "sealed_initramfs", sealed)
    return calls


def _root(out: Path) -> tuple[Luks2Volume, FileStorage]:
    storage = FileStorage(out / "disk.img", read_only=True)
    window = StorageWindow(storage, 64 * MIB, MIB + 16 * MIB)
    return Luks2Volume.open(window), storage


def _check_image(out: Path, manifest: dict[str, Any], varstore: Varstore,
                 files: dict[str, bytes], workload: bytes) -> bytes:
    """What every image holds; returns the root's key."""
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert (out / MANIFEST).read_text() == json.dumps(manifest, indent=1) + "\n"
    assert (out / "OVMF_VARS.fd").read_bytes() == varstore.to_bytes()
    key = (out / "owner" / "root.key").read_bytes()
    assert len(key) == 32 and (out / "owner" / "root.key").stat().st_mode & 0o777 == 0o600
    predicted = predict_disk(out / "disk.img", files, varstore, PROFILES[manifest["profile"]])
    assert (out / "predicted-pcrs.json").read_text() == json.dumps(predicted, indent=1) + "\n"
    for path, data in files.items():
        assert read_esp_file(out / "disk.img", MIB, path) == data
    assert (out / "disk.img").stat().st_size == (64 + 16 + 1 + 1) * MIB  # root: 16 + 1 MiB
    volume, storage = _root(out)
    with storage:
        device = volume.data_device(volume.unlock(key))
        plain = device.read(0, MIB)
        assert device.size() == MIB
        kdf = volume.metadata.keyslots[0].kdf
    assert isinstance(kdf, Pbkdf2Kdf) and kdf.iterations == 1000  # a random key: no slow KDF
    assert bytes(plain) == workload + bytes(MIB - len(workload))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["owner", "OVMF_VARS.fd", "disk.img", "predicted-pcrs.json", MANIFEST])
    return key


def test_a_uki_image_sealed_to_an_srk(
    tmp_path: Path, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    scalar, srk = _srk()
    out = tmp_path / "img"
    workload = b"the owner's workload\n"
    spec = QemuTargetSpec("uki", PROFILES["q35-nodefaults"], srk, workload)
    inputs = _inputs()
    manifest = build_qemu_image(out, spec, inputs)
    assert initramfs == [(b"busybox", inputs.modules, (4, 7, 11))]
    keys = OwnerKeys.load(out / "owner")
    uki = read_esp_file(out / "disk.img", MIB, "EFI/BOOT/BOOTX64.EFI")
    assert uki == keys.sign_db(append_sections(STUB, [
        (".osrel", b"ID=cvm\n"), (".cmdline", CMDLINE.encode()), (".linux", KERNEL),
        (".initrd", b"initramfs for PCRs (4, 7, 11)")]))
    assert manifest == {
        "schema": "cvm-qemu-image/1", "seeded": False, "chain": "uki",
        "profile": "q35-nodefaults",
        "qemu_args": PROFILES["q35-nodefaults"].qemu_args, "disk": "disk.img",
        "varstore": "OVMF_VARS.fd", "firmware": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "predicted": "predicted-pcrs.json", "esp": ["/EFI/BOOT/BOOTX64.EFI"],
        "sealed": {"token": 0, "bank": "sha256", "pcrs": [4, 7, 11]}}
    key = _check_image(out, manifest, keys.varstore(), {"EFI/BOOT/BOOTX64.EFI": uki}, workload)
    volume, storage = _root(out)
    with storage:
        token = volume.tokens[0]
    assert token["cvm-pcrs"] == [4, 7, 11]
    predicted = json.loads((out / "predicted-pcrs.json").read_text())["sha256"]
    public = Public.from_bytes(parse_tpm2b(base64.b64decode(token["cvm-public"]), "public"))
    assert public.auth_policy == PolicyDigest.start().pcr(
        PcrSelectionList.of("sha256", [4, 7, 11]),
        [bytes.fromhex(predicted[str(p)]) for p in (4, 7, 11)]).value
    assert _unseal(token, scalar, srk) == key
    assert (out / "owner").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (out / "owner").iterdir()) == OWNER_FILES


def test_a_shim_grub_image_without_an_srk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    varstore = Varstore.empty_4m()  # Setup Mode: the synthetic binaries are not signed
    (tmp_path / "ms.fd").write_bytes(varstore.to_bytes())
    monkeypatch.setattr(qemu_target, "MS_VARS", tmp_path / "ms.fd")
    out = tmp_path / "img"
    manifest = build_qemu_image(out, QemuTargetSpec("shim-grub", PROFILES["q35"]), _inputs())
    assert [pcrs for _, _, pcrs in initramfs] == [(4, 7, 8, 9)]
    files = esp_tree("shim-grub", _inputs(), b"initramfs for PCRs (4, 7, 8, 9)", None)
    assert manifest == {
        "schema": "cvm-qemu-image/1", "seeded": False, "chain": "shim-grub", "profile": "q35",
        "qemu_args": PROFILES["q35"].qemu_args, "disk": "disk.img",
        "varstore": "OVMF_VARS.fd", "firmware": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "predicted": "predicted-pcrs.json", "esp": sorted("/" + p for p in files),
        "sealed": None}
    _check_image(out, manifest, varstore, files, DEFAULT_WORKLOAD)
    volume, storage = _root(out)
    with storage:
        assert volume.tokens == {}
    assert sorted(p.name for p in (out / "owner").iterdir()) == ["root.key"]


def test_without_microsofts_varstore_there_is_no_shim_grub_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(qemu_target, "MS_VARS", tmp_path / "missing.fd")
    with pytest.raises(UsageError) as caught:
        build_qemu_image(tmp_path / "img", QemuTargetSpec("shim-grub", PROFILES["q35"]),
                         _inputs())
    assert str(caught.value) == f"{tmp_path / 'missing.fd'} is missing (Debian's package ovmf)"
    with pytest.raises(UsageError, match="the workload"):
        build_qemu_image(tmp_path / "bad", QemuTargetSpec("uki", PROFILES["q35"], workload=b""),
                         _inputs())
    assert not (tmp_path / "bad").exists()


def test_a_forced_rebuild_replaces_an_image_in_a_new_nested_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    varstore = Varstore.empty_4m()
    (tmp_path / "ms.fd").write_bytes(varstore.to_bytes())
    monkeypatch.setattr(qemu_target, "MS_VARS", tmp_path / "ms.fd")
    out = tmp_path / "a" / "b" / "img"
    build_qemu_image(out, QemuTargetSpec("shim-grub", PROFILES["q35"]), _inputs())
    first = (out / "owner" / "root.key").read_bytes()
    manifest = build_qemu_image(out, QemuTargetSpec("uki", PROFILES["q35-sata"]), _inputs())
    assert manifest["chain"] == "uki" and manifest["profile"] == "q35-sata"
    assert json.loads((out / MANIFEST).read_text()) == manifest
    key = (out / "owner" / "root.key").read_bytes()
    assert key != first
    volume, storage = _root(out)
    with storage:
        volume.unlock(key)


# --- built whole or not at all -----------------------------------------------------------------

@pytest.fixture
def ms_vars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Varstore:
    """Microsoft's varstore stands in as an empty one (Setup Mode: nothing here is signed)."""
    varstore = Varstore.empty_4m()
    (tmp_path / "ms.fd").write_bytes(varstore.to_bytes())
    monkeypatch.setattr(qemu_target, "MS_VARS", tmp_path / "ms.fd")
    return varstore


def _files(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def _no_space(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Writing a file called ``name`` (``write_bytes`` or ``write_text``) fails: the disk is
    full."""
    for method in ("write_bytes", "write_text"):
        real = getattr(Path, method)

        def full(self: Path, data: Any, *args: Any, real: Any = real, **kwargs: Any) -> int:
            if self.name == name:
                raise OSError(28, "No space left on device", str(self))
            return int(real(self, data, *args, **kwargs))
        monkeypatch.setattr(Path, method, full)


@pytest.mark.parametrize("failing", ["OVMF_VARS.fd", "predicted-pcrs.json", MANIFEST])
@pytest.mark.parametrize("earlier", [False, True])
def test_a_build_that_fails_leaves_the_earlier_image_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ms_vars: Varstore,
    initramfs: list[tuple[bytes, object, tuple[int, ...]]], failing: str, earlier: bool,
) -> None:
    out = tmp_path / "images" / "img"
    if earlier:
        build_qemu_image(out, QemuTargetSpec("shim-grub", PROFILES["q35"]), _inputs())
    before = _files(tmp_path / "images") if earlier else None
    _no_space(monkeypatch, failing)
    with pytest.raises(OSError) as failed:
        build_qemu_image(out, QemuTargetSpec("uki", PROFILES["q35-sata"], _srk()[1]), _inputs())
    assert failed.value.errno == 28
    if earlier:
        assert _files(tmp_path / "images") == before  # no staging left beside it either
    else:
        assert list((tmp_path / "images").iterdir()) == []


def test_a_build_interrupted_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    def interrupted(*args: object) -> dict[str, Any]:
        raise KeyboardInterrupt
    monkeypatch.setattr(qemu_target, "predict_disk", interrupted)  # after the disk is written
    with pytest.raises(KeyboardInterrupt):
        build_qemu_image(tmp_path / "img", QemuTargetSpec("uki", PROFILES["q35"]), _inputs())
    assert list(tmp_path.iterdir()) == []


def test_the_image_is_written_in_a_hidden_folder_beside_out_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    from cvm.image import staging as staging_module

    staged: list[Path] = []
    real = staging_module.put_in_place

    def recording(staging: Path, out: Path) -> None:
        staged.append(staging)
        assert (staging / MANIFEST).is_file() and not out.exists()
        assert stat_mode(staging) == 0o700 and stat_mode(staging / "owner") == 0o700
        real(staging, out)
    monkeypatch.setattr(staging_module, "put_in_place", recording)
    out = tmp_path / "img"
    manifest = build_qemu_image(out, QemuTargetSpec("uki", PROFILES["q35"]), _inputs())
    (staging,) = staged
    assert staging.parent == tmp_path and staging.name.startswith(".img.building-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img"]
    assert json.loads((out / MANIFEST).read_text()) == manifest


def test_the_owners_folder_is_private_for_either_chain(
    tmp_path: Path, ms_vars: Varstore, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    out = tmp_path / "img"
    build_qemu_image(out, QemuTargetSpec("shim-grub", PROFILES["q35"]), _inputs())
    assert stat_mode(out / "owner") == 0o700 and stat_mode(out) == 0o700


@pytest.mark.parametrize("occupant", ["file", "other files", "manifest a folder",
                                      "manifest a link", "an image bundle"])
def test_a_folder_holding_anything_but_a_qemu_image_is_refused_and_left_intact(
    tmp_path: Path, initramfs: list[tuple[bytes, object, tuple[int, ...]]], occupant: str,
) -> None:
    out = tmp_path / "img"
    if occupant == "file":
        out.write_text("mine\n")
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        if occupant == "manifest a folder":
            (out / MANIFEST).mkdir()
        elif occupant == "manifest a link":
            (out / MANIFEST).symlink_to(tmp_path / "nowhere")
        elif occupant == "an image bundle":
            (out / "image.json").write_text("{}\n")
    before = _files(tmp_path)
    with pytest.raises(UsageError) as refused:
        build_qemu_image(out, QemuTargetSpec("uki", PROFILES["q35"]), _inputs())
    assert str(refused.value) == (f"{out}: holds files that are not a qemu image; give a new "
                                  "or empty folder")
    assert _files(tmp_path) == before


def test_an_image_that_cannot_be_created_is_named_as_given(
    tmp_path: Path, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"not a folder")
    for out, reason, code in ((blocker / "img", "File exists", errno.EEXIST),
                              (blocker / "deeper" / "img", "Not a directory", errno.ENOTDIR)):
        with pytest.raises(OSError) as refused:
            build_qemu_image(out, QemuTargetSpec("uki", PROFILES["q35"]), _inputs())
        assert (refused.value.filename, refused.value.errno) == (str(out), code)
        assert refused.value.strerror == f"cannot create the qemu image ({reason})"
    assert blocker.read_bytes() == b"not a folder"


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --- the seed, the build's time and the draws ---------------------------------------------------

class Recording:
    """A seeded random that keeps every draw in order."""

    def __init__(self, seed: int) -> None:
        self.source = SeededRandom(str(seed).encode(), b"recording")
        self.draws: list[bytes] = []

    def __call__(self, size: int) -> bytes:
        self.draws.append(self.source(size))
        return self.draws[-1]


def _volume_serial(disk: Path) -> int:
    """The ESP's FAT32 BS_VolID (offset 0x43 of its boot sector)."""
    with disk.open("rb") as handle:
        handle.seek(MIB + 0x43)
        return int.from_bytes(handle.read(4), "little")


def test_the_esp_is_what_write_esp_makes_with_the_serial_and_the_epoch(tmp_path: Path) -> None:
    files = {"EFI/BOOT/BOOTX64.EFI": b"loader", "a/b": b"c"}
    tree = _tree(tmp_path / "esp", files)
    disk = tmp_path / "disk.img"
    write_disk(disk, tree, bytes(MIB), serial=0x1234ABCD, epoch=EPOCH)
    reference = tmp_path / "reference.img"
    with reference.open("wb") as handle:
        handle.truncate(disk.stat().st_size)
    write_esp(reference, MIB, 60 * MIB, tree, serial=0x1234ABCD, epoch=EPOCH)
    esp = slice(MIB, 61 * MIB)
    assert disk.read_bytes()[esp] == reference.read_bytes()[esp]
    assert _volume_serial(disk) == 0x1234ABCD
    assert esp_stamps(f"{disk}@@{MIB}") == {"2023-11-14 22:13"}


def test_the_root_key_is_drawn_first_then_the_esps_serial(
    tmp_path: Path, ms_vars: Varstore, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    draws = Recording(3)
    out = tmp_path / "img"
    build_qemu_image(out, QemuTargetSpec("shim-grub", PROFILES["q35"]), _inputs(), draws)
    assert draws.draws[0] == (out / "owner" / "root.key").read_bytes()
    assert len(draws.draws[1]) == 4
    assert _volume_serial(out / "disk.img") == int.from_bytes(draws.draws[1], "little")


@pytest.fixture
def generated(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The owner's keys generated as asked, but from the system (a seeded derivation takes
    seconds and is tested in test_keys_checks.py); each call's arguments."""
    calls: list[dict[str, Any]] = []
    real = OwnerKeys.generate

    def generate(random: Any, **options: Any) -> OwnerKeys:
        calls.append({"random": random, **options})
        return real(random, **{**options, "seeded": False})
    monkeypatch.setattr(qemu_target.OwnerKeys, "generate", generate)
    return calls


def test_a_seed_makes_the_build_reproducible(
    tmp_path: Path, ms_vars: Varstore, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    _, srk = _srk()
    spec = QemuTargetSpec("shim-grub", PROFILES["q35"], srk, seed=5)
    first = build_qemu_image(tmp_path / "a", spec, _inputs())
    again = build_qemu_image(tmp_path / "b", spec, _inputs())
    assert first == again and first["seeded"] is True
    assert folder_files(tmp_path / "a") == folder_files(tmp_path / "b")  # the token too
    # 2025-01-01 00:00 UTC on every entry of the ESP
    assert esp_stamps(f"{tmp_path / 'a' / 'disk.img'}@@{MIB}") == {"2025-01-01 0:00"}
    build_qemu_image(tmp_path / "c", replace(spec, seed=6), _inputs())
    other = folder_files(tmp_path / "c")
    assert [name for name, data in folder_files(tmp_path / "a").items()
            if other[name] != data] == ["disk.img", "owner/root.key"]
    assert _volume_serial(tmp_path / "a" / "disk.img") != _volume_serial(
        tmp_path / "c" / "disk.img")


def test_the_uki_keys_are_the_builds_and_dated_by_its_time(
    tmp_path: Path, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
    generated: list[dict[str, Any]],
) -> None:
    given = Recording(1)
    for seed, epoch, dated in ((None, None, None), (5, None, SEEDED_EPOCH),
                               (None, EPOCH, EPOCH), (5, EPOCH, EPOCH)):
        out = tmp_path / f"img-{seed}-{epoch}"
        build_qemu_image(out, QemuTargetSpec("uki", PROFILES["q35"], seed=seed,
                                             source_date_epoch=epoch), _inputs(), given)
        call = generated.pop()
        assert call == {"random": given, "vendor": False, "pcr_policy": False,
                        "seeded": seed is not None,
                        "not_before": None if dated is None else
                        datetime.datetime.fromtimestamp(dated, datetime.UTC)}
        if dated is not None:
            stamp = "2025-01-01 0:00" if dated == SEEDED_EPOCH else "2023-11-14 22:13"
            assert esp_stamps(f"{out / 'disk.img'}@@{MIB}") == {stamp}
        assert OwnerKeys.load(out / "owner").varstore().to_bytes() == (
            out / "OVMF_VARS.fd").read_bytes()


def test_without_a_seed_the_systems_random_and_clock(
    tmp_path: Path, ms_vars: Varstore, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    _, srk = _srk()
    spec = QemuTargetSpec("shim-grub", PROFILES["q35"], srk)
    first = build_qemu_image(tmp_path / "a", spec, _inputs())
    build_qemu_image(tmp_path / "b", spec, _inputs())
    assert first["seeded"] is False
    a, b = folder_files(tmp_path / "a"), folder_files(tmp_path / "b")
    assert [name for name in a if a[name] != b[name]] == ["disk.img", "owner/root.key"]
    assert esp_stamps(f"{tmp_path / 'a' / 'disk.img'}@@{MIB}") != {"2025-01-01 0:00"}


def test_a_random_given_wins_over_the_seed(
    tmp_path: Path, ms_vars: Varstore, initramfs: list[tuple[bytes, object, tuple[int, ...]]],
) -> None:
    _, srk = _srk()
    for name, seed in (("a", 5), ("b", 6)):
        build_qemu_image(tmp_path / name,
                         QemuTargetSpec("shim-grub", PROFILES["q35"], srk, seed=seed),
                         _inputs(), SeededRandom(b"given", b"test"))
    build_qemu_image(tmp_path / "c", QemuTargetSpec("shim-grub", PROFILES["q35"], srk, seed=5),
                     _inputs())
    assert folder_files(tmp_path / "a") == folder_files(tmp_path / "b")
    assert folder_files(tmp_path / "a")["owner/root.key"] != folder_files(
        tmp_path / "c")["owner/root.key"]
