"""shim's rules: vendor certificate via MokListRT, MokList, db, deny lists and SBAT revocation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.sbat import SbatLevel, SbatSection
from cvm.formats.uefi.guids import SHIM_LOCK_GUID
from cvm.formats.uefi.signature_list import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    SignatureDatabase,
    SignatureList,
)
from cvm.guest.boot.secureboot import as_database
from cvm.guest.boot.shim_policy import ShimState, sbat_revocations, verify_next_stage
from cvm.image.signing import sign_pe

GRUB_SBAT = (
    b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
    b"grub,3,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n"
)


@pytest.fixture(scope="module")
def debian_state(debian_boot_binaries: dict[str, Path]) -> ShimState:
    return ShimState.from_shim(debian_boot_binaries["shim"].read_bytes(), SignatureDatabase(),
                               SignatureDatabase())


def test_state_of_debian_shim(debian_state: ShimState, vectors: Path) -> None:
    assert debian_state.vendor_cert == (
        vectors / "secureboot" / "debian-secure-boot-ca.der").read_bytes()
    assert len(debian_state.vendor_dbx) > 0
    assert debian_state.sbat_level is not None
    assert dict(debian_state.sbat_level.minimums).get("grub", 0) >= 1
    rt = debian_state.mok_list_rt.certificates()
    assert rt[-1].owner == SHIM_LOCK_GUID and rt[-1].data == debian_state.vendor_cert


def test_grub_is_allowed_by_the_mok_list_rt_vendor_entry(
    debian_state: ShimState, debian_boot_binaries: dict[str, Path]
) -> None:
    decision = verify_next_stage(debian_boot_binaries["grub"].read_bytes(), debian_state, "grub")
    assert decision.allowed, decision
    assert decision.database == "MokListRT"
    assert decision.variable_vendor == SHIM_LOCK_GUID
    assert decision.matched is not None
    assert decision.matched.owner == SHIM_LOCK_GUID
    assert decision.matched.data == debian_state.vendor_cert


def test_kernel_needs_no_sbat_through_the_protocol(
    debian_state: ShimState, debian_boot_binaries: dict[str, Path]
) -> None:
    kernel = debian_boot_binaries["kernel"].read_bytes()
    assert verify_next_stage(kernel, debian_state, "kernel", in_protocol=True).allowed
    direct = verify_next_stage(kernel, debian_state, "kernel")
    assert not direct.allowed and direct.database == "SbatLevel"


def test_revoked_sbat_generation_is_refused(
    debian_state: ShimState, debian_boot_binaries: dict[str, Path]
) -> None:
    grub = debian_boot_binaries["grub"].read_bytes()
    future = dataclasses.replace(debian_state,
                                 sbat_level=SbatLevel.parse(b"sbat,1,2099010100\ngrub,99\n"))
    decision = verify_next_stage(grub, future, "grub")
    assert not decision.allowed
    assert "revoked SBAT component grub" in decision.reason
    assert decision.database == "SbatLevel"


def test_vendor_dbx_and_mok_list_x_refuse(
    debian_state: ShimState, debian_boot_binaries: dict[str, Path]
) -> None:
    grub = debian_boot_binaries["grub"].read_bytes()
    listed = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, SHIM_LOCK_GUID,
                                                 image_digest(grub)),))
    by_dbx = verify_next_stage(grub, dataclasses.replace(debian_state, dbx=listed), "grub")
    assert not by_dbx.allowed and by_dbx.database == "dbx"
    by_mokx = verify_next_stage(grub, dataclasses.replace(debian_state, mok_list_x=listed))
    assert not by_mokx.allowed and by_mokx.database == "MokListX"
    ca = SignatureDatabase((SignatureList.of(EFI_CERT_X509, SHIM_LOCK_GUID,
                                             debian_state.vendor_cert or b""),))
    by_cert = verify_next_stage(grub, dataclasses.replace(debian_state, vendor_dbx=ca))
    assert not by_cert.allowed and by_cert.database == "vendor_dbx"


def test_owner_key_in_mok_list_and_db() -> None:
    key = generate_rsa_key()
    cert = issue_certificate("Owner", key)
    image = sign_pe(build_pe([SectionSpec(".text", b"\xc3" * 64, CODE),
                              SectionSpec(".sbat", GRUB_SBAT)]), key, cert)
    level = SbatLevel.parse(b"sbat,1,2024\ngrub,3\n")
    empty = SignatureDatabase()
    refused = verify_next_stage(image, ShimState(empty, empty, sbat_level=level))
    assert not refused.allowed and "no matching signer" in refused.reason
    mok = verify_next_stage(image, ShimState(empty, empty, mok_list=as_database([der(cert)]),
                                             sbat_level=level))
    assert mok.allowed and mok.database == "MokListRT"
    db = verify_next_stage(image, ShimState(as_database([der(cert)]), empty, sbat_level=level))
    assert db.allowed and db.database == "db"
    revoked = ShimState(as_database([der(cert)]), empty,
                        sbat_level=SbatLevel.parse(b"sbat,1,2025\ngrub,4\n"))
    assert not verify_next_stage(image, revoked).allowed


def test_sbat_revocations_compare_generations_per_component() -> None:
    section = SbatSection.parse(GRUB_SBAT)
    assert sbat_revocations(section, SbatLevel.parse(b"sbat,1,1\ngrub,3\n")) == []
    assert sbat_revocations(section, SbatLevel.parse(b"sbat,1,1\ngrub,4\n")) == [("grub", 3, 4)]
    assert sbat_revocations(section, SbatLevel.parse(b"sbat,1,1\ngrub.debian,9\n")) == []
