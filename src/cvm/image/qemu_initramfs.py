"""The initramfs of a ``--target qemu`` image: it unseals the root's key in the real TPM.

It holds busybox-static (the shell and every small tool), ``tpm2`` (tpm2-tools) and
``cryptsetup`` with every shared library they load (as ``ldd`` resolves them, and the device
TCTI that tpm2-tools opens at run time), and the kernel modules the root needs (virtio-blk,
dm-crypt, the XTS cipher) with everything their ``.modinfo`` ``depends=`` names, loaded in
dependency order. Its ``/init`` reads the LUKS2 token (:data:`TOKEN_TYPE`), recreates the
TPM's storage root key from its template (the same key the owner sealed to, as
``systemd-tpm2-setup`` publishes it), imports and loads the sealed object, unseals it in a PCR
policy session and opens the root — then prints a report on the serial console
(:data:`MARK_OPENED` + the workload's first line, or :data:`MARK_REFUSED` + the TPM's error)
and powers off. The archive is written by :mod:`cvm.formats.cpio`, gzip-compressed.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

from cvm.errors import ExternalToolError, FormatError
from cvm.formats.cpio import CpioArchive, CpioEntry
from cvm.formats.elf import modinfo

TOKEN_TYPE = "cvm-tpm2-import"
SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SRK_ALGORITHM = "ecc256:aes128cfb"
MODULES = ("virtio_pci", "virtio_blk", "dm-crypt", "ecb", "xts")  # and what they depend on
TCTI_LIBRARY = Path("/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0")
ROOT_DEVICE = "/dev/vda2"
MARK_BEGIN = "CVM-REPORT-BEGIN"
MARK_OPENED = "CVM-ROOT-OPENED"
MARK_REFUSED = "CVM-UNSEAL-FAILED"
MARK_PCR = "CVM-PCR"
MARK_DONE = "CVM-DONE"
WORKLOAD_BYTES = 4096

INIT_TEMPLATE = """#!/bin/busybox sh
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /run/cryptsetup /tmp
/bin/busybox --install -s
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for m in $(cat /modules/order); do insmod /modules/$m.ko; done
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu DM_DISABLE_UDEV=1
export TPM2TOOLS_TCTI=device:/dev/tpmrm0
for i in $(seq 100); do [ -b @ROOT@ ] && break; sleep 0.1; done
cd /tmp
echo @BEGIN@
cryptsetup token export --token-id 0 @ROOT@ > token.json
for f in public duplicate seed; do
  sed -n "s/.*\\"cvm-$f\\": *\\"\\([^\\"]*\\)\\".*/\\1/p" token.json | base64 -d > $f
done
tpm2 createprimary -C o -g sha256 -G @SRKALG@ -a '@SRKATTR@' -c srk.ctx -Q
tpm2 import -C srk.ctx -u public -i duplicate -s seed -r private -Q
tpm2 flushcontext -t
tpm2 load -C srk.ctx -u public -r private -c sealed.ctx -Q
tpm2 flushcontext -t
for p in @PCRLIST@; do
  echo "@PCR@ sha256 $p $(cat /sys/class/tpm/tpm0/pcr-sha256/$p)"
done
tpm2 startauthsession --policy-session -S session.ctx
tpm2 policypcr -S session.ctx -l sha256:@PCRCOMMA@ -Q
if tpm2 unseal -c sealed.ctx -p session:session.ctx -o key 2> unseal.err; then
  if cryptsetup open --key-file key @ROOT@ root; then
    echo "@OPENED@ $(head -c @WORKLOAD@ /dev/mapper/root | head -n 1)"
  else
    echo "CVM-OPEN-FAILED"
  fi
else
  echo "@REFUSED@ $(cat unseal.err | tr '\\n' ' ')"
fi
echo @DONE@
poweroff -f
"""


def init_script(pcrs: tuple[int, ...]) -> str:
    """``/init`` for a root sealed to the sha256 ``pcrs``."""
    if not pcrs:
        raise FormatError("the initramfs needs at least one sealed PCR")
    values = {
        "@ROOT@": ROOT_DEVICE, "@BEGIN@": MARK_BEGIN, "@SRKALG@": SRK_ALGORITHM,
        "@SRKATTR@": SRK_ATTRIBUTES, "@PCRLIST@": " ".join(map(str, pcrs)),
        "@PCRCOMMA@": ",".join(map(str, pcrs)), "@PCR@": MARK_PCR, "@OPENED@": MARK_OPENED,
        "@REFUSED@": MARK_REFUSED, "@DONE@": MARK_DONE, "@WORKLOAD@": str(WORKLOAD_BYTES),
    }
    text = INIT_TEMPLATE
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def find_tool(name: str) -> Path:
    """The path of an installed tool (also in /usr/sbin and /sbin)."""
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None)
    if found is None:
        raise ExternalToolError(f"{name} is not installed (needed to build the initramfs)")
    return Path(found)


def libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library ``binaries`` load (and the loader), as ``ldd`` resolves them."""
    found: set[Path] = set()
    ldd = find_tool("ldd")
    for binary in binaries:
        done = subprocess.run([str(ldd), str(binary)], capture_output=True, text=True,
                              check=False)
        if done.returncode:
            raise ExternalToolError(f"ldd {binary}: {done.stderr.strip()}")
        for line in done.stdout.splitlines():
            if "=> not found" in line:  # ldd exits 0: the initramfs would lack it
                raise ExternalToolError(f"ldd {binary}: {line.split()[0]} is not found")
            match = re.search(r"(/\S+) \(0x", line)
            if match:
                found.add(Path(match.group(1)))
    return found


class PackageFiles(Protocol):
    """A package's files by name (``lib/modules/…``), each read checked
    (:class:`cvm.image.debian_packages.CheckedPackage`)."""

    def names(self) -> list[str]: ...

    def read(self, name: str) -> bytes: ...


def module_files(kernel: PackageFiles, name: str) -> list[str]:
    """The package's files of the kernel module ``name`` (``lib/modules/*/kernel/**/NAME.ko``)."""
    return [path for path in kernel.names()
            if (parts := path.split("/"))[:2] == ["lib", "modules"] and len(parts) > 4
            and parts[3] == "kernel" and parts[-1] == f"{name}.ko"]


def module_order(kernel: PackageFiles,
                 wanted: tuple[str, ...] = MODULES) -> list[tuple[str, bytes]]:
    """``wanted`` and every module they depend on (their ``.modinfo`` ``depends=``), each after
    its dependencies, with its bytes (each read once); ``kernel`` is the kernel's package."""
    order: list[tuple[str, bytes]] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        if any(name == done for done, _ in order):
            return
        if name in chain:
            raise FormatError(f"kernel module {name}: circular dependency {' -> '.join(chain)}")
        paths = module_files(kernel, name)
        if len(paths) != 1:
            raise FormatError(f"kernel module {name}: {len(paths)} files in the kernel's "
                              "package under lib/modules/*/kernel, expected one")
        data = kernel.read(paths[0])
        depends = [value for key, value in modinfo(data, paths[0]) if key == "depends"]
        if len(depends) != 1:
            raise FormatError(f"{paths[0]}: {len(depends)} depends= in its .modinfo, "
                              "expected one")
        for dependency in filter(None, depends[0].split(",")):
            add(dependency, (*chain, name))
        order.append((name, data))

    for name in wanted:
        add(name, ())
    return order


def _with_parents(files: dict[str, CpioEntry]) -> list[CpioEntry]:
    folders: dict[str, CpioEntry] = {}
    for name in files:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            folders.setdefault(folder, CpioEntry.directory(folder))
    return [*folders.values(), *(e for n, e in files.items() if n not in folders)]


def sealed_initramfs(busybox: bytes, kernel: PackageFiles, pcrs: tuple[int, ...]) -> bytes:
    """The gzip-compressed newc archive (see the module docstring)."""
    tpm2, cryptsetup = find_tool("tpm2"), find_tool("cryptsetup")
    if not TCTI_LIBRARY.exists():
        raise ExternalToolError(f"{TCTI_LIBRARY} is missing (package libtss2-tcti-device0)")
    files: dict[str, CpioEntry] = {
        "bin/busybox": CpioEntry.file("bin/busybox", busybox, 0o755),
        "init": CpioEntry.file("init", init_script(pcrs).encode(), 0o755),
        "usr/bin/tpm2": CpioEntry.file("usr/bin/tpm2", tpm2.read_bytes(), 0o755),
        "usr/sbin/cryptsetup": CpioEntry.file("usr/sbin/cryptsetup", cryptsetup.read_bytes(),
                                              0o755),
    }
    for library in sorted(libraries([tpm2, cryptsetup, TCTI_LIBRARY]) | {TCTI_LIBRARY}):
        name = str(library).lstrip("/")
        files[name] = CpioEntry.file(name, library.read_bytes(), 0o755)
    order = module_order(kernel)
    for module, data in order:
        files[f"modules/{module}.ko"] = CpioEntry.file(f"modules/{module}.ko", data)
    files["modules/order"] = CpioEntry.file("modules/order",
                                            " ".join(m for m, _ in order).encode())
    for folder in ("proc", "sys", "dev", "tmp", "run"):
        files[folder] = CpioEntry.directory(folder)
    archive = CpioArchive(tuple(_with_parents(files)))
    return gzip.compress(archive.to_bytes(), compresslevel=1, mtime=0)
