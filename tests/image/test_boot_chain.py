"""The boot chain is real PE content: one changed byte in any stage changes its hash and the
predicted PCRs (with Secure Boot on, the changed image no longer boots at all)."""

from __future__ import annotations

import pytest

from cvm.crypto.x509_edk2 import der
from cvm.errors import PolicyError, UsageError
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.image import PeImage
from cvm.formats.pe.sbat import SbatSection
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.chain import BootChain, loader_kind
from cvm.guest.boot.esp_files import EspFiles
from cvm.guest.boot.shim_policy import ShimState, verify_next_stage
from cvm.image.boot_chain import (
    build_chain,
    make_grub,
    make_kernel,
    make_shim,
    make_uki,
    pcr11_values,
)
from cvm.image.bundle import BuiltImage
from cvm.image.pcr_prediction import predict


def _flip_in_section(image: bytes) -> bytes:
    """One byte of the first section's raw data changed (inside the signed content)."""
    section = PeImage.parse(image).sections[0]
    data = bytearray(image)
    data[section.pointer_to_raw_data + 17] ^= 0x01
    return bytes(data)


def _prediction(files: dict[str, bytes], varstore: Varstore) -> dict[int, bytes]:
    return predict(BootChain(EspFiles(files), varstore)).values("sha256")


def test_stage_kinds_are_what_the_firmware_expects(built: BuiltImage) -> None:
    loader = built.chain.files["/EFI/BOOT/BOOTX64.EFI"]
    assert loader_kind(loader) == {"uki": "uki", "shim-grub": "shim"}[built.chain.chain]
    if built.chain.chain == "shim-grub":
        assert loader_kind(built.chain.files["/EFI/BOOT/grubx64.efi"]) == "grub"


def test_one_byte_of_any_stage_changes_its_hash_and_the_prediction(built: BuiltImage) -> None:
    files = built.chain.files
    secure = built.keys.varstore()
    insecure = Varstore.empty_4m()
    genuine_insecure = _prediction(files, insecure)
    genuine_secure = _prediction(files, secure)
    assert {p: genuine_secure[p] for p in (4, 7, 8, 9, 11) if p in genuine_secure} == {
        p: v for p, v in built.reference.pcrs["sha256"].items() if p in (4, 7, 8, 9, 11)}
    for path, data in files.items():
        is_pe = data[:2] == b"MZ"
        changed = _flip_in_section(data) if is_pe else data.replace(b"0", b"1", 1)
        assert changed != data
        if is_pe:
            assert image_digest(changed, "sha256") != image_digest(data, "sha256"), path
        tampered = {**files, path: changed}
        assert _prediction(tampered, insecure) != genuine_insecure, path
        if is_pe:
            with pytest.raises(PolicyError):
                _prediction(tampered, secure)


def test_the_signed_policies_cover_pcr_11_at_boot_and_after_enter_initrd() -> None:
    uki = make_uki(make_kernel(), "quiet", b"initrd")
    values = pcr11_values(uki)
    assert list(values) == ["", "enter-initrd"]
    assert values[""] != values["enter-initrd"]
    other = pcr11_values(make_uki(make_kernel(), "quiet init=/bin/sh", b"initrd"))
    assert other[""] != values[""]


def test_grub_sbat_generation_is_what_shim_checks(built_images: dict[str, BuiltImage]) -> None:
    built = built_images["shim-grub"]
    keys = built.keys
    assert keys.vendor is not None
    shim = make_shim(der(keys.vendor.certificate))
    state = ShimState.from_shim(shim, SignatureDatabase(), SignatureDatabase())
    good = keys.sign_vendor(make_grub())
    revoked = keys.sign_vendor(make_grub(sbat_generation=2))
    section = PeImage.parse(revoked).section(".sbat")
    assert section is not None
    assert SbatSection.parse(section.loaded_data).generation_of("grub") == 2
    assert verify_next_stage(good, state).allowed
    refused = verify_next_stage(revoked, state)
    assert not refused.allowed and "SBAT" in str(refused).upper()


def test_chains_refuse_what_they_cannot_build(built_images: dict[str, BuiltImage]) -> None:
    uki_keys = built_images["uki"].keys
    with pytest.raises(UsageError, match="vendor"):
        build_chain("shim-grub", uki_keys, b"", "uuid", False)
    with pytest.raises(UsageError, match="PCR 11"):
        build_chain("shim-grub", built_images["shim-grub"].keys, b"", "uuid", True)
    with pytest.raises(UsageError, match="chain"):
        build_chain("grub-only", uki_keys, b"", "uuid", False)
