"""The owner's boot chain as real PE/COFF images: a UKI, or shim → GRUB (+ grub.cfg) → kernel.

Each image is laid out by :func:`cvm.formats.pe.builder.build_pe` with real contents (its code
and data are derived from its name and version, so changing any byte changes its Authenticode
hash) and signed by the owner (:mod:`cvm.image.signing`):

* **UKI** (systemd ``ukify``): ``.text`` (the stub), ``.osrel``, ``.cmdline``, ``.linux`` (the
  kernel image), ``.initrd``, and for signed PCR policies ``.pcrpkey`` (the PEM public key) and
  ``.pcrsig`` (systemd-measure's JSON ``{"sha256": [{"pcrs", "pkfp", "pol", "sig"}]}``), signed
  by the db key. ``.pcrsig`` is not measured (systemd 252 ``unified_sections``), so it is added
  after the PCR 11 value is known.
* **shim** (rhboot/shim 16): ``.text``, ``.sbat``, ``.sbatlevel`` (previous and latest
  SbatLevel), ``.vendor_cert`` (the owner's vendor certificate); signed by the db key.
* **GRUB** (2.06 EFI core image): ``.text``, ``mods`` (module info ``mimg`` with the prefix
  ``/EFI/BOOT`` and no embedded config, so GRUB reads and measures ``grub.cfg`` from the ESP),
  ``.sbat`` (``grub,N``); signed by the vendor key.
* **kernel**: ``.text`` and ``.rodata`` (the version banner); signed by the vendor key when
  shim verifies it, unsigned inside a UKI (the UKI's signature covers it).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cvm.crypto.tpm_keys import public_key_fingerprint
from cvm.crypto.x509_edk2 import PrivateKey, der, sign_message
from cvm.errors import UsageError
from cvm.formats.pcr_signature import PcrSignatureEntry, pcr_signature_bytes
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.sbat import SbatLevel, SbatLevelSection
from cvm.formats.pe.vendor_cert import VendorCertSection
from cvm.formats.tcg.algorithm import algorithm_by_name
from cvm.formats.tcg.replay import extend, initial_value
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.boot.uki import UKI_PCR, uki_sections
from cvm.image.keys import OwnerKeys
from cvm.vtpm.policy import PolicyDigest

LOADER = "/EFI/BOOT/BOOTX64.EFI"
GRUB_PATH = "/EFI/BOOT/grubx64.efi"
GRUB_CFG_PATH = "/EFI/BOOT/grub.cfg"
KERNEL_PATH = "/vmlinuz"
INITRD_PATH = "/initrd.img"
GRUB_PREFIX = "/EFI/BOOT"
KERNEL_VERSION = "6.1.0-cvm"
OS_RELEASE = 'ID=cvm\nNAME="cvm guest"\nVERSION_ID=1\nPRETTY_NAME="cvm confidential guest"\n'
PHASES = ("", "enter-initrd")
SBAT_HEADER = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
SHIM_SBAT = SBAT_HEADER + "shim,4,UEFI shim,shim,1,https://github.com/rhboot/shim\n"
SHIM_SBAT_LEVEL = SbatLevelSection(
    SbatLevel("2023012900", (("shim", 2), ("grub", 3), ("grub.debian", 4))),
    SbatLevel("2024010900", (("shim", 4), ("grub", 3), ("grub.debian", 4))),
)
GRUB_SBAT_GENERATION = 4
GRUB_MODULE_MAGIC = 0x676D696D
OBJ_TYPE_PREFIX = 3
TEXT_SIZE = 0x4000


def _code(label: str) -> bytes:
    """Deterministic code bytes for a stage, ending in ``ret``."""
    return hashlib.shake_256(f"cvm {label}".encode()).digest(TEXT_SIZE - 1) + b"\xc3"


def make_kernel(version: str = KERNEL_VERSION) -> bytes:
    """A Linux-like EFI-stub kernel image (unsigned)."""
    banner = f"Linux version {version} (cvm@owner) #1 SMP PREEMPT_DYNAMIC\0".encode()
    return build_pe([SectionSpec(".text", _code(f"kernel {version}"), CODE),
                     SectionSpec(".rodata", banner)])


def make_uki(kernel: bytes, cmdline: str, initrd: bytes, os_release: str = OS_RELEASE,
             pcrpkey: bytes | None = None, pcrsig: bytes | None = None) -> bytes:
    """A unified kernel image as ukify lays it out (unsigned)."""
    sections = [
        SectionSpec(".text", _code("systemd-stub 252"), CODE),
        SectionSpec(".osrel", os_release.encode()),
        SectionSpec(".cmdline", cmdline.encode() + b"\0"),
        SectionSpec(".linux", kernel),
        SectionSpec(".initrd", initrd),
    ]
    if pcrpkey is not None:
        sections.append(SectionSpec(".pcrpkey", pcrpkey))
    if pcrsig is not None:
        sections.append(SectionSpec(".pcrsig", pcrsig))
    return build_pe(sections)


def make_shim(vendor_certificate_der: bytes, sbat: str = SHIM_SBAT,
              levels: SbatLevelSection = SHIM_SBAT_LEVEL) -> bytes:
    """shim with the owner's vendor certificate built in (unsigned)."""
    return build_pe([
        SectionSpec(".text", _code("shim 16.1"), CODE),
        SectionSpec(".sbat", sbat.encode()),
        SectionSpec(".sbatlevel", levels.to_bytes()),
        SectionSpec(".vendor_cert", VendorCertSection(vendor_certificate_der, b"").to_bytes()),
    ])


