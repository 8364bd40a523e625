"""Real decisions on Debian's signed shim, GRUB and kernel with the real CA certificates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate
from cvm.formats.uefi.guids import EFI_IMAGE_SECURITY_DATABASE, MICROSOFT_OWNER
from cvm.formats.uefi.signature_list import SignatureDatabase
from cvm.formats.uefi.varstore import Varstore
from cvm.guest.boot.secureboot import as_database, verify_image

MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")


def _cert(vectors: Path, name: str) -> bytes:
    return (vectors / "secureboot" / f"{name}.der").read_bytes()


@pytest.mark.parametrize("ca,index", [("ms-uefi-ca-2011", 0), ("ms-uefi-ca-2023", 1)])
def test_shim_is_allowed_by_the_microsoft_uefi_ca(
    debian_boot_binaries: dict[str, Path], vectors: Path, ca: str, index: int
) -> None:
    decision = verify_image(debian_boot_binaries["shim"].read_bytes(),
                            as_database([_cert(vectors, ca)]), name="shim")
    assert decision.allowed, decision
    assert decision.signature_index == index
    assert decision.matched is not None and decision.matched.data == _cert(vectors, ca)


def test_shim_is_refused_by_a_fresh_self_signed_certificate(
    debian_boot_binaries: dict[str, Path]
) -> None:
    key = generate_rsa_key()
    fresh = issue_certificate("Microsoft Corporation UEFI CA 2011", key)
    decision = verify_image(debian_boot_binaries["shim"].read_bytes(), as_database([der(fresh)]))
    assert not decision.allowed
    assert "no matching signer" in decision.reason


@pytest.mark.parametrize("role", ["grub", "kernel"])
def test_grub_and_kernel_follow_the_debian_ca(
    debian_boot_binaries: dict[str, Path], vectors: Path, role: str
) -> None:
    data = debian_boot_binaries[role].read_bytes()
    allowed = verify_image(data, as_database([_cert(vectors, "debian-secure-boot-ca")]))
    assert allowed.allowed
    assert allowed.matched is not None
    assert allowed.matched.data == _cert(vectors, "debian-secure-boot-ca")
    for ca in ("ms-uefi-ca-2011", "ms-uefi-ca-2023"):
        assert not verify_image(data, as_database([_cert(vectors, ca)])).allowed


def test_the_ovmf_ms_varstore_allows_shim_with_the_2011_ca_entry(
    debian_boot_binaries: dict[str, Path], vectors: Path
) -> None:
    if not MS_VARS.exists():
        pytest.skip("package ovmf is not installed")
    store = Varstore.parse(MS_VARS.read_bytes())
    db_var = store.get("db", EFI_IMAGE_SECURITY_DATABASE)
    dbx_var = store.get("dbx", EFI_IMAGE_SECURITY_DATABASE)
    assert db_var is not None and dbx_var is not None
    db, dbx = SignatureDatabase.parse(db_var.data), SignatureDatabase.parse(dbx_var.data)
    shim = verify_image(debian_boot_binaries["shim"].read_bytes(), db, dbx, name="shim")
    assert shim.allowed
    assert shim.matched is not None
    assert shim.matched.owner == MICROSOFT_OWNER
    assert shim.matched.data == _cert(vectors, "ms-uefi-ca-2011")
    assert shim.variable_vendor == EFI_IMAGE_SECURITY_DATABASE
    grub = verify_image(debian_boot_binaries["grub"].read_bytes(), db, dbx, name="grub")
    assert not grub.allowed and grub.database == "db"


def test_kernel_hash_in_dbx_is_refused(debian_boot_binaries: dict[str, Path],
                                       vectors: Path) -> None:
    from cvm.formats.pe.authenticode import image_digest
    from cvm.formats.uefi.signature_list import EFI_CERT_SHA256, SignatureList

    data = debian_boot_binaries["kernel"].read_bytes()
    dbx = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, MICROSOFT_OWNER,
                                              image_digest(data)),))
    decision = verify_image(data, as_database([_cert(vectors, "debian-secure-boot-ca")]), dbx)
    assert not decision.allowed and decision.database == "dbx"


def _uefi_variable_data(name: str, vendor: bytes, data: bytes) -> bytes:
    """UEFI_VARIABLE_DATA (TCG PC Client PFP 1.05 §10.2.6), as EV_EFI_VARIABLE_AUTHORITY holds."""
    encoded = name.encode("utf-16-le")
    return (vendor + (len(encoded) // 2).to_bytes(8, "little") + len(data).to_bytes(8, "little")
            + encoded + data)


def test_authorities_are_the_ones_the_real_boot_measured(
    debian_boot_binaries: dict[str, Path], vectors: Path
) -> None:
    """The db entry that allowed shim and the MokListRT entry that allowed GRUB, measured as
    EV_EFI_VARIABLE_AUTHORITY, appear with their SHA-256 digests in the real boot's event log."""
    from cvm.guest.boot.shim_policy import ShimState, verify_next_stage

    if not MS_VARS.exists():
        pytest.skip("package ovmf is not installed")
    log = (vectors / "realboot" / "eventlog.bin").read_bytes()
    store = Varstore.parse(MS_VARS.read_bytes())
    db_var = store.get("db", EFI_IMAGE_SECURITY_DATABASE)
    dbx_var = store.get("dbx", EFI_IMAGE_SECURITY_DATABASE)
    assert db_var is not None and dbx_var is not None
    db, dbx = SignatureDatabase.parse(db_var.data), SignatureDatabase.parse(dbx_var.data)
    shim = debian_boot_binaries["shim"].read_bytes()
    firmware = verify_image(shim, db, dbx, name="shim")
    shim_state = ShimState.from_shim(shim, db, dbx)
    grub = verify_next_stage(debian_boot_binaries["grub"].read_bytes(), shim_state, "grub")
    for decision in (firmware, grub):
        assert decision.allowed and decision.matched is not None
        event = _uefi_variable_data(decision.database, decision.variable_vendor.to_bytes(),
                                    decision.matched.to_bytes())
        assert event in log
        assert hashlib.sha256(event).digest() in log


def test_shim_state_is_what_the_real_shim_measured(
    debian_boot_binaries: dict[str, Path], vectors: Path
) -> None:
    """MokListRT, MokListXRT (PCR 14 digests) and SbatLevel (PCR 7) of the real boot."""
    from cvm.formats.uefi.guids import SHIM_LOCK_GUID
    from cvm.guest.boot.shim_policy import ShimState

    log = (vectors / "realboot" / "eventlog.bin").read_bytes()
    state = ShimState.from_shim(debian_boot_binaries["shim"].read_bytes(), SignatureDatabase(),
                                SignatureDatabase())
    assert hashlib.sha256(state.mok_list_rt.to_bytes()).digest() in log
    assert hashlib.sha256(state.mok_list_x_rt.to_bytes()).digest() in log
    assert state.sbat_level is not None
    event = _uefi_variable_data("SbatLevel", SHIM_LOCK_GUID.to_bytes(),
                                state.sbat_level.to_bytes())
    assert event in log and hashlib.sha256(event).digest() in log
