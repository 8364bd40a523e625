"""dbx revocation as edk2 decides it, with Debian's Microsoft-signed shim and the real CAs.

edk2 ``IsForbiddenByDbx`` weighs every certificate a signature carries against the
EFI_CERT_X509_SHA256/384/512 entries of dbx, and ``IsAllowedByDb`` weighs the db certificate the
signature chains to: a CA left out of the PKCS#7 is still found revoked.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from asn1crypto import cms

from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate, load_certificate
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.guids import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    EFI_CERT_X509_SHA256,
    EFI_CERT_X509_SHA384,
    EFI_CERT_X509_SHA512,
    MICROSOFT_OWNER,
)
from cvm.formats.uefi.signature_list import SignatureDatabase, SignatureList
from cvm.guest.boot.secureboot import Decision, as_database, verify_image
from cvm.guest.boot.shim_policy import ShimState, verify_next_stage
from cvm.image.signing import attach_signatures, sign_pe, strip_signatures
from cvm.wire import Guid

X509_HASHES = [("sha256", EFI_CERT_X509_SHA256), ("sha384", EFI_CERT_X509_SHA384),
               ("sha512", EFI_CERT_X509_SHA512)]
ZERO_TIME = bytes(16)
# EFI_TIME 2012-06-01 00:00:00 (Year u16, Month, Day, Hour, Minute, Second, Pad, Nanosecond...)
SOME_TIME = (2012).to_bytes(2, "little") + bytes([6, 1, 0, 0, 0, 0]) + bytes(8)


def _der(vectors: Path, name: str) -> bytes:
    return (vectors / "secureboot" / f"{name}.der").read_bytes()


def _tbs(certificate: bytes, hash_name: str) -> bytes:
    tbs = load_certificate(certificate).tbs_certificate_bytes
    return hashlib.new(hash_name, tbs).digest()


def _dbx(kind: Guid, *payloads: bytes) -> SignatureDatabase:
    return SignatureDatabase((SignatureList.of(kind, MICROSOFT_OWNER, *payloads),))


def _without_certificate(pe: bytes, common_name: str) -> bytes:
    """``pe`` with every certificate named ``common_name`` left out of each PKCS#7 (the
    certificate set is not covered by the signature, so anyone can do this)."""
    body, entries = strip_signatures(pe)

    def drop(pkcs7: bytes) -> bytes:
        signed = cms.ContentInfo.load(pkcs7)["content"]
        signed["certificates"] = [
            c for c in signed["certificates"]
            if c.chosen.subject.native.get("common_name") != common_name
        ]
        return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())

    return attach_signatures(body, tuple(
        dataclasses.replace(e, certificate=drop(e.certificate)) for e in entries))


@pytest.fixture(scope="module")
def shim(debian_boot_binaries: dict[str, Path]) -> bytes:
    return debian_boot_binaries["shim"].read_bytes()


@pytest.fixture(scope="module")
def stripped_shim(shim: bytes) -> bytes:
    return _without_certificate(shim, "Microsoft Corporation UEFI CA 2011")


def _refused_by_dbx(decision: Decision, kind: Guid, payload: bytes) -> None:
    assert not decision.allowed, decision
    assert decision.database == "dbx"
    assert decision.signature_type == kind
    assert decision.matched is not None and decision.matched.data == payload


def test_the_stripped_shim_still_verifies_without_dbx(stripped_shim: bytes,
                                                       vectors: Path) -> None:
    decision = verify_image(stripped_shim, as_database([_der(vectors, "ms-uefi-ca-2011")]))
    assert decision.allowed and decision.signature_index == 0


@pytest.mark.parametrize("hash_name,kind", X509_HASHES)
def test_the_db_anchor_left_out_of_the_pkcs7_is_revoked_by_its_tbs_hash(
    stripped_shim: bytes, vectors: Path, hash_name: str, kind: Guid
) -> None:
    ca = _der(vectors, "ms-uefi-ca-2011")
    payload = _tbs(ca, hash_name) + ZERO_TIME
    decision = verify_image(stripped_shim, as_database([ca]), _dbx(kind, payload), "shim")
    _refused_by_dbx(decision, kind, payload)
    assert "db certificate CN=Microsoft Corporation UEFI CA 2011" in decision.reason
    assert decision.signature_index == 0


@pytest.mark.parametrize("hash_name,kind", X509_HASHES)
def test_a_carried_ca_is_revoked_by_its_tbs_hash(
    shim: bytes, vectors: Path, hash_name: str, kind: Guid
) -> None:
    ca = _der(vectors, "ms-uefi-ca-2011")
    payload = _tbs(ca, hash_name) + ZERO_TIME
    decision = verify_image(shim, as_database([ca]), _dbx(kind, payload))
    _refused_by_dbx(decision, kind, payload)
    assert "a certificate of the signature" in decision.reason


@pytest.mark.parametrize("hash_name,kind", X509_HASHES)
def test_the_signer_is_revoked_by_its_tbs_hash(
    stripped_shim: bytes, vectors: Path, hash_name: str, kind: Guid
) -> None:
    signer = _der(vectors, "ms-windows-uefi-driver-publisher")
    payload = _tbs(signer, hash_name) + ZERO_TIME
    dbx = _dbx(kind, payload)
    decision = verify_image(stripped_shim, as_database([_der(vectors, "ms-uefi-ca-2011")]), dbx)
    _refused_by_dbx(decision, kind, payload)
    assert "Microsoft Windows UEFI Driver Publisher" in decision.reason


def test_the_2023_signature_still_allows_when_only_the_2011_ca_is_revoked(
    stripped_shim: bytes, vectors: Path
) -> None:
    """edk2 keeps examining the other signatures after a revoked db anchor."""
    old, new = _der(vectors, "ms-uefi-ca-2011"), _der(vectors, "ms-uefi-ca-2023")
    dbx = _dbx(EFI_CERT_X509_SHA256, _tbs(old, "sha256") + ZERO_TIME)
    decision = verify_image(stripped_shim, as_database([old, new]), dbx)
    assert decision.allowed and decision.signature_index == 1
    assert decision.matched is not None and decision.matched.data == new


def test_a_revocation_time_does_not_help_without_dbt(stripped_shim: bytes,
                                                     vectors: Path) -> None:
    ca = _der(vectors, "ms-uefi-ca-2011")
    payload = _tbs(ca, "sha256") + SOME_TIME
    decision = verify_image(stripped_shim, as_database([ca]), _dbx(EFI_CERT_X509_SHA256, payload))
    _refused_by_dbx(decision, EFI_CERT_X509_SHA256, payload)


def test_a_tbs_hash_under_another_signature_type_revokes_nothing(
    stripped_shim: bytes, vectors: Path
) -> None:
    ca = _der(vectors, "ms-uefi-ca-2011")
    unrelated = _dbx(EFI_CERT_SHA256, _tbs(ca, "sha256"))
    assert verify_image(stripped_shim, as_database([ca]), unrelated).allowed
    wrong_size = _dbx(EFI_CERT_X509_SHA384, _tbs(ca, "sha256") + bytes(16) + ZERO_TIME)
    assert verify_image(stripped_shim, as_database([ca]), wrong_size).allowed


def test_the_whole_ca_in_dbx_revokes_the_stripped_shim(stripped_shim: bytes,
                                                        vectors: Path) -> None:
    ca = _der(vectors, "ms-uefi-ca-2011")
    decision = verify_image(stripped_shim, as_database([ca]), _dbx(EFI_CERT_X509, ca))
    _refused_by_dbx(decision, EFI_CERT_X509, ca)


def test_shim_refuses_grub_when_the_vendor_ca_is_revoked(
    debian_boot_binaries: dict[str, Path], vectors: Path, shim: bytes
) -> None:
    """GRUB's signature carries only its signer; the Debian CA it chains to is shim's vendor
    certificate (MokListRT). Its TBS hash in dbx refuses GRUB."""
    grub = debian_boot_binaries["grub"].read_bytes()
    ca = _der(vectors, "debian-secure-boot-ca")
    payload = _tbs(ca, "sha384") + ZERO_TIME
    allowed = verify_next_stage(grub, ShimState.from_shim(shim, SignatureDatabase(),
                                                          SignatureDatabase()), "grub")
    assert allowed.allowed
    state = ShimState.from_shim(shim, SignatureDatabase(), _dbx(EFI_CERT_X509_SHA384, payload))
    decision = verify_next_stage(grub, state, "grub")
    assert not decision.allowed
    assert decision.database == "dbx"
    assert decision.signature_type == EFI_CERT_X509_SHA384
    assert decision.matched is not None and decision.matched.data == payload
    assert "MokListRT certificate CN=Debian Secure Boot CA" in decision.reason


# edk2's other rules, with a synthetic PKI: root -> intermediate -> signer.

@pytest.fixture(scope="module")
def pki() -> tuple[bytes, bytes, bytes]:
    """(image signed by the signer, carrying the intermediate; root DER; intermediate DER)."""
    root_key, mid_key, signer_key = (generate_rsa_key() for _ in range(3))
    root = issue_certificate("Revocation Root", root_key)
    mid = issue_certificate("Revocation Intermediate", mid_key, (root, root_key))
    signer = issue_certificate("Revocation Signer", signer_key, (mid, mid_key), ca=False)
    image = build_pe([SectionSpec(".text", b"\xc3" * 600, CODE)])
    return sign_pe(image, signer_key, signer, (mid,)), der(root), der(mid)


def test_a_revoked_anchor_ends_the_search_of_db(pki: tuple[bytes, bytes, bytes]) -> None:
    """edk2 ``IsAllowedByDb`` stops at the first db certificate that verifies the signature:
    a later entry (here the intermediate, which verifies too) does not rescue it."""
    signed, root, mid = pki
    dbx = _dbx(EFI_CERT_X509_SHA512, _tbs(root, "sha512") + ZERO_TIME)
    assert verify_image(signed, as_database([mid, root]), dbx).allowed
    decision = verify_image(signed, as_database([root, mid]), dbx)
    assert not decision.allowed and decision.database == "dbx"
    assert "db certificate CN=Revocation Root" in decision.reason


def test_a_signature_without_certificates_is_forbidden_when_dbx_exists(
    pki: tuple[bytes, bytes, bytes]
) -> None:
    """edk2 ``IsForbiddenByDbx``: an empty certificate stack is forbidden (only when dbx
    exists); the image hash in db would otherwise allow it."""
    signed, _, _ = pki
    bare = _without_certificate(_without_certificate(signed, "Revocation Signer"),
                                "Revocation Intermediate")
    db = _dbx(EFI_CERT_SHA256, image_digest(bare))
    assert verify_image(bare, db).allowed
    decision = verify_image(bare, db, _dbx(EFI_CERT_SHA256, bytes(32)))
    assert not decision.allowed and decision.database == "dbx"
    assert decision.reason == "the signature carries no certificate to check against dbx"
    assert decision.matched is None
