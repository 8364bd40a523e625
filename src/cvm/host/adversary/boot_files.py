"""Attacks on the boot files: the ESP is in the clear, the varstore is the host's file.

The host may put anything on the ESP — its own unsigned images, images another key signed, an
older release it kept, an edited ``grub.cfg`` or its own initramfs — and may hand the firmware
another varstore. What stops each one is read off the boot's trace: the stage that refused the
boot and the error it raised, or, when everything booted, whether the vTPM released the volume
key (the token is sealed to the PCRs the owner predicted).

The ESP is edited in place inside the disk image with ``mcopy`` at the partition's offset from
``image.json`` (:mod:`cvm.disk.esp`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from cvm.disk.esp import run_tool
from cvm.formats.cpio import CpioArchive, CpioEntry
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.varstore import Varstore
from cvm.host.adversary.lab import BootReport, Lab
from cvm.host.adversary.threat import (
    Family,
    Mechanism,
    Observed,
    Verdict,
    blocked,
    by,
    declare,
    succeeded,
)

LOADER = "/EFI/BOOT/BOOTX64.EFI"
GRUB = "/EFI/BOOT/grubx64.efi"
GRUB_CFG = "/EFI/BOOT/grub.cfg"
KERNEL = "/vmlinuz"
INITRD = "/initrd.img"
EXFILTRATING_INIT = (
    "#!/bin/sh\n# the host's initramfs: unseal the volume key, then send it out\n"
    "systemd-cryptsetup attach root /dev/disk/by-partlabel/root - tpm2-device=auto\n"
    "dmsetup table --showkeys root > /dev/ttyS0\nexec /bin/sh\n"
)


def manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's ``image.json`` (the host has it: it describes the files it stores)."""
    document = json.loads((bundle / "image.json").read_text())
    assert isinstance(document, dict)
    return document


def esp_offset(bundle: Path) -> int:
    return int(manifest(bundle)["disk"]["esp"]["offset"])


def read_esp_file(bundle: Path, path: str) -> bytes:
    """The bytes of ``path`` on the ESP inside ``bundle``'s disk image."""
    disk = bundle / "disk.img"
    with tempfile.TemporaryDirectory(prefix="cvm-host-") as scratch:
        target = Path(scratch) / "file"
        run_tool("mcopy", "-i", f"{disk}@@{esp_offset(bundle)}", "::/" + path.lstrip("/"),
                 str(target))
        return target.read_bytes()


def write_esp_file(bundle: Path, path: str, data: bytes) -> None:
    """Overwrite ``path`` on the ESP inside ``bundle``'s disk image."""
    disk = bundle / "disk.img"
    with tempfile.TemporaryDirectory(prefix="cvm-host-") as scratch:
        source = Path(scratch) / "file"
        source.write_bytes(data)
        run_tool("mcopy", "-o", "-i", f"{disk}@@{esp_offset(bundle)}", str(source),
                 "::/" + path.lstrip("/"))


def host_image(label: str) -> bytes:
    """A PE image of the host's own making, unsigned."""
    code = (f"the host's {label}".encode() + b"\xcc" * 64)[:256].ljust(256, b"\x90")
    return build_pe([SectionSpec(".text", code, CODE)])


def mechanism_of_refusal(report: BootReport) -> Mechanism | None:
    """Which protection refused a boot or an unseal, read off the stage that refused and the
    error it raised (the TPM response code first: it is the most specific)."""
    text = report.error.lower()
    stage = report.refused_by
    if "tpm_rc_integrity" in text:
        return Mechanism.TPM_OBJECT  # the sealed object does not load under these seeds
    if "tpm_rc_policy" in text or ("pcr" in text and stage == "initramfs"):
        return Mechanism.PCR_POLICY
    if stage == "svsm":
        if "rollback" in text or "old copy" in text:
            return Mechanism.ROLLBACK_COUNTER
        if "does not authenticate" in text or "state file" in text:
            return Mechanism.STATE_SEALING
        if "report" in text or "measurement" in text:
            return Mechanism.ATTESTATION
    if "checksum" in text or ("digest" in text and "keyslot" in text):
        return Mechanism.LUKS2_HEADER
    if stage == "firmware":
        if "dbx" in text:
            return Mechanism.DBX
        if "sbat" in text:
            return Mechanism.SBAT
        if "shim refused" in text:
            return Mechanism.SHIM
        if "firmware refused" in text:
            return Mechanism.SECURE_BOOT
    return None


def judge_boot(report: BootReport) -> Observed:
    """Succeeded when the volume key was released and the workload ran; else what stopped it."""
    if report.unsealed and report.workload:
        return succeeded("booted and opened the encrypted root")
    mechanism = mechanism_of_refusal(report)
    where = report.refused_by or "boot"
    detail = f"{where}: {report.error}" if report.error else where
    if mechanism is None:  # matches no expectation: the matrix shows it as broken
        verdict = Verdict.SUCCEEDED if report.booted else Verdict.BLOCKED
        return Observed(verdict, f"unexplained outcome: {detail}")
    return blocked(mechanism, detail)


ALL = (by(Mechanism.SECURE_BOOT),) * 4
SHIM_ALL = (by(Mechanism.SHIM),) * 4
PCRS_ALL = (by(Mechanism.PCR_POLICY),) * 4


