"""The attacks on the boot files, one cell at a time on a freshly booted VM: each outcome as
expected with the refusal it reports, and the proof that the attack acted — the file on the ESP
(or the varstore) as the host left it for the boot — so that the stage named refused the
host's file and not the owner's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cvm.formats.cpio import CpioArchive
from cvm.formats.uefi.varstore import Varstore
from cvm.hardware.vm import Mode
from cvm.host.adversary import boot_files
from cvm.host.adversary.boot_files import (
    EXFILTRATING_INIT,
    GRUB,
    GRUB_CFG,
    INITRD,
    KERNEL,
    LOADER,
    host_image,
    judge_boot,
    manifest,
    mechanism_of_refusal,
    read_esp_file,
)
from cvm.host.adversary.catalog import by_name
from cvm.host.adversary.lab import BootReport
from cvm.host.adversary.threat import MODES, Attack, Mechanism, Observed, Verdict
from cvm.scenarios.boot_lab import BootLab

Labs = Callable[[Mode], BootLab]

LAB_SEED = 70  # the lab bundles' and the VMs' randomness (tests/adversary/conftest.py)

NO_SIGNER = ("no matching signer in db, MokListRT or the vendor certificate; database db, "
             "MokListRT")
PCRS = ("initramfs: initramfs: the vTPM refused to unseal the root key of any of 1 token(s) "
        "(the PCRs differ from the sealed policy): TPM command UNSEAL failed: "
        "TPM_RC_POLICY_FAIL (session 1)")
DETAILS = {
    "unsigned-shim": "firmware: firmware refused \\EFI\\BOOT\\BOOTX64.EFI: refused (unsigned "
                     "and its hash is not in db; database db)",
    "foreign-signed-grub": f"firmware: shim refused \\EFI\\BOOT\\grubx64.efi: refused "
                           f"({NO_SIGNER})",
    "unsigned-kernel": f"firmware: shim refused /vmlinuz: refused ({NO_SIGNER})",
    "dbx-revoked-shim": "firmware: firmware refused \\EFI\\BOOT\\BOOTX64.EFI: refused (the "
                        "image's sha256 hash is in dbx; database dbx)",
    "sbat-revoked-grub": "firmware: shim refused \\EFI\\BOOT\\grubx64.efi: refused (revoked "
                         "SBAT component grub: generation 2 < 3 (SbatLevel 2023012900); "
                         "database SbatLevel)",
    "edit-grub-cfg": PCRS,
    "cmdline-init-sh": PCRS,
    "exfiltrating-initramfs": PCRS,
    "foreign-esp": "firmware: firmware refused \\EFI\\BOOT\\BOOTX64.EFI: refused (no matching "
                   "signer: no certificate or hash in db verifies the image; database db)",
    "secure-boot-off": PCRS,
}


@pytest.mark.parametrize("mode", MODES, ids=[m.value for m in MODES])
@pytest.mark.parametrize("attack", boot_files.ATTACKS, ids=[a.name for a in boot_files.ATTACKS])
def test_each_attack_as_expected_in_each_mode(attack: Attack, mode: Mode, labs: Labs) -> None:
    observed = attack.perform(labs(mode))
    assert observed.matches(attack.expected(mode)), (str(observed), observed.detail)
    assert observed.detail == DETAILS[attack.name]


def _perform(lab: BootLab, name: str) -> Observed:
    attack = by_name(name)
    observed = attack.perform(lab)
    assert observed.matches(attack.expected(lab.mode)), (name, str(observed), observed.detail)
    return observed


def _esp(lab: BootLab, path: str) -> bytes:
    return read_esp_file(lab.bundle(), path)


def test_an_honest_boot_opens_the_root(labs: Labs) -> None:
    """The positive control: the owner's files as handed over boot and unseal, so the refusals
    below are the host's changes' doing."""
    report = labs(Mode.SEV_SNP).boot()
    assert report.booted and report.unsealed and report.workload, report
    assert boot_files.judge_boot(report) == Observed(
        Verdict.SUCCEEDED, "booted and opened the encrypted root")


@pytest.mark.parametrize(("name", "path", "made"), [
    ("unsigned-shim", LOADER, lambda lab: host_image("shim")),
    ("unsigned-kernel", KERNEL, lambda lab: host_image("kernel")),
    ("foreign-signed-grub", GRUB, lambda lab: read_esp_file(lab.foreign_bundle(), GRUB)),
    ("dbx-revoked-shim", LOADER, lambda lab: (lab.old_release() / "shimx64.efi").read_bytes()),
    ("sbat-revoked-grub", GRUB, lambda lab: (lab.old_release() / "grubx64.efi").read_bytes()),
])
def test_the_host_file_is_on_the_esp(name: str, path: str, made: Callable[[BootLab], bytes],
                                     labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    before = _esp(lab, path)
    _perform(lab, name)
    assert _esp(lab, path) == made(lab) != before


def test_host_images_are_unsigned_pe_images_of_their_own() -> None:
    shim, kernel = host_image("shim"), host_image("kernel")
    assert shim[:2] == b"MZ" and shim != kernel
    assert b"the host's shim" in shim and b"the host's kernel" in kernel


def test_edit_grub_cfg_adds_one_command_first(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    before = _esp(lab, GRUB_CFG)
    _perform(lab, "edit-grub-cfg")
    assert _esp(lab, GRUB_CFG) == b"set debug=all\n" + before


def test_cmdline_init_sh_appends_to_every_linux_line(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    before = _esp(lab, GRUB_CFG).decode().splitlines()
    _perform(lab, "cmdline-init-sh")
    after = _esp(lab, GRUB_CFG).decode()
    assert after.endswith("\n")
    lines = after.splitlines()
    assert len(lines) == len(before)
    changed = [(old, new) for old, new in zip(before, lines, strict=True) if old != new]
    assert changed and all(old.strip().startswith("linux ") and new == old + " init=/bin/sh"
                           for old, new in changed)
    assert all(old in dict(changed) for old in before if old.strip().startswith("linux "))


def test_exfiltrating_initramfs_replaces_only_init(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    before = CpioArchive.parse(_esp(lab, INITRD)).entries
    _perform(lab, "exfiltrating-initramfs")
    after = CpioArchive.parse(_esp(lab, INITRD)).entries
    assert len(after) == len(before)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    [(old, new)] = changed
    assert old.name.lstrip("./") == new.name.lstrip("./") == "init"
    assert new.data == EXFILTRATING_INIT.encode() and new.ino == old.ino
    assert new.mode & 0o777 == 0o755


def test_foreign_esp_is_the_other_owners_esp(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    before = _esp(lab, LOADER)
    ours, theirs = lab.bundle(), lab.foreign_bundle()
    esp, other = manifest(ours)["disk"]["esp"], manifest(theirs)["disk"]["esp"]
    size = min(int(esp["size"]), int(other["size"]))
    disk = (ours / "disk.img").read_bytes()
    _perform(lab, "foreign-esp")
    after = (ours / "disk.img").read_bytes()
    mine = after[int(esp["offset"]):][:size]
    assert mine == (theirs / "disk.img").read_bytes()[int(other["offset"]):][:size]
    # only the ESP was swapped: the rest of the disk (the encrypted root) is untouched
    end = int(esp["offset"]) + size
    assert len(after) == len(disk) and after[end:] == disk[end:]
    assert after[:int(esp["offset"])] == disk[:int(esp["offset"])]
    assert _esp(lab, LOADER) == read_esp_file(theirs, LOADER) != before


def test_secure_boot_off_hands_over_an_empty_varstore(labs: Labs) -> None:
    lab = labs(Mode.SEV_SNP)
    path = lab.bundle() / str(manifest(lab.bundle())["firmware"]["vars"])
    before = path.read_bytes()
    _perform(lab, "secure-boot-off")
    assert path.read_bytes() == Varstore.empty_4m().to_bytes() != before


# -- reading the refusal: each of the words a mechanism is told by, alone ---------------------
@pytest.mark.parametrize(("stage", "error", "mechanism"), [
    ("initramfs", "unseal: TPM_RC_INTEGRITY", Mechanism.TPM_OBJECT),
    ("kernel", "unseal failed: TPM_RC_POLICY_FAIL (session 1)", Mechanism.PCR_POLICY),
    ("initramfs", "the PCRs differ", Mechanism.PCR_POLICY),
    ("kernel", "the PCRs differ", None),
    ("initramfs", "no such device", None),
    ("svsm", "a rollback of the state", Mechanism.ROLLBACK_COUNTER),
    ("svsm", "an old copy of the state", Mechanism.ROLLBACK_COUNTER),
    ("svsm", "the sealed blob does not authenticate", Mechanism.STATE_SEALING),
    ("svsm", "the state file is short", Mechanism.STATE_SEALING),
    ("svsm", "no report from the PSP", Mechanism.ATTESTATION),
    ("svsm", "the measurement differs", Mechanism.ATTESTATION),
    ("svsm", "out of memory", None),
    ("kernel", "a rollback of the state", None),
    ("kernel", "the measurement differs", None),
    ("initramfs", "LUKS2 header checksum mismatch", Mechanism.LUKS2_HEADER),
    ("initramfs", "keyslot 0 digest does not match", Mechanism.LUKS2_HEADER),
    ("initramfs", "the digest is short", None),
    ("initramfs", "keyslot 0 is missing", None),
    ("firmware", "refused (hash in dbx)", Mechanism.DBX),
    ("firmware", "refused (SBAT generation 2 < 3)", Mechanism.SBAT),
    ("firmware", "shim refused grub", Mechanism.SHIM),
    ("firmware", "firmware refused BOOTX64.EFI", Mechanism.SECURE_BOOT),
    ("firmware", "out of memory", None),
    ("shim", "hash in dbx", None),
    ("grub", "sbat", None),
    ("grub", "shim refused grub", None),
    ("kernel", "firmware refused BOOTX64.EFI", None),
])
def test_each_word_a_refusal_is_read_by(stage: str, error: str,
                                        mechanism: Mechanism | None) -> None:
    report = BootReport(False, False, False, stage, error)
    assert mechanism_of_refusal(report) is mechanism
    observed = judge_boot(report)
    if mechanism is None:
        assert observed == Observed(Verdict.BLOCKED, f"unexplained outcome: {stage}: {error}")
    else:
        assert observed == Observed(Verdict.BLOCKED, f"{stage}: {error}", mechanism)


def test_judge_boot_without_an_error_or_a_stage() -> None:
    assert judge_boot(BootReport(True, True, False)) == Observed(
        Verdict.SUCCEEDED, "unexplained outcome: boot")
    assert judge_boot(BootReport(True, False, True, "initramfs")) == Observed(
        Verdict.SUCCEEDED, "unexplained outcome: initramfs")
    assert judge_boot(BootReport(False, True, True, "", "")) == Observed(
        Verdict.SUCCEEDED, "booted and opened the encrypted root")
