"""Secure Boot and measured boot, end to end: the owner signs a UKI, predicts its PCRs, the
emulated firmware boots it, and the host edits the clear boot files on the ESP.

The owner's flow (ARCHITECTURE.md, flow 1): generate Secure Boot keys, build a unified kernel
image (kernel, initrd, command line in one signed PE), enroll PK/KEK/db in an OVMF varstore and
predict the PCRs a boot will produce. The boot (flow 3) runs the emulated firmware, which
verifies and measures every stage; the prediction must equal what the boot measured. The host
(flow 5) may change any file on the ESP: each edit is refused by Secure Boot, or — for what
Secure Boot does not cover — shows in the PCRs the disk key is sealed to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.errors import PolicyError
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.guids import EFI_CERT_X509, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.formats.uefi.variable import SECURE_BOOT_ATTRIBUTES, EfiVariable
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.image.pcr_prediction import predict
from cvm.image.signing import sign_pe
from cvm.wire import Guid

OWNER = Guid.parse("5c2d0b3e-9a8f-4c1e-8d7b-6a5f4e3d2c1b")
LOADER = "/EFI/BOOT/BOOTX64.EFI"
CMDLINE = "console=ttyS0 root=/dev/mapper/root ro"
SEALED_PCRS = (4, 7, 11)


@dataclass(frozen=True)
class OwnerImage:
    """What the owner built: the signed UKI, the varstore, and the predicted PCRs (sha256)."""

    uki: bytes
    varstore: Varstore
    predicted: dict[int, bytes]


@dataclass(frozen=True)
class BootOutcome:
    """One boot attempt: booted or refused (with why), and the PCRs it left."""

    attack: str
    booted: bool
    reason: str
    pcrs_match_prediction: bool


def _uki(kernel_text: bytes, cmdline: str) -> bytes:
    kernel = build_pe([SectionSpec(".text", kernel_text, CODE)], trailer=b"vmlinuz")
    return build_pe([
        SectionSpec(".text", b"\xc3" * 64, CODE),
        SectionSpec(".osrel", b"ID=cvm\nPRETTY_NAME=\"cvm demo\"\n"),
        SectionSpec(".cmdline", cmdline.encode() + b"\0"),
        SectionSpec(".linux", kernel),
        SectionSpec(".initrd", b"070701" + b"cvm initramfs".ljust(506, b"\0")),
    ])


def build_owner_image() -> OwnerImage:
    """Keys, a signed UKI, an enrolled varstore and the PCRs predicted for its boot."""
    pk_key, db_key = generate_rsa_key(), generate_rsa_key()
    pk = issue_certificate("cvm demo platform key", pk_key)
    db = issue_certificate("cvm demo signing key", db_key)
    store = Varstore.empty_4m()
    for name, vendor, cert in (
        ("PK", EFI_GLOBAL_VARIABLE, pk),
        ("KEK", EFI_GLOBAL_VARIABLE, pk),
        ("db", EFI_IMAGE_SECURITY_DATABASE, db),
    ):
        esl = SignatureDatabase((SignatureList.of(EFI_CERT_X509, OWNER, der(cert)),))
        store = store.set(EfiVariable(name, vendor, SECURE_BOOT_ATTRIBUTES, esl.to_bytes()))
    uki = sign_pe(_uki(b"\x90" * 256 + b"\xc3", CMDLINE), db_key, db)
    chain = BootChain(EspFiles({LOADER: uki}), store)
    predicted = predict(chain).values("sha256")
    return OwnerImage(uki, store, {pcr: predicted[pcr] for pcr in SEALED_PCRS})


def _boot(owner: OwnerImage, uki: bytes, varstore: Varstore, attack: str) -> BootOutcome:
    pcrs = SoftwarePcrBank(("sha256",))
    try:
        BootChain(EspFiles({LOADER: uki}), varstore).run(pcrs)
    except PolicyError as refused:
        text = str(refused)
        reason = text[text.find("(") + 1 : text.rfind(")")] if "(" in text else text
        return BootOutcome(attack, False, reason, False)
    live = {pcr: pcrs.read(pcr, "sha256") for pcr in SEALED_PCRS}
    changed = [str(pcr) for pcr in SEALED_PCRS if live[pcr] != owner.predicted[pcr]]
    if not changed:
        return BootOutcome(attack, True, "verified; PCRs equal the prediction", True)
    reason = f"booted, but PCR {', '.join(changed)} differ from the prediction"
    return BootOutcome(attack, True, reason, False)


def _patched(uki: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and old in uki
    return uki.replace(old, new, 1)


def _unsigned(owner: OwnerImage) -> tuple[bytes, Varstore]:
    return _uki(b"\xcc" * 257, CMDLINE + " init=/bin/sh"), owner.varstore


def _secure_boot_off(owner: OwnerImage) -> tuple[bytes, Varstore]:
    return _uki(b"\xcc" * 257, CMDLINE + " init=/bin/sh"), Varstore.empty_4m()


ATTACKS: dict[str, Callable[[OwnerImage], tuple[bytes, Varstore]]] = {
    "genuine boot": lambda owner: (owner.uki, owner.varstore),
    "host edits the kernel command line on the ESP": lambda owner: (
        _patched(owner.uki, b"root=/dev/mapper/root ro", b"root=/dev/mapper/root rw"),
        owner.varstore,
    ),
    "host patches one byte of the kernel": lambda owner: (
        _patched(owner.uki, b"\x90\x90\x90\xc3", b"\x90\x90\xcc\xc3"),
        owner.varstore,
    ),
    "host swaps in its own unsigned UKI": _unsigned,
    "host clears the varstore (Secure Boot off) and boots its UKI": _secure_boot_off,
}


# What each attempt must come to: (boots, PCRs equal the prediction).
EXPECTED: dict[str, tuple[bool, bool]] = {
    "genuine boot": (True, True),
    "host edits the kernel command line on the ESP": (False, False),
    "host patches one byte of the kernel": (False, False),
    "host swaps in its own unsigned UKI": (False, False),
    "host clears the varstore (Secure Boot off) and boots its UKI": (True, False),
}


def run_all(owner: OwnerImage) -> list[BootOutcome]:
    """Boot the genuine image, then each image the host tampered with."""
    return [_boot(owner, *make(owner), name) for name, make in ATTACKS.items()]


def attack_image(owner: OwnerImage, name: str) -> tuple[bytes, Varstore]:
    """The UKI and varstore the host presents in attempt ``name``."""
    return ATTACKS[name](owner)
