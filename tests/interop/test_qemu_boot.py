"""cvm's predictions against real boots: QEMU (q35, TCG) + Debian's OVMF + swtpm.

One real boot per VM profile cvm offers, with the distribution's keys: Debian's
Microsoft-signed shim, Debian-signed GRUB and kernel, and a busybox initramfs that prints the
TPM's event log and every PCR of both banks to the serial console, then powers off. The disk
(GPT, FAT32 ESP) is written by cvm's own disk code; the varstore is Debian's
``OVMF_VARS_4M.ms.fd``. For each boot, ``cvm pcr predict`` on the disk image alone (no folder,
no hints) must give every PCR it reports as predicted, in both banks, equal to the real one —
and must report the others as unknown; given the boot's own log as the firmware reference it
must give PCR 0 too; its emulated event log must agree with the real one event by event
(``cvm pcr diff``). One more boot uses the owner's keys: a varstore from ``cvm varstore
enroll`` and a UKI of systemd's stub, the same kernel and initramfs, signed by ``cvm sb sign``.
A boot costs ~12 s on a quiet machine: each is made once per session, and the downloads are
cached (``~/.cache/cvm-tests``).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import generate_rsa_key, issue_certificate, pem, private_key_pem
from cvm.disk.esp import write_esp
from cvm.formats.cpio import CpioArchive, CpioEntry
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.pe.section_append import append_sections
from cvm.host.qemu import QemuImage, run_image
from cvm.image.qemu_target import DEFAULT_WORKLOAD, SEALED_PCRS
from cvm.image.qemu_target import GRUB_CFG as TARGET_GRUB_CFG
from cvm.image.vm_profile import PROFILES, VmProfile
from cvm.wire import Guid

pytestmark = [pytest.mark.interop, pytest.mark.slow]

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
BUSYBOX = ("busybox-static", "1:1.35.0-4+deb12u1+b1")
SYSTEMD_STUB = ("systemd-boot-efi", "252.39-1~deb12u2")
BOOT_TIMEOUT_S = 400
DISK_MIB, ESP_FIRST_LBA, ESP_MIB = 64, 2048, 60
# no_timer_check: under TCG on a loaded machine the kernel's IO-APIC timer check can fail and panic
CMDLINE = "console=ttyS0 panic=-1 no_timer_check"
GRUB_CFG = f"set timeout=0\nlinux /vmlinuz {CMDLINE}\ninitrd /initrd.img\nboot\n"
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t securityfs securityfs /sys/kernel/security
echo 1 > /proc/sys/kernel/printk  # no kernel message inside the base64 on the shared console
echo CVM-EVENTLOG-BEGIN
base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo CVM-EVENTLOG-END
for bank in sha1 sha256; do
  for f in /sys/class/tpm/tpm0/pcr-$bank/*; do echo "CVM-PCR $bank ${f##*/} $(cat $f)"; done
done
echo CVM-DONE
poweroff -f
"""


@dataclass(frozen=True)
class RealBoot:
    """What one real boot left: its disk, its event log and the PCRs the kernel read."""

    disk: Path
    log: Path
    pcrs: dict[str, dict[int, str]]
    varstore: Path


def _initramfs(busybox: Path) -> bytes:
    entries = [CpioEntry.directory(name, ino=n) for n, name in
               enumerate(("bin", "dev", "proc", "sys"), start=1)]
    entries += [CpioEntry.file("bin/busybox", busybox.read_bytes(), 0o755, ino=5),
                CpioEntry.file("init", INIT.encode(), 0o755, ino=6)]
    return gzip.compress(CpioArchive(tuple(entries)).to_bytes(), compresslevel=1, mtime=0)


