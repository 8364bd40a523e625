"""Secure Boot decisions on images signed by a synthetic PKI: db, dbx, chains, hashes, tampering."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cvm.crypto.x509_edk2 import (
    Certificate,
    PrivateKey,
    der,
    generate_rsa_key,
    issue_certificate,
    tbs_sha256,
)
from cvm.errors import FormatError, PolicyError
from cvm.formats.pe.authenticode import hashed_layout, image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.image import PeImage
from cvm.formats.uefi.guids import EFI_CERT_X509_SHA256
from cvm.formats.uefi.signature_list import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    SignatureData,
    SignatureDatabase,
    SignatureList,
)
from cvm.guest.boot.secureboot import HASH_SIGNATURE_TYPES, as_database, verify_image
from cvm.image.signing import sign_pe
from cvm.wire import Guid

OWNER = Guid.parse("11111111-2222-3333-4444-555555555555")


@dataclass(frozen=True)
class Pki:
    root: Certificate
    intermediate: Certificate
    signer: Certificate
    signer_key: PrivateKey
    stranger: Certificate


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key, mid_key, signer_key, other_key = (generate_rsa_key() for _ in range(4))
    root = issue_certificate("Test Root", root_key)
    mid = issue_certificate("Test Intermediate", mid_key, (root, root_key))
    signer = issue_certificate("Test Signer", signer_key, (mid, mid_key), ca=False)
    stranger = issue_certificate("Test Root", other_key)
    return Pki(root, mid, signer, signer_key, stranger)


@pytest.fixture(scope="module")
def unsigned() -> bytes:
    return build_pe([SectionSpec(".text", b"\xc3" * 900, CODE), SectionSpec(".data", b"x" * 77)],
                    trailer=b"symbols")


@pytest.fixture(scope="module")
def signed(pki: Pki, unsigned: bytes) -> bytes:
    return sign_pe(unsigned, pki.signer_key, pki.signer, (pki.intermediate,))


def _db(*certs: Certificate) -> SignatureDatabase:
    return SignatureDatabase(tuple(SignatureList.of(EFI_CERT_X509, OWNER, der(c)) for c in certs))


def _hashes(*digests: bytes, kind: Guid = EFI_CERT_SHA256) -> SignatureDatabase:
    return SignatureDatabase((SignatureList.of(kind, OWNER, *digests),))


@pytest.mark.parametrize("anchor", ["root", "intermediate", "signer"])
def test_any_certificate_of_the_chain_in_db_allows(pki: Pki, signed: bytes, anchor: str) -> None:
    cert = getattr(pki, anchor)
    decision = verify_image(signed, _db(pki.stranger, cert), name="app")
    assert decision.allowed, decision
    assert decision.database == "db"
    assert decision.matched == SignatureData(OWNER, der(cert))
    assert decision.signature_type == EFI_CERT_X509
    assert decision.chain[-1] == der(cert)
    assert decision.image_digest == image_digest(signed)
    assert decision.appraise() is decision


def test_a_stranger_with_the_same_name_is_refused(pki: Pki, signed: bytes) -> None:
    decision = verify_image(signed, _db(pki.stranger), name="app")
    assert not decision.allowed
    assert "no matching signer" in decision.reason
    assert decision.database == "db"
    with pytest.raises(PolicyError, match="app: refused"):
        decision.appraise()


def test_the_first_matching_db_entry_is_the_authority(pki: Pki, signed: bytes) -> None:
    decision = verify_image(signed, _db(pki.root, pki.intermediate))
    assert decision.matched is not None and decision.matched.data == der(pki.root)


def test_dbx_certificate_refuses(pki: Pki, signed: bytes) -> None:
    decision = verify_image(signed, _db(pki.root), _db(pki.intermediate))
    assert not decision.allowed
    assert decision.database == "dbx"
    assert decision.matched == SignatureData(OWNER, der(pki.intermediate))


def test_dbx_tbs_hash_refuses(pki: Pki, signed: bytes) -> None:
    entry = tbs_sha256(pki.signer) + bytes(16)
    decision = verify_image(signed, _db(pki.root), _hashes(entry, kind=EFI_CERT_X509_SHA256))
    assert not decision.allowed and decision.database == "dbx"
    assert "TBS hash" in decision.reason


def test_image_hash_in_dbx_refuses_and_in_db_allows(pki: Pki, signed: bytes) -> None:
    digest = image_digest(signed)
    refused = verify_image(signed, _db(pki.root), _hashes(digest))
    assert not refused.allowed and refused.database == "dbx" and "hash" in refused.reason
    allowed = verify_image(signed, _hashes(digest))
    assert allowed.allowed and allowed.signature_type == EFI_CERT_SHA256
    assert allowed.matched == SignatureData(OWNER, digest)


def test_unsigned_images_need_their_hash_in_db(unsigned: bytes, pki: Pki) -> None:
    assert not verify_image(unsigned, _db(pki.root)).allowed
    padded = image_digest(unsigned)
    decision = verify_image(unsigned, _hashes(padded))
    assert decision.allowed and decision.matched == SignatureData(OWNER, padded)
    refused = verify_image(unsigned, _hashes(padded), _hashes(padded))
    assert not refused.allowed and refused.database == "dbx"


def test_one_flipped_byte_in_the_hashed_ranges_is_refused(pki: Pki, signed: bytes) -> None:
    image = PeImage.parse(signed)
    layout = hashed_layout(image)
    offsets = sorted({o for a, b in layout.ranges for o in (a + 2, (a + b) // 2, b - 1)
                      if a + 2 < b and not 0x3C <= o < 0x40})
    for offset in offsets:
        flipped = bytearray(signed)
        flipped[offset] ^= 0x80
        try:
            decision = verify_image(bytes(flipped), _db(pki.root))
        except FormatError:
            continue
        assert not decision.allowed, hex(offset)
        assert decision.reason.startswith(("the image hash differs", "no parsable", "no matching"))


def test_a_bad_signature_is_refused(pki: Pki, signed: bytes) -> None:
    table = PeImage.parse(signed).certificate_table
    flipped = bytearray(signed)
    flipped[table.virtual_address + table.size - 20] ^= 0x01
    assert not verify_image(bytes(flipped), _db(pki.root)).allowed


def test_two_signatures_either_may_allow(pki: Pki, signed: bytes) -> None:
    other_key = generate_rsa_key()
    other = issue_certificate("Second Signer", other_key)
    both = sign_pe(signed, other_key, other, replace=False)
    assert len(PeImage.parse(both).certificates) == 2
    first = verify_image(both, _db(pki.root))
    second = verify_image(both, _db(other))
    assert first.allowed and first.signature_index == 0
    assert second.allowed and second.signature_index == 1
    assert not verify_image(both, _db(pki.root), _db(other)).allowed


def test_database_from_certificates(pki: Pki) -> None:
    database = as_database([der(pki.root)])
    assert database.certificates()[0].data == der(pki.root)


@pytest.mark.parametrize("hash_name", ["sha1", "sha384", "sha512"])
def test_other_digest_algorithms(pki: Pki, unsigned: bytes, hash_name: str) -> None:
    signed = sign_pe(unsigned, pki.signer_key, pki.signer, (pki.intermediate,), hash_name)
    decision = verify_image(signed, _db(pki.root))
    assert decision.allowed
    assert decision.image_digest == image_digest(signed)
    kind = HASH_SIGNATURE_TYPES[hash_name]
    listed = _hashes(image_digest(signed, hash_name), kind=kind)
    refused = verify_image(signed, _db(pki.root), listed)
    assert not refused.allowed and refused.signature_type == kind
