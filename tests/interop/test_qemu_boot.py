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
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import generate_rsa_key, issue_certificate, pem, private_key_pem
from cvm.disk.esp import write_esp
from cvm.formats.gpt import partition_types
from cvm.formats.gpt.header import LBA_SIZE
from cvm.formats.gpt.partition_entry import PartitionEntry
from cvm.formats.gpt.partition_table import PartitionTable
from cvm.formats.pe.section_append import append_sections
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.tpm2b import parse_tpm2b, tpm2b
from cvm.image.offline_seal import seal_for_import
from cvm.image.vm_profile import PROFILES, VmProfile
from cvm.vtpm.policy import PolicyDigest
from cvm.wire import Guid

pytestmark = [pytest.mark.interop, pytest.mark.slow]

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
BUSYBOX = ("busybox-static", "1:1.35.0-4+deb12u1+b1")
SYSTEMD_STUB = ("systemd-boot-efi", "252.39-1~deb12u2")
BOOT_TIMEOUT_S = 400
DISK_MIB, ESP_FIRST_LBA, ESP_MIB = 64, 2048, 60
GRUB_CFG = "set timeout=0\nlinux /vmlinuz console=ttyS0 panic=-1\ninitrd /initrd.img\nboot\n"
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t securityfs securityfs /sys/kernel/security
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