def _disk(tree: Path, out: Path, root: bytes = b"") -> None:
    """A GPT disk: the ESP holding ``tree``, then (when given) a root partition of ``root``."""
    root_mib = -(-len(root) // (1 << 20))
    size = (DISK_MIB + root_mib + (1 if root else 0)) << 20  # room for the backup GPT
    with out.open("wb") as handle:
        handle.truncate(size)
    last = ESP_FIRST_LBA + (ESP_MIB << 20) // LBA_SIZE - 1
    entries = [PartitionEntry(partition_types.ESP,
                              Guid.parse("1c2b3a49-5867-4e8d-9a0b-c1d2e3f40516"),
                              ESP_FIRST_LBA, last, name="EFI System Partition")]
    if root:
        first = (DISK_MIB << 20) // LBA_SIZE
        entries.append(PartitionEntry(partition_types.LINUX_DATA,
                                      Guid.parse("2d3c4b5a-6978-4f8e-9a0b-c1d2e3f40517"),
                                      first, first + (root_mib << 20) // LBA_SIZE - 1,
                                      name="root"))
    table = PartitionTable.create(size // LBA_SIZE, entries,
                                  Guid.parse("7e5a1b3c-2d4f-4a6b-8c9d-0e1f2a3b4c5d"))
    with out.open("r+b") as handle:
        for offset, data in table.blocks():
            handle.seek(offset)
            handle.write(data)
        if root:
            handle.seek(DISK_MIB << 20)
            handle.write(root)
    write_esp(out, ESP_FIRST_LBA * LBA_SIZE, ESP_MIB << 20, tree)


def _new_tpm_state(state: Path, find: Callable[[str], str]) -> Path:
    state.mkdir()
    subprocess.run([find("swtpm_setup"), "--tpm2", "--tpmstate", str(state), "--pcr-banks",
                    "sha1,sha256", "--overwrite"], check=True, capture_output=True)
    return state


def _run_qemu(profile: VmProfile, disk: Path, folder: Path, template: Path, state: Path) -> str:
    """Boot ``disk`` once with swtpm on ``state`` (cvm's qemu backend); the serial console."""
    image = QemuImage(folder, disk, template, OVMF_CODE, profile.qemu_args, profile.name)
    text = run_image(image, state, BOOT_TIMEOUT_S).serial
    assert "CVM-DONE" in text, f"{profile.name}: the boot did not finish: {text[-500:]!r}"
    return text


def _boot(profile: VmProfile, disk: Path, folder: Path, find: Callable[[str], str],
          template: Path = MS_VARS) -> RealBoot:
    state = _new_tpm_state(folder / "tpm", find)
    text = _run_qemu(profile, disk, folder, template, state)
    encoded = text.split("CVM-EVENTLOG-BEGIN", 1)[1].split("CVM-EVENTLOG-END", 1)[0]
    log = folder / "eventlog.bin"
    log.write_bytes(base64.b64decode("".join(encoded.split())))
    pcrs: dict[str, dict[int, str]] = {}
    for bank, index, value in re.findall(r"CVM-PCR (\w+) (\d+) ([0-9A-F]+)", text):
        pcrs.setdefault(bank, {})[int(index)] = value.lower()
    return RealBoot(disk, log, pcrs, template)


@pytest.fixture(scope="session")
def boot_tree(tmp_path_factory: pytest.TempPathFactory, debian_boot_binaries: dict[str, Path],
              debian_package: Callable[[str, str], Path]) -> Path:
    tree = tmp_path_factory.mktemp("esp-tree")
    (tree / "EFI/BOOT").mkdir(parents=True)
    (tree / "EFI/debian").mkdir(parents=True)
    shutil.copyfile(debian_boot_binaries["shim"], tree / "EFI/BOOT/BOOTX64.EFI")
    shutil.copyfile(debian_boot_binaries["grub"], tree / "EFI/BOOT/grubx64.efi")
    shutil.copyfile(debian_boot_binaries["kernel"], tree / "vmlinuz")
    (tree / "EFI/debian/grub.cfg").write_text(GRUB_CFG)
    busybox = debian_package(*BUSYBOX) / "bin/busybox"
    (tree / "initrd.img").write_bytes(_initramfs(busybox))
    return tree


@pytest.fixture(scope="session")
def owner_uki_boot(tmp_path_factory: pytest.TempPathFactory, boot_tree: Path,
                   debian_boot_binaries: dict[str, Path],
                   debian_package: Callable[[str, str], Path],
                   require_tool: Callable[[str], str]) -> RealBoot:
    """The owner's chain: its own PK/KEK/db enrolled by ``cvm varstore enroll``, and a UKI of
    systemd's EFI stub, Debian's kernel and the initramfs, signed by ``cvm sb sign``."""
    if not OVMF_CODE.exists():
        pytest.fail("Debian's OVMF (package ovmf) is missing")
    folder = tmp_path_factory.mktemp("boot-owner-uki")
    key = generate_rsa_key()
    (folder / "db.pem").write_bytes(pem(issue_certificate("cvm test owner", key)))
    (folder / "db.key").write_bytes(private_key_pem(key))
    stub = debian_package(*SYSTEMD_STUB) / "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    uki = append_sections(stub.read_bytes(), [
        (".osrel", b"ID=cvm\n"), (".cmdline", CMDLINE.encode()),
        (".linux", debian_boot_binaries["kernel"].read_bytes()),
        (".initrd", (boot_tree / "initrd.img").read_bytes()),
    ])
    (folder / "uki.efi").write_bytes(uki)
    tree = folder / "esp"
    (tree / "EFI/BOOT").mkdir(parents=True)
    assert execute(["sb", "sign", str(folder / "uki.efi"), "--key", str(folder / "db.key"),
                    "--cert", str(folder / "db.pem"), "-o",
                    str(tree / "EFI/BOOT/BOOTX64.EFI")]) == 0
    varstore = folder / "owner-vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(folder / "db.pem"), "--kek",
                    str(folder / "db.pem"), "--db", str(folder / "db.pem"), "-o",
                    str(varstore)]) == 0
    _disk(tree, folder / "disk.img")
    return _boot(PROFILES["q35-nodefaults"], folder / "disk.img", folder, require_tool,
                 varstore)