def unsigned_shim(lab: Lab) -> Observed:
    write_esp_file(lab.bundle(), LOADER, host_image("shim"))
    return judge_boot(lab.boot())


def foreign_signed_grub(lab: Lab) -> Observed:
    write_esp_file(lab.bundle(), GRUB, read_esp_file(lab.foreign_bundle(), GRUB))
    return judge_boot(lab.boot())


def unsigned_kernel(lab: Lab) -> Observed:
    write_esp_file(lab.bundle(), KERNEL, host_image("kernel"))
    return judge_boot(lab.boot())


def dbx_revoked_shim(lab: Lab) -> Observed:
    write_esp_file(lab.bundle(), LOADER, (lab.old_release() / "shimx64.efi").read_bytes())
    return judge_boot(lab.boot())


def sbat_revoked_grub(lab: Lab) -> Observed:
    write_esp_file(lab.bundle(), GRUB, (lab.old_release() / "grubx64.efi").read_bytes())
    return judge_boot(lab.boot())


def edit_grub_cfg(lab: Lab) -> Observed:
    text = read_esp_file(lab.bundle(), GRUB_CFG).decode()
    write_esp_file(lab.bundle(), GRUB_CFG, ("set debug=all\n" + text).encode())
    return judge_boot(lab.boot())


def cmdline_init_sh(lab: Lab) -> Observed:
    text = read_esp_file(lab.bundle(), GRUB_CFG).decode()
    lines = [line + " init=/bin/sh" if line.strip().startswith("linux ") else line
             for line in text.splitlines()]
    write_esp_file(lab.bundle(), GRUB_CFG, ("\n".join(lines) + "\n").encode())
    return judge_boot(lab.boot())


def exfiltrating_initramfs(lab: Lab) -> Observed:
    genuine = CpioArchive.parse(read_esp_file(lab.bundle(), INITRD))
    entries = tuple(
        CpioEntry.file("init", EXFILTRATING_INIT.encode(), 0o755, ino=entry.ino)
        if entry.name.lstrip("./") == "init" else entry
        for entry in genuine.entries
    )
    write_esp_file(lab.bundle(), INITRD, CpioArchive(entries).to_bytes())
    return judge_boot(lab.boot())


def foreign_esp(lab: Lab) -> Observed:
    ours, theirs = lab.bundle(), lab.foreign_bundle()
    esp = manifest(ours)["disk"]["esp"]
    other = manifest(theirs)["disk"]["esp"]
    with (theirs / "disk.img").open("rb") as source:
        source.seek(int(other["offset"]))
        data = source.read(min(int(esp["size"]), int(other["size"])))
    with (ours / "disk.img").open("r+b") as target:
        target.seek(int(esp["offset"]))
        target.write(data)
    return judge_boot(lab.boot())


def secure_boot_off(lab: Lab) -> Observed:
    vars_path = lab.bundle() / str(manifest(lab.bundle())["firmware"]["vars"])
    vars_path.write_bytes(Varstore.empty_4m().to_bytes())
    return judge_boot(lab.boot())


# -- the declarations: the expected outcome in plain, sev, sev-es and sev-snp -------------------
ATTACKS = (
    declare(
        "unsigned-shim", Family.BOOT_FILES, "replace shim (BOOTX64.EFI) with an unsigned image",
        ALL,
        unsigned_shim,
    ),
    declare(
        "foreign-signed-grub", Family.BOOT_FILES,
        "replace GRUB with one signed by another owner's vendor key", SHIM_ALL,
        foreign_signed_grub,
    ),
    declare(
        "unsigned-kernel", Family.BOOT_FILES, "replace the kernel with an unsigned image",
        SHIM_ALL,
        unsigned_kernel,
    ),
    declare(
        "dbx-revoked-shim", Family.BOOT_FILES,
        "boot the previous release's shim (owner-signed, since revoked in dbx)",
        (by(Mechanism.DBX),) * 4,
        dbx_revoked_shim,
    ),
    declare(
        "sbat-revoked-grub", Family.BOOT_FILES,
        "boot the previous release's GRUB (vendor-signed, SBAT generation since revoked)",
        (by(Mechanism.SBAT),) * 4,
        sbat_revoked_grub,
    ),
    declare(
        "edit-grub-cfg", Family.BOOT_FILES, "edit grub.cfg (an extra command before booting)",
        PCRS_ALL,
        edit_grub_cfg,
    ),
    declare(
        "cmdline-init-sh", Family.BOOT_FILES,
        "append init=/bin/sh to the kernel command line in grub.cfg", PCRS_ALL,
        cmdline_init_sh,
    ),
    declare(
        "exfiltrating-initramfs", Family.BOOT_FILES,
        "replace the initramfs with one whose /init would send the volume key out", PCRS_ALL,
        exfiltrating_initramfs,
    ),
    declare(
        "foreign-esp", Family.BOOT_FILES, "swap in the whole ESP of another owner's image", ALL,
        foreign_esp,
    ),
    declare(
        "secure-boot-off", Family.BOOT_FILES,
        "hand the firmware an empty varstore: Secure Boot off, no db, no dbx",
        PCRS_ALL,
        secure_boot_off,
    ),
)
