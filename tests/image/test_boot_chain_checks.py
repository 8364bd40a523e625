"""The owner's boot chain builder without a bundle: each chain booted by cvm's own firmware,
shim, GRUB and UKI stub with the owner's Secure Boot keys (and refused under anyone else's),
each stage's contents and signer, the UKI's PCR 11 values and its signed policies."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from cvm.crypto.tpm_keys import public_key_fingerprint
from cvm.crypto.x509_edk2 import der
from cvm.errors import PolicyError, UsageError
from cvm.formats.grub.core_image import GrubCoreImage
from cvm.formats.pcr_signature import parse_pcr_signature
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.sbat import SbatLevelSection
from cvm.formats.pe.vendor_cert import VendorCertSection
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.boot.chain import BootChain, BootResult
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.guest.boot.secureboot import as_database, verify_image
from cvm.guest.boot.uki import uki_sections
from cvm.image.boot_chain import (
    OS_RELEASE,
    SHIM_SBAT_LEVEL,
    TEXT_SIZE,
    ChainBuild,
    Stage,
    build_chain,
    grub_sbat,
    make_grub,
    make_kernel,
    make_shim,
    make_uki,
    pcr11_values,
)
from cvm.image.keys import OwnerKeys
from cvm.vtpm.policy import PolicyDigest

UUID = "0b7c1d7e-2f4a-4c3b-9d51-6a0e8f2b1c34"
CMDLINE = f"console=ttyS0 root=/dev/mapper/root rd.luks.uuid={UUID} ro"
INITRD = b"the owner's initramfs"
SBAT_HEADER = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"


@pytest.fixture(scope="module")
def keys() -> OwnerKeys:
    return OwnerKeys.generate(os.urandom)


@pytest.fixture(scope="module")
def strangers() -> OwnerKeys:
    return OwnerKeys.generate(os.urandom)


def _boot(build: ChainBuild, keys: OwnerKeys) -> tuple[BootResult, SoftwarePcrBank]:
    bank = SoftwarePcrBank(("sha256",))
    return BootChain(EspFiles(build.files), keys.varstore()).run(bank), bank


def _signed_by(image: bytes, keys: OwnerKeys) -> set[str]:
    assert keys.vendor is not None
    pairs = {"db": keys.db, "vendor": keys.vendor, "pk": keys.pk, "kek": keys.kek}
    return {name for name, pair in pairs.items()
            if verify_image(image, as_database([der(pair.certificate)])).allowed}


def _section(image: bytes, name: str) -> bytes:
    section = PeImage.parse(image).section(name)
    assert section is not None, name
    return section.loaded_data


@pytest.mark.parametrize("signed_policy", [False, True])
def test_a_uki_chain_boots_under_the_owners_keys_only(
        keys: OwnerKeys, strangers: OwnerKeys, signed_policy: bool) -> None:
    build = build_chain("uki", keys, INITRD, UUID, signed_policy)
    assert build.chain == "uki" and build.cmdline == CMDLINE
    assert [(s.name, s.path, s.signer) for s in build.stages] == [
        ("uki", "/EFI/BOOT/BOOTX64.EFI", "db"), ("kernel", "", None), ("initramfs", "", None)]
    uki, kernel, initrd = (s.data for s in build.stages)
    assert kernel == make_kernel() and initrd == INITRD
    assert build.files == {"/EFI/BOOT/BOOTX64.EFI": uki}
    assert _signed_by(uki, keys) == {"db"}
    result, bank = _boot(build, keys)
    assert result.stages == ("firmware", "uki", "linux")
    request = result.request
    assert (request.kernel, request.cmdline, request.initrd) == (kernel, CMDLINE, INITRD)
    assert bank.read(11, "sha256") == pcr11_values(uki)[""]
    sections = dict(uki_sections(uki))
    assert sections[".osrel"] == OS_RELEASE.encode()
    assert sections[".cmdline"] == CMDLINE.encode() + b"\0"
    assert sections[".linux"] == kernel and sections[".initrd"] == INITRD
    assert (".pcrpkey" in sections) is signed_policy
    if signed_policy:
        assert sections[".pcrpkey"] == keys.pcr_policy_public_pem()
    with pytest.raises(PolicyError):
        _boot(build, strangers)


def test_the_signed_policies_are_the_pcr_11_values_signed_by_the_policy_key(
        keys: OwnerKeys) -> None:
    (uki, *_) = (s.data for s in build_chain("uki", keys, INITRD, UUID, True).stages)
    public = keys.pcr_policy_public_pem()
    key = load_pem_public_key(public)
    assert isinstance(key, rsa.RSAPublicKey)
    entries = parse_pcr_signature(_section(uki, ".pcrsig"))
    values = pcr11_values(uki)
    assert list(values) == ["", "enter-initrd"]
    selection = PcrSelectionList.of("sha256", [11])
    assert [e.policy for e in entries] == [
        PolicyDigest.start().pcr(selection, [v]).value for v in values.values()]
    for entry in entries:
        assert (entry.bank, entry.pcrs) == ("sha256", (11,))
        assert entry.key_fingerprint == public_key_fingerprint(public)
        key.verify(entry.signature, entry.policy, padding.PKCS1v15(), hashes.SHA256())


def test_pcr_11_values_extend_each_section_then_the_phase() -> None:
    build_uki = build_chain("uki", OwnerKeys.generate(os.urandom, vendor=False), b"i", UUID,
                            False).stages[0].data
    sha = hashlib.sha256
    value = bytes(32)
    for name, contents in uki_sections(build_uki):
        value = sha(value + sha((name + "\0").encode()).digest()).digest()
        value = sha(value + sha(contents).digest()).digest()
    after = sha(value + sha(b"enter-initrd").digest()).digest()
    assert pcr11_values(build_uki) == {"": value, "enter-initrd": after}


def test_a_shim_grub_chain_boots_under_the_owners_keys_only(
        keys: OwnerKeys, strangers: OwnerKeys) -> None:
    assert keys.vendor is not None
    kernel = make_kernel("6.6.6-owner")
    build = build_chain("shim-grub", keys, INITRD, UUID, False, kernel=kernel)
    assert build.chain == "shim-grub" and build.cmdline == CMDLINE
    assert [(s.name, s.path, s.signer) for s in build.stages] == [
        ("shim", "/EFI/BOOT/BOOTX64.EFI", "db"), ("grub", "/EFI/BOOT/grubx64.efi", "vendor"),
        ("grub.cfg", "/EFI/BOOT/grub.cfg", None), ("kernel", "/vmlinuz", "vendor"),
        ("initramfs", "/initrd.img", None)]
    shim, grub, cfg, signed_kernel, initrd = (s.data for s in build.stages)
    assert build.files == {s.path: s.data for s in build.stages}
    assert _signed_by(shim, keys) == {"db"}
    assert _signed_by(grub, keys) == _signed_by(signed_kernel, keys) == {"vendor"}
    assert image_digest(signed_kernel) == image_digest(kernel) and initrd == INITRD
    assert cfg.decode() == (
        "set default=0\nset timeout=0\nmenuentry 'cvm' {\n"
        f"  linux /vmlinuz {CMDLINE}\n  initrd /initrd.img\n}}\n")
    assert VendorCertSection.parse(_section(shim, ".vendor_cert")) == VendorCertSection(
        der(keys.vendor.certificate), b"")
    assert _section(shim, ".sbat").rstrip(b"\0").decode() == (
        SBAT_HEADER + "shim,4,UEFI shim,shim,1,https://github.com/rhboot/shim\n")
    assert SbatLevelSection.parse(_section(shim, ".sbatlevel")) == SHIM_SBAT_LEVEL
    assert _section(grub, ".sbat").rstrip(b"\0").decode() == grub_sbat(4) == (
        SBAT_HEADER + "grub,4,Free Software Foundation,grub,2.06,"
        "https://www.gnu.org/software/grub/\n")
    core = GrubCoreImage.parse(grub)
    assert (core.prefix, core.config) == ("/EFI/BOOT", "")
    result, _ = _boot(build, keys)
    assert result.stages == ("firmware", "shim", "grub", "linux")
    request = result.request
    assert (request.kernel, request.kernel_path, request.cmdline, request.initrd) == (
        signed_kernel, "/vmlinuz", f"BOOT_IMAGE=/vmlinuz {CMDLINE}", INITRD)
    with pytest.raises(PolicyError):
        _boot(build, strangers)


def test_a_shim_grub_chain_with_a_stage_signed_by_another_vendor_is_refused(
        keys: OwnerKeys, strangers: OwnerKeys) -> None:
    build = build_chain("shim-grub", keys, INITRD, UUID, False)
    for path, image in (("/EFI/BOOT/grubx64.efi", make_grub()), ("/vmlinuz", make_kernel())):
        files = {**build.files, path: strangers.sign_vendor(image)}
        with pytest.raises(PolicyError):
            BootChain(EspFiles(files), keys.varstore()).run()


def test_each_stage_has_its_own_code_and_grub_its_prefix(keys: OwnerKeys) -> None:
    assert keys.vendor is not None
    texts = {}
    for name, image in (("kernel", make_kernel()), ("other kernel", make_kernel("6.2")),
                        ("grub", make_grub()), ("grub elsewhere", make_grub("/boot/grub")),
                        ("uki", make_uki(make_kernel(), "quiet", b"")),
                        ("shim", make_shim(der(keys.vendor.certificate)))):
        (first, *_) = PeImage.parse(image).sections
        assert first.name == ".text", name
        assert first.characteristics == CODE, name
        text = first.loaded_data
        assert len(text) == TEXT_SIZE and text[-1] == 0xC3, name
        texts[name] = text
    assert len(set(texts.values())) == 5  # the prefix is data, not code
    assert texts["grub"] == texts["grub elsewhere"]
    assert GrubCoreImage.parse(make_grub("/boot/grub")).prefix == "/boot/grub"
    assert b"Linux version 6.2 (cvm@owner)" in _section(make_kernel("6.2"), ".rodata")


@pytest.mark.parametrize(("prefix", "padding"), [("/EFI/BOOT", 6), ("/boot/g", 0)])
def test_grubs_module_info_is_what_grub_mkimage_writes(prefix: str, padding: int) -> None:
    """GRUB 2.06 ``include/grub/kernel.h``: ``struct grub_module_info64`` (magic ``mimg``,
    padding, offset and size of the whole area, header included) then one
    ``struct grub_module_header`` of type OBJ_TYPE_PREFIX (3) whose size covers the NUL-ended
    prefix padded to 8 bytes."""
    body = prefix.encode() + b"\0" + bytes(padding)
    assert len(body) % 8 == 0
    expected = (b"mimg" + bytes(4) + (24).to_bytes(8, "little")
                + (24 + 8 + len(body)).to_bytes(8, "little")
                + (3).to_bytes(4, "little") + (8 + len(body)).to_bytes(4, "little") + body)
    assert _section(make_grub(prefix), "mods")[: len(expected)] == expected


def test_a_stage_hashes_only_when_it_is_a_pe_image() -> None:
    kernel = make_kernel()
    assert Stage("kernel", "/vmlinuz", kernel, None).authenticode_sha256 == image_digest(
        kernel, "sha256")
    assert Stage("grub.cfg", "/grub.cfg", b"set default=0\n", None).authenticode_sha256 is None


def test_chains_refuse_what_they_cannot_build_by_name(keys: OwnerKeys) -> None:
    no_vendor = OwnerKeys.generate(os.urandom, vendor=False, pcr_policy=False, db=keys.db)
    cases = [
        (("shim-grub", no_vendor, False), "a shim-grub chain needs the owner's shim vendor key"),
        (("shim-grub", keys, True), "signed PCR policies are for PCR 11 of a UKI: use --seal "
                                     "pcrs with --chain shim-grub"),
        (("grub-only", keys, False), "--chain: 'grub-only' is not uki or shim-grub"),
        (("uki", no_vendor, True), "these owner keys have no PCR-policy signing key"),
    ]
    for (chain, owner, signed), message in cases:
        with pytest.raises(UsageError) as refused:
            build_chain(chain, owner, INITRD, UUID, signed)
        assert str(refused.value) == message
    assert build_chain("uki", no_vendor, INITRD, UUID, False).stages[0].signer == "db"