@pytest.fixture(scope="session")
def real_boots(tmp_path_factory: pytest.TempPathFactory, boot_tree: Path,
               require_tool: Callable[[str], str]) -> Callable[[str], RealBoot]:
    """``real_boots(profile_name)``: that profile's real boot, made once per session."""
    if not OVMF_CODE.exists() or not MS_VARS.exists():
        pytest.fail("Debian's OVMF (package ovmf) is missing")
    made: dict[str, RealBoot] = {}

    def boot(name: str) -> RealBoot:
        if name not in made:
            folder = tmp_path_factory.mktemp(f"boot-{name}")
            disk = folder / "disk.img"
            _disk(boot_tree, disk)
            made[name] = _boot(PROFILES[name], disk, folder, require_tool)
        return made[name]

    return boot


def _predict(capsys: pytest.CaptureFixture[str], boot: RealBoot, profile: str,
             *extra: str) -> dict[str, object]:
    capsys.readouterr()
    code = execute(["pcr", "predict", str(boot.disk), "--varstore", str(boot.varstore),
                    "--profile", profile, "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    document = json.loads(out)
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_predicted_pcr_equals_the_real_one(
    profile: str, real_boots: Callable[[str], RealBoot], capsys: pytest.CaptureFixture[str]
) -> None:
    boot = real_boots(profile)
    document = _predict(capsys, boot, profile)
    unknown = document["unknown"]
    assert isinstance(unknown, dict)
    expected_unknown = {"0", "10"} | ({"2"} if PROFILES[profile].measures_option_rom else set())
    assert set(unknown) == expected_unknown
    assert all(entry["settle"] for entry in unknown.values())
    for bank in ("sha1", "sha256"):
        values = document[bank]
        assert isinstance(values, dict)
        for pcr, value in values.items():
            if pcr in expected_unknown:
                assert value is None
            else:
                assert value == boot.pcrs[bank][int(pcr)], f"{profile} {bank} PCR {pcr}"


@pytest.mark.parametrize("profile", ["q35", "q35-net"])
def test_the_firmware_log_settles_pcr_0_and_the_option_rom(
    profile: str, real_boots: Callable[[str], RealBoot], capsys: pytest.CaptureFixture[str]
) -> None:
    boot = real_boots(profile)
    document = _predict(capsys, boot, profile, "--firmware-log", str(boot.log))
    assert set(document["unknown"]) == {"10"}  # type: ignore[arg-type]
    for bank in ("sha1", "sha256"):
        values = document[bank]
        assert isinstance(values, dict)
        for pcr in ("0", "2"):
            assert values[pcr] == boot.pcrs[bank][int(pcr)]


@pytest.mark.parametrize("profile", ["q35", "q35-nodefaults"])
def test_the_emulated_boot_logs_what_the_real_boot_logged(
    profile: str, real_boots: Callable[[str], RealBoot], capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    boot = real_boots(profile)
    emulated = tmp_path / "emulated.log"
    _predict(capsys, boot, profile, "--event-log", str(emulated))
    assert execute(["pcr", "diff", str(emulated), str(boot.log)]) == 0


def test_a_profile_that_is_not_the_vm_is_caught_by_the_diff(
    real_boots: Callable[[str], RealBoot], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    boot = real_boots("q35-nodefaults")
    emulated = tmp_path / "emulated.log"
    _predict(capsys, boot, "q35", "--event-log", str(emulated))
    capsys.readouterr()
    assert execute(["pcr", "diff", str(emulated), str(boot.log)]) == 1
    out = capsys.readouterr().out
    assert "PCR 1:" in out and "BootOrder" in out and "--profile" in out
    assert "PCR 4:" in out


def test_the_owners_uki_chain_is_predicted_pcr_for_pcr_and_event_for_event(
    owner_uki_boot: RealBoot, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    emulated = tmp_path / "emulated.log"
    document = _predict(capsys, owner_uki_boot, "q35-nodefaults", "--event-log", str(emulated))
    assert set(document["unknown"]) == {"0", "10"}  # type: ignore[arg-type]
    for bank in ("sha1", "sha256"):
        values = document[bank]
        assert isinstance(values, dict)
        for pcr, value in values.items():
            if value is not None:
                assert value == owner_uki_boot.pcrs[bank][int(pcr)], f"{bank} PCR {pcr}"
    assert values["11"] != "00" * 32  # systemd's stub measured the UKI's sections
    assert execute(["pcr", "diff", str(emulated), str(owner_uki_boot.log)]) == 0


WORKLOAD = DEFAULT_WORKLOAD
SEALED = SEALED_PCRS["shim-grub"]

# --- the sealed root: cvm image build --target qemu, run by cvm vm run --backend qemu -------

@dataclass(frozen=True)
class SealedRun:
    code: int
    out: str
    err: str


def _cvm(*args: str) -> SealedRun:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = execute(list(args))
    return SealedRun(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def sealed_root_runs(tmp_path_factory: pytest.TempPathFactory,
                     debian_boot_binaries: dict[str, Path],
                     debian_package: Callable[[str, str], Path],
                     require_tool: Callable[[str], str]) -> tuple[Path, SealedRun, SealedRun]:
    """A ``--target qemu`` image sealed to a new TPM's SRK, run twice by ``cvm vm run
    --backend qemu``: as built, then after the host edited ``grub.cfg`` on the ESP (mtools).
    The image is seeded (``--seed``): a reproducible image boots as any other."""
    for tool in ("swtpm", "swtpm_setup", "tpm2_createprimary", "tpm2", "cryptsetup", "mcopy"):
        require_tool(tool)
    debian_package(*BUSYBOX)
    cache = debian_boot_binaries["kernel"].parents[2]  # the tests' Debian package cache
    folder = tmp_path_factory.mktemp("sealed-root")
    state, image = folder / "tpm", folder / "image"
    assert _cvm("vm", "tpm-setup", str(state)).code == 0
    built = _cvm("image", "build", str(image), "--target", "qemu", "--chain", "shim-grub",
                 "--profile", "q35", "--srk-public", str(state / "srk.pub"), "--cache",
                 str(cache), "--seed", "11", "--json")
    assert built.code == 0, built.err
    assert json.loads(built.out)["manifest"]["seeded"] is True
    genuine = _cvm("vm", "run", str(image), "--backend", "qemu", "--tpm-state", str(state),
                   "--json")
    cfg = folder / "grub.cfg"
    cfg.write_text(TARGET_GRUB_CFG.replace("panic=-1", "panic=-1 init=/bin/sh"))
    subprocess.run([require_tool("mcopy"), "-o", "-i",
                    f"{image / 'disk.img'}@@{ESP_FIRST_LBA * LBA_SIZE}", str(cfg),
                    "::/EFI/debian/grub.cfg"], check=True, capture_output=True)
    edited = _cvm("vm", "run", str(image), "--backend", "qemu", "--tpm-state", str(state),
                  "--json")
    return image, genuine, edited


def test_the_sealed_root_opens_in_the_real_boot_and_not_after_an_esp_edit(
    sealed_root_runs: tuple[Path, SealedRun, SealedRun]
) -> None:
    image, genuine, edited = sealed_root_runs
    assert genuine.code == 0, genuine.err
    report = json.loads(genuine.out)
    assert report["outcome"] == "opened"
    assert report["detail"] == WORKLOAD.decode().strip()
    predicted = json.loads((image / "predicted-pcrs.json").read_text())["sha256"]
    assert report["pcrs_sha256"] == {str(p): predicted[str(p)] for p in SEALED}
    assert edited.code == 68, edited.err  # the emulated backend's code for a refused unseal
    assert "the TPM refused to unseal" in edited.err and "0x99d" in edited.err.lower()
    refused = json.loads(edited.out)
    assert refused["outcome"] == "refused"
    assert refused["pcrs_sha256"]["8"] != predicted["8"]  # grub.cfg is measured into PCR 8
    assert WORKLOAD.decode().strip() not in edited.out