def _newc(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks (path -> (mode, data))."""
    out = bytearray()
    entries = [*files.items(), ("TRAILER!!!", (0, b""))]
    for number, (name, (mode, data)) in enumerate(entries, start=1):
        encoded = name.encode() + b"\0"
        fields = (number, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
        out += bytes(-len(out) % 4) + data
        out += bytes(-len(out) % 4)
    return bytes(out)


def _initramfs(busybox: Path) -> bytes:
    files = {
        "bin": (0o040755, b""), "dev": (0o040755, b""), "proc": (0o040755, b""),
        "sys": (0o040755, b""), "bin/busybox": (0o100755, busybox.read_bytes()),
        "init": (0o100755, INIT.encode()),
    }
    return gzip.compress(_newc(files), compresslevel=1, mtime=0)


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


def _qemu_args(profile: VmProfile, disk: Path) -> list[str]:
    return [part.replace("DISK", str(disk)) for part in profile.qemu_args.split()]


def _new_tpm_state(state: Path, find: Callable[[str], str]) -> Path:
    state.mkdir()
    subprocess.run([find("swtpm_setup"), "--tpm2", "--tpmstate", str(state), "--pcr-banks",
                    "sha1,sha256", "--overwrite"], check=True, capture_output=True)
    return state


def _run_qemu(profile: VmProfile, disk: Path, folder: Path, find: Callable[[str], str],
              template: Path, state: Path) -> str:
    """Boot ``disk`` once with swtpm on ``state``; the serial console's text."""
    socket, serial = folder / "swtpm.sock", folder / "serial.log"
    socket.unlink(missing_ok=True)
    serial.unlink(missing_ok=True)
    swtpm = subprocess.Popen([find("swtpm"), "socket", "--tpm2", "--tpmstate", f"dir={state}",
                              "--ctrl", f"type=unixio,path={socket}", "--terminate"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    varstore = folder / "vars.fd"
    shutil.copyfile(template, varstore)
    argv = [
        find("qemu-system-x86_64"), "-machine", "q35,smm=on,accel=tcg", "-cpu", "max",
        "-m", "1024", "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
        "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
        "-chardev", f"socket,id=chrtpm,path={socket}", "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
        "-display", "none", "-serial", f"file:{serial}", "-no-reboot", "-monitor", "none",
        *[a for a in _qemu_args(profile, disk) if a not in ("-machine", "q35")],
    ]
    try:
        for _ in range(50):
            if socket.exists():
                break
            time.sleep(0.1)
        done = subprocess.run(argv, capture_output=True, timeout=BOOT_TIMEOUT_S, check=False)
    finally:
        swtpm.kill()
        swtpm.wait()
    text = serial.read_bytes().decode("latin-1") if serial.exists() else ""
    assert "CVM-DONE" in text, f"{profile.name}: the boot did not finish: {done.stderr[-500:]!r}"
    return text


def _boot(profile: VmProfile, disk: Path, folder: Path, find: Callable[[str], str],
          template: Path = MS_VARS) -> RealBoot:
    state = _new_tpm_state(folder / "tpm", find)
    text = _run_qemu(profile, disk, folder, find, template, state)
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
        (".osrel", b"ID=cvm\n"), (".cmdline", b"console=ttyS0 panic=-1"),
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


# --- the sealed root: an initramfs with tpm2-tools and cryptsetup opens it in the real boot ----

SEALED_PCRS = (4, 7, 8, 9)
TOKEN_TYPE = "cvm-tpm2-import"
SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
MODULES = ("virtio_pci", "virtio_blk", "dm-crypt", "ecb", "xts")  # and what they depend on
WORKLOAD = b"CVM-WORKLOAD: the owner's data, readable only through the predicted boot\n"
SEALED_INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /run/cryptsetup /tmp
/bin/busybox --install -s
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $(cat /modules/order); do insmod /modules/$m.ko; done
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu DM_DISABLE_UDEV=1
export TPM2TOOLS_TCTI=device:/dev/tpmrm0
for i in $(seq 100); do [ -b /dev/vda2 ] && break; sleep 0.1; done
cd /tmp
cryptsetup token export --token-id 0 /dev/vda2 > token.json
for f in public duplicate seed; do
  sed -n "s/.*\\"cvm-$f\\": *\\"\\([^\\"]*\\)\\".*/\\1/p" token.json | base64 -d > $f
done
tpm2 createprimary -C o -g sha256 -G ecc256:aes128cfb -a '{SRK_ATTRIBUTES}' -c srk.ctx -Q
tpm2 import -C srk.ctx -u public -i duplicate -s seed -r private -Q
tpm2 flushcontext -t
tpm2 load -C srk.ctx -u public -r private -c sealed.ctx -Q
tpm2 flushcontext -t
for p in {' '.join(map(str, SEALED_PCRS))}; do
  echo "CVM-PCR sha256 $p $(cat /sys/class/tpm/tpm0/pcr-sha256/$p)"
done
echo CVM-EVENTLOG-BEGIN
mount -t securityfs securityfs /sys/kernel/security
base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo CVM-EVENTLOG-END
tpm2 startauthsession --policy-session -S session.ctx
tpm2 policypcr -S session.ctx -l sha256:{','.join(map(str, SEALED_PCRS))} -Q
if tpm2 unseal -c sealed.ctx -p session:session.ctx -o key 2> unseal.err; then
  cryptsetup open --key-file key /dev/vda2 root && head -c {len(WORKLOAD)} /dev/mapper/root
else
  echo "CVM-UNSEAL-FAILED $(cat unseal.err | tr '\\n' ' ')"
fi
echo CVM-DONE
poweroff -f
"""


def _libraries(binaries: list[Path], find: Callable[[str], str]) -> set[Path]:
    """Every shared library ``binaries`` load (and the loader), as ``ldd`` resolves them."""
    found: set[Path] = set()
    for binary in binaries:
        done = subprocess.run([find("ldd"), str(binary)], capture_output=True, text=True,
                              check=True)
        for line in done.stdout.splitlines():
            match = re.search(r"(/\S+) \(0x", line)
            if match:
                found.add(Path(match.group(1)))
    return found


def _module_order(modules: Path) -> list[tuple[str, Path]]:
    """MODULES and every module they depend on (the ``depends=`` of their .modinfo), each after
    its dependencies."""
    order: list[tuple[str, Path]] = []

    def add(name: str) -> None:
        if any(name == done for done, _ in order):
            return
        (path,) = modules.glob(f"*/kernel/**/{name}.ko")
        info = path.read_bytes().split(b"depends=", 1)[1].split(b"\0", 1)[0].decode()
        for dependency in filter(None, info.split(",")):
            add(dependency)
        order.append((name, path))

    for name in MODULES:
        add(name)
    return order


def _with_parents(files: dict[str, tuple[int, bytes]]) -> dict[str, tuple[int, bytes]]:
    folders: dict[str, tuple[int, bytes]] = {}
    for name in files:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folders.setdefault("/".join(parts[:depth]), (0o040755, b""))
    return {**folders, **files}


def _sealed_initramfs(busybox: Path, kernel_root: Path, find: Callable[[str], str]) -> bytes:
    tpm2, cryptsetup = Path(find("tpm2")), Path(find("cryptsetup"))
    tcti = Path("/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0")
    files: dict[str, tuple[int, bytes]] = {
        "bin/busybox": (0o100755, busybox.read_bytes()), "init": (0o100755, SEALED_INIT.encode()),
        "usr/bin/tpm2": (0o100755, tpm2.read_bytes()),
        "usr/sbin/cryptsetup": (0o100755, cryptsetup.read_bytes()),
        "usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0": (0o100755, tcti.read_bytes()),
    }
    for library in _libraries([tpm2, cryptsetup, tcti], find):
        files[str(library).lstrip("/")] = (0o100755, library.read_bytes())
    order = _module_order(kernel_root / "lib/modules")
    for name, path in order:
        files[f"modules/{name}.ko"] = (0o100644, path.read_bytes())
    files["modules/order"] = (0o100644, " ".join(name for name, _ in order).encode())
    for folder in ("proc", "sys", "dev", "tmp", "run"):
        files[folder] = (0o040755, b"")
    return gzip.compress(_newc(_with_parents(files)), compresslevel=1, mtime=0)


def _read_srk(state: Path, find: Callable[[str], str], workdir: Path,
              free_port_pair: Callable[[], int]) -> Public:
    """The SRK's public part, read from the TPM before the VM ever boots."""
    port = free_port_pair()
    server = subprocess.Popen([find("swtpm"), "socket", "--tpm2", "--tpmstate", f"dir={state}",
                               "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                               "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                               "--flags", "startup-clear"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={port}", "PATH": "/usr/bin:/bin"}
    try:
        time.sleep(0.5)
        for argv in (["tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb",
                      "-a", SRK_ATTRIBUTES, "-c", "srk.ctx", "-Q"],
                     ["tpm2_readpublic", "-c", "srk.ctx", "-o", "srk.pub", "-Q"],
                     ["tpm2_shutdown"]):
            subprocess.run([find(argv[0]), *argv[1:]], cwd=workdir, env=env, check=True,
                           capture_output=True, timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=10)
    return Public.from_bytes(parse_tpm2b((workdir / "srk.pub").read_bytes(), "TPM2B_PUBLIC"))


@pytest.fixture(scope="session")
def sealed_root_boots(tmp_path_factory: pytest.TempPathFactory, boot_tree: Path,
                      debian_boot_binaries: dict[str, Path],
                      debian_package: Callable[[str, str], Path],
                      require_tool: Callable[[str], str],
                      free_port_pair: Callable[[], int]) -> tuple[str, str]:
    """The serial output of two boots of one sealed disk: as built, then with grub.cfg edited."""
    folder = tmp_path_factory.mktemp("sealed-root")
    tree = folder / "esp"
    shutil.copytree(boot_tree, tree)
    kernel_root = debian_boot_binaries["kernel"].parents[1]
    busybox = debian_package(*BUSYBOX) / "bin/busybox"
    (tree / "initrd.img").write_bytes(_sealed_initramfs(busybox, kernel_root, require_tool))
    plain, key = folder / "root.plain", folder / "root.key"
    plain.write_bytes(WORKLOAD.ljust(1 << 20, b"\0"))
    key.write_bytes(os.urandom(32))
    root = folder / "root.img"
    assert execute(["luks", "encrypt", str(plain), str(root), "--key-file", str(key),
                    "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]) == 0
    disk = folder / "disk.img"
    _disk(tree, disk, root.read_bytes())
    state = _new_tpm_state(folder / "tpm", require_tool)
    srk = _read_srk(state, require_tool, folder, free_port_pair)
    # the owner predicts the PCRs from the disk alone, and seals the root's key to them
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert execute(["pcr", "predict", str(disk), "--varstore", str(MS_VARS), "--profile",
                        "q35", "--bank", "sha256", "--json"]) == 0
    predicted = json.loads(printed.getvalue())["sha256"]
    policy = PolicyDigest.start().pcr(PcrSelectionList.of("sha256", list(SEALED_PCRS)),
                                      [bytes.fromhex(predicted[str(p)]) for p in SEALED_PCRS])
    seal = seal_for_import(srk, key.read_bytes(), policy.value, os.urandom)
    token = {
        "type": TOKEN_TYPE, "keyslots": ["0"], "cvm-pcr-bank": "sha256",
        "cvm-pcrs": list(SEALED_PCRS),
        "cvm-public": base64.b64encode(tpm2b(seal.public.to_bytes())).decode(),
        "cvm-duplicate": base64.b64encode(tpm2b(seal.duplicate)).decode(),
        "cvm-seed": base64.b64encode(tpm2b(seal.encrypted_seed)).decode(),
    }
    (folder / "token.json").write_text(json.dumps(token))
    assert execute(["luks", "token", "import", str(root), "--json-file",
                    str(folder / "token.json")]) == 0
    with disk.open("r+b") as handle:
        handle.seek(DISK_MIB << 20)
        handle.write(root.read_bytes())
    profile = PROFILES["q35"]
    genuine = _run_qemu(profile, disk, folder, require_tool, MS_VARS, state)
    (folder / "genuine.txt").write_text(genuine)
    (folder / "predicted.json").write_text(json.dumps(predicted))
    cfg = tree / "EFI/debian/grub.cfg"
    cfg.write_text(cfg.read_text().replace("panic=-1", "panic=-1 init=/bin/sh"))
    write_esp(disk, ESP_FIRST_LBA * LBA_SIZE, ESP_MIB << 20, tree)
    edited = _run_qemu(profile, disk, folder, require_tool, MS_VARS, state)
    return genuine, edited


def test_the_sealed_root_opens_in_the_real_boot_and_not_after_an_esp_edit(
    sealed_root_boots: tuple[str, str]
) -> None:
    genuine, edited = sealed_root_boots
    assert WORKLOAD.decode().strip() in genuine
    assert "CVM-UNSEAL-FAILED" not in genuine
    assert "CVM-UNSEAL-FAILED" in edited
    assert "0x99d" in edited.lower() or "policy" in edited.lower()
    assert WORKLOAD.decode().strip() not in edited