def grub_sbat(generation: int = GRUB_SBAT_GENERATION) -> str:
    return SBAT_HEADER + (f"grub,{generation},Free Software Foundation,grub,2.06,"
                          "https://www.gnu.org/software/grub/\n")


def make_grub(prefix: str = GRUB_PREFIX, sbat_generation: int = GRUB_SBAT_GENERATION) -> bytes:
    """A GRUB EFI core image with ``prefix`` and no embedded config (unsigned)."""
    body = prefix.encode() + b"\0"
    body += bytes(-len(body) % 8)
    modules = struct.pack("<II", OBJ_TYPE_PREFIX, 8 + len(body)) + body
    info = struct.pack("<IIQQ", GRUB_MODULE_MAGIC, 0, 24, 24 + len(modules))
    return build_pe([SectionSpec(".text", _code("grub 2.06"), CODE),
                     SectionSpec("mods", info + modules),
                     SectionSpec(".sbat", grub_sbat(sbat_generation).encode())])


def kernel_cmdline(luks_uuid: str) -> str:
    return f"console=ttyS0 root=/dev/mapper/root rd.luks.uuid={luks_uuid} ro"


def grub_cfg(cmdline: str) -> str:
    """The one-entry configuration GRUB reads from the ESP (measured into PCR 8 and 9)."""
    return ("set default=0\nset timeout=0\nmenuentry 'cvm' {\n"
            f"  linux {KERNEL_PATH} {cmdline}\n  initrd {INITRD_PATH}\n}}\n")


def pcr11_values(uki: bytes) -> dict[str, bytes]:
    """The sha256 PCR 11 value per systemd-pcrphase phase ("" = at ExitBootServices)."""
    algorithm = algorithm_by_name("sha256")
    value = initial_value(UKI_PCR, algorithm)
    for name, contents in uki_sections(uki):
        value = extend(algorithm, value, algorithm.digest((name + "\0").encode("ascii")))
        value = extend(algorithm, value, algorithm.digest(contents))
    values = {"": value}
    for phase in PHASES[1:]:
        value = extend(algorithm, value, algorithm.digest(phase.encode()))
        values[phase] = value
    return values


def pcr_signature(uki: bytes, key: PrivateKey, public_pem: bytes) -> bytes:
    """systemd-measure's ``.pcrsig`` JSON: one signed PolicyPCR(sha256:11) per phase, each
    naming the key by systemd's fingerprint of it."""
    fingerprint = public_key_fingerprint(public_pem)
    selection = PcrSelectionList.of("sha256", [UKI_PCR])
    entries = []
    for value in pcr11_values(uki).values():
        policy = PolicyDigest.start().pcr(selection, [value]).value
        entries.append(PcrSignatureEntry("sha256", (UKI_PCR,), fingerprint, policy,
                                         sign_message(key, policy, "sha256")))
    return pcr_signature_bytes(tuple(entries))


@dataclass(frozen=True)
class Stage:
    """One boot stage as it lies on the ESP."""

    name: str
    path: str
    data: bytes
    signer: str | None

    @property
    def authenticode_sha256(self) -> bytes | None:
        return image_digest(self.data, "sha256") if self.data[:2] == b"MZ" else None


@dataclass(frozen=True)
class ChainBuild:
    """The ESP files of a chain, its stages in boot order, and the kernel command line."""

    chain: str
    stages: tuple[Stage, ...]
    cmdline: str

    @property
    def files(self) -> dict[str, bytes]:
        return {stage.path: stage.data for stage in self.stages if stage.path}


def build_chain(chain: str, keys: OwnerKeys, initrd: bytes, luks_uuid: str,
                signed_policy: bool, kernel: bytes | None = None) -> ChainBuild:
    """Build and sign the boot chain ``chain`` (``uki`` or ``shim-grub``)."""
    cmdline = kernel_cmdline(luks_uuid)
    linux = kernel if kernel is not None else make_kernel()
    if chain == "uki":
        public = keys.pcr_policy_public_pem() if signed_policy else None
        uki = make_uki(linux, cmdline, initrd, pcrpkey=public)
        if signed_policy:
            assert keys.pcr_policy is not None and public is not None
            uki = make_uki(linux, cmdline, initrd, pcrpkey=public,
                           pcrsig=pcr_signature(uki, keys.pcr_policy, public))
        return ChainBuild(chain, (Stage("uki", LOADER, keys.sign_db(uki), "db"),
                                  Stage("kernel", "", linux, None),
                                  Stage("initramfs", "", initrd, None)), cmdline)
    if chain != "shim-grub":
        raise UsageError(f"--chain: {chain!r} is not uki or shim-grub")
    if keys.vendor is None:
        raise UsageError("a shim-grub chain needs the owner's shim vendor key")
    if signed_policy:
        raise UsageError("signed PCR policies are for PCR 11 of a UKI: use --seal pcrs with "
                         "--chain shim-grub")
    shim = keys.sign_db(make_shim(der(keys.vendor.certificate)))
    stages = (
        Stage("shim", LOADER, shim, "db"),
        Stage("grub", GRUB_PATH, keys.sign_vendor(make_grub()), "vendor"),
        Stage("grub.cfg", GRUB_CFG_PATH, grub_cfg(cmdline).encode(), None),
        Stage("kernel", KERNEL_PATH, keys.sign_vendor(linux), "vendor"),
        Stage("initramfs", INITRD_PATH, initrd, None),
    )
    return ChainBuild(chain, stages, cmdline)
