"""Every path of the firmware's and shim's decision, checked field by field.

Each test compares the whole :class:`Decision` (verdict, reason, database, matched entry, its
signature type, the signature's index, the chain and the variable's vendor), so that a decision
reached for the wrong reason, or reported with the wrong authority (which PCR 7 would measure),
fails as surely as a wrong verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cvm.crypto.x509_edk2 import (
    Certificate,
    der,
    generate_rsa_key,
    issue_certificate,
    tbs_digest,
)
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.pe.sbat import SbatLevel
from cvm.formats.uefi.guids import (
    EFI_CERT_SHA1,
    EFI_CERT_SHA256,
    EFI_CERT_SHA384,
    EFI_CERT_X509,
    EFI_CERT_X509_SHA256,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK_GUID,
)
from cvm.formats.uefi.signature_list import SignatureData, SignatureDatabase, SignatureList
from cvm.guest.boot.secureboot import Decision, verify_image
from cvm.guest.boot.shim_policy import ShimState, verify_next_stage
from cvm.image.signing import sign_pe
from cvm.wire import Guid

OWNER = Guid.parse("22222222-3333-4444-5555-666666666666")
SBAT = (b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n"
        b"grub,3,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n")
LEVEL = SbatLevel.parse(b"sbat,1,2024010100\ngrub,3\n")
EMPTY = SignatureDatabase()
NAME = "next"


@dataclass(frozen=True)
class Signed:
    root: Certificate
    signer: Certificate
    image: bytes  # .sbat, signed (SHA-256) by the signer, carrying only the signer
    sha384: bytes  # the same image signed with a SHA-384 digest
    unsigned: bytes
    no_sbat: bytes
    bad_sbat: bytes


@pytest.fixture(scope="module")
def signed() -> Signed:
    root_key, signer_key = generate_rsa_key(), generate_rsa_key()
    root = issue_certificate("Decision Root", root_key)
    signer = issue_certificate("Decision Signer", signer_key, (root, root_key), ca=False)

    def image(sbat: bytes | None) -> bytes:
        sections = [SectionSpec(".text", b"\xc3" * 300, CODE)]
        if sbat is not None:
            sections.append(SectionSpec(".sbat", sbat))
        return build_pe(sections)

    unsigned = image(SBAT)
    return Signed(
        root, signer, sign_pe(unsigned, signer_key, signer),
        sign_pe(unsigned, signer_key, signer, hash_name="sha384"), unsigned,
        sign_pe(image(None), signer_key, signer),
        sign_pe(image(b"not,a,valid\nsbat\xff"), signer_key, signer),
    )


def _list(kind: Guid, *payloads: bytes) -> SignatureDatabase:
    return SignatureDatabase((SignatureList.of(kind, OWNER, *payloads),))


def _certs(*certificates: Certificate) -> SignatureDatabase:
    return _list(EFI_CERT_X509, *(der(c) for c in certificates))


def _digest(image: bytes, alg: str = "sha256") -> bytes:
    return image_digest(image, alg)


def _shim(db: SignatureDatabase = EMPTY, dbx: SignatureDatabase = EMPTY,
          **rest: object) -> ShimState:
    return ShimState(db, dbx, sbat_level=LEVEL, **rest)  # type: ignore[arg-type]


def _entry(data: bytes) -> SignatureData:
    return SignatureData(OWNER, data)


# shim


def test_shim_sbat_decisions(signed: Signed) -> None:
    state = _shim(_certs(signed.root))
    assert verify_next_stage(signed.no_sbat, state, NAME) == Decision(
        NAME, False, "no .sbat section (mandatory for images shim loads)", "SbatLevel",
        _digest(signed.no_sbat), variable_vendor=SHIM_LOCK_GUID)
    assert verify_next_stage(signed.no_sbat, state, NAME, in_protocol=True).allowed
    bad = verify_next_stage(signed.bad_sbat, state, NAME)
    assert bad == Decision(NAME, False, bad.reason, "SbatLevel", _digest(signed.bad_sbat),
                           variable_vendor=SHIM_LOCK_GUID)
    assert bad.reason.startswith("unparsable .sbat section (")
    later = ShimState(_certs(signed.root), EMPTY,
                      sbat_level=SbatLevel.parse(b"sbat,1,2025\ngrub,4\n"))
    assert verify_next_stage(signed.image, later, NAME) == Decision(
        NAME, False, "revoked SBAT component grub: generation 3 < 4 (SbatLevel 2025)",
        "SbatLevel", _digest(signed.image), variable_vendor=SHIM_LOCK_GUID)
    # no SbatLevel at all (or one without components): SBAT is not consulted
    for level in (None, SbatLevel.parse(b"sbat,1,2025\n")):
        free = ShimState(_certs(signed.root), EMPTY, sbat_level=level)
        assert verify_next_stage(signed.no_sbat, free, NAME).allowed


@pytest.mark.parametrize("alg,kind", [("sha256", EFI_CERT_SHA256), ("sha1", EFI_CERT_SHA1)])
@pytest.mark.parametrize("database,field,vendor", [
    ("vendor_dbx", "vendor_dbx", SHIM_LOCK_GUID),
    ("dbx", "dbx", EFI_IMAGE_SECURITY_DATABASE),
    ("MokListX", "mok_list_x", SHIM_LOCK_GUID),
])
def test_shim_refuses_an_image_hash_of_each_deny_list(
    signed: Signed, alg: str, kind: Guid, database: str, field: str, vendor: Guid
) -> None:
    digest = image_digest(signed.image, alg, "shim")
    deny = {field: _list(kind, digest)}
    state = _shim(_certs(signed.root), **deny) if field != "dbx" else _shim(
        _certs(signed.root), deny["dbx"])
    assert verify_next_stage(signed.image, state, NAME) == Decision(
        NAME, False, f"the image's {alg} hash is in {database}", database,
        _digest(signed.image), _entry(digest), kind, None, (), vendor)


def test_shim_refuses_a_certificate_of_each_deny_list(signed: Signed) -> None:
    root = der(signed.root)
    for database, state, vendor in (
        ("vendor_dbx", _shim(_certs(signed.root), vendor_dbx=_certs(signed.root)),
         SHIM_LOCK_GUID),
        ("dbx", _shim(_certs(signed.root), _certs(signed.root)), EFI_IMAGE_SECURITY_DATABASE),
        ("MokListX", _shim(_certs(signed.root), mok_list_x=_certs(signed.root)),
         SHIM_LOCK_GUID),
    ):
        assert verify_next_stage(signed.image, state, NAME) == Decision(
            NAME, False, f"a signing certificate is in {database}", database,
            _digest(signed.image), _entry(root), EFI_CERT_X509, 0, (), vendor)


def test_shim_refuses_a_revoked_anchor(signed: Signed) -> None:
    payload = tbs_digest(signed.root, "sha256") + bytes(16)
    for database, state, vendor in (
        ("dbx", _shim(_certs(signed.root), _list(EFI_CERT_X509_SHA256, payload)),
         EFI_IMAGE_SECURITY_DATABASE),
        ("MokListX", _shim(mok_list=_certs(signed.root),
                           mok_list_x=_list(EFI_CERT_X509_SHA256, payload)), SHIM_LOCK_GUID),
    ):
        allowing = "db" if database == "dbx" else "MokListRT"
        assert verify_next_stage(signed.image, state, NAME) == Decision(
            NAME, False, f"the {allowing} certificate CN=Decision Root that the signature "
            f"chains to is in {database} (EFI_CERT_X509_SHA256)", database,
            _digest(signed.image), _entry(payload), EFI_CERT_X509_SHA256, 0, (), vendor)


def test_shim_allows_by_hash_then_by_certificate(signed: Signed) -> None:
    sha256, sha1 = (image_digest(signed.image, a, "shim") for a in ("sha256", "sha1"))
    by_db_hash = _shim(_list(EFI_CERT_SHA256, sha256))
    assert verify_next_stage(signed.image, by_db_hash, NAME) == Decision(
        NAME, True, "the image's sha256 hash is in db", "db", _digest(signed.image),
        _entry(sha256), EFI_CERT_SHA256, None, (), EFI_IMAGE_SECURITY_DATABASE)
    by_mok_hash = _shim(mok_list=_list(EFI_CERT_SHA1, sha1))
    assert verify_next_stage(signed.image, by_mok_hash, NAME) == Decision(
        NAME, True, "the image's sha1 hash is in MokListRT", "MokListRT", _digest(signed.image),
        _entry(sha1), EFI_CERT_SHA1, None, (), SHIM_LOCK_GUID)
    chain = (der(signed.signer), der(signed.root))
    for database, state, vendor in (
        ("db", _shim(_certs(signed.root)), EFI_IMAGE_SECURITY_DATABASE),
        ("MokListRT", _shim(mok_list=_certs(signed.root)), SHIM_LOCK_GUID),
    ):
        assert verify_next_stage(signed.image, state, NAME) == Decision(
            NAME, True, f"a signature chains to a certificate in {database}", database,
            _digest(signed.image), _entry(der(signed.root)), EFI_CERT_X509, 0, chain, vendor)
    sha384 = verify_next_stage(signed.sha384, _shim(_certs(signed.root)), NAME)
    assert sha384.allowed and sha384.signature_index == 0


def test_shim_without_a_signer(signed: Signed) -> None:
    no_signer = Decision(NAME, False, "no matching signer in db, MokListRT or the vendor "
                         "certificate", "db, MokListRT", _digest(signed.image), None, None, None,
                         (), SHIM_LOCK_GUID)
    assert verify_next_stage(signed.image, _shim(), NAME) == no_signer
    assert verify_next_stage(signed.image, _shim(), NAME).image == NAME
    assert verify_next_stage(signed.image, _shim()).image == "image"


# the firmware


def test_firmware_unsigned_decisions(signed: Signed) -> None:
    digest = _digest(signed.unsigned)
    listed = _list(EFI_CERT_SHA256, digest)
    assert verify_image(signed.unsigned, listed, listed, NAME) == Decision(
        NAME, False, "unsigned and its sha256 hash is in dbx", "dbx", digest, _entry(digest),
        EFI_CERT_SHA256)
    assert verify_image(signed.unsigned, listed, EMPTY, NAME) == Decision(
        NAME, True, "unsigned, its sha256 hash is in db", "db", digest, _entry(digest),
        EFI_CERT_SHA256)
    assert verify_image(signed.unsigned, _certs(signed.root), listed, NAME) == Decision(
        NAME, False, "unsigned and its sha256 hash is in dbx", "dbx", digest, _entry(digest),
        EFI_CERT_SHA256)
    assert verify_image(signed.unsigned, _certs(signed.root), EMPTY, NAME) == Decision(
        NAME, False, "unsigned and its hash is not in db", "db", digest)
    other_kind = _list(EFI_CERT_SHA384, digest + bytes(16))
    assert not verify_image(signed.unsigned, other_kind, EMPTY, NAME).allowed
    assert verify_image(signed.unsigned, listed).image == "image"


def test_firmware_signed_decisions(signed: Signed) -> None:
    digest = _digest(signed.image)
    chain = (der(signed.signer), der(signed.root))
    assert verify_image(signed.image, _certs(signed.root), EMPTY, NAME) == Decision(
        NAME, True, "a signature chains to a certificate in db", "db", digest,
        _entry(der(signed.root)), EFI_CERT_X509, 0, chain)
    assert verify_image(signed.image, _list(EFI_CERT_SHA256, digest), EMPTY, NAME) == Decision(
        NAME, True, "the image's sha256 hash is in db", "db", digest, _entry(digest),
        EFI_CERT_SHA256, 0)
    assert verify_image(signed.image, _certs(signed.root), _list(EFI_CERT_SHA256, digest),
                        NAME) == Decision(NAME, False, "the image's sha256 hash is in dbx",
                                          "dbx", digest, _entry(digest), EFI_CERT_SHA256, 0)
    assert verify_image(signed.image, _certs(signed.root), _certs(signed.root),
                        NAME) == Decision(NAME, False, "a signing certificate is in dbx", "dbx",
                                          digest, _entry(der(signed.root)), EFI_CERT_X509, 0)
    payload = tbs_digest(signed.signer, "sha256") + bytes(16)
    assert verify_image(signed.image, _certs(signed.root), _list(EFI_CERT_X509_SHA256, payload),
                        NAME) == Decision(
        NAME, False, "the TBS hash of CN=Decision Signer, a certificate of the signature, is in "
        "dbx (EFI_CERT_X509_SHA256)", "dbx", digest, _entry(payload), EFI_CERT_X509_SHA256, 0)
    anchor = tbs_digest(signed.root, "sha256") + bytes(16)
    assert verify_image(signed.image, _certs(signed.root), _list(EFI_CERT_X509_SHA256, anchor),
                        NAME) == Decision(
        NAME, False, "the db certificate CN=Decision Root that the signature chains to is in "
        "dbx (EFI_CERT_X509_SHA256)", "dbx", digest, _entry(anchor), EFI_CERT_X509_SHA256, 0)
    # a revoked anchor does not hide an image hash in db
    assert verify_image(signed.image, _certs(signed.root) + _list(EFI_CERT_SHA256, digest),
                        _list(EFI_CERT_X509_SHA256, anchor), NAME).allowed
    assert verify_image(signed.image, _certs(signed.signer), EMPTY, NAME) == Decision(
        NAME, True, "a signature chains to a certificate in db", "db", digest,
        _entry(der(signed.signer)), EFI_CERT_X509, 0, (der(signed.signer),))
    assert verify_image(signed.image, EMPTY, EMPTY, NAME) == Decision(
        NAME, False, "no matching signer: no certificate or hash in db verifies the image", "db",
        digest)


def test_firmware_signature_digest_mismatch(signed: Signed) -> None:
    """A signature whose digest is not the image's is skipped, even by the hash rules."""
    body = bytearray(signed.image)
    body[0x200] ^= 0xFF  # inside .text: the image changed after signing
    changed = bytes(body)
    digest = _digest(changed)
    assert verify_image(changed, _certs(signed.root), _list(EFI_CERT_SHA256, digest),
                        NAME) == Decision(
        NAME, False, "the image hash differs from the digest its signatures carry", "db", digest)


def test_an_unrelated_dbx_certificate_revokes_nothing(signed: Signed) -> None:
    stranger = issue_certificate("Decision Root", generate_rsa_key())
    decision = verify_image(signed.image, _certs(signed.root), _certs(stranger), NAME)
    assert decision.allowed and decision.database == "db"
    state = _shim(_certs(signed.root), _certs(stranger))
    assert verify_next_stage(signed.image, state, NAME).allowed


def test_the_state_of_a_shim_without_vendor_sections(signed: Signed) -> None:
    from cvm.formats.pe.image import PeImage

    for shim in (signed.unsigned, PeImage.parse(signed.unsigned)):
        state = ShimState.from_shim(shim, EMPTY, EMPTY)
        assert state == ShimState(EMPTY, EMPTY, None, EMPTY, EMPTY, EMPTY, None)
        assert state.mok_list_rt == EMPTY and state.mok_list_x_rt == EMPTY


def test_mok_list_x_rt_is_mok_list_x_then_vendor_dbx() -> None:
    """shim mirrors MokListX and then its vendor_dbx into MokListXRT (measured into PCR 14)."""
    mok_x = _list(EFI_CERT_SHA256, b"\x01" * 32)
    vendor_dbx = _list(EFI_CERT_SHA256, b"\x02" * 32, b"\x03" * 32)
    state = _shim(mok_list_x=mok_x, vendor_dbx=vendor_dbx)
    assert state.mok_list_x_rt == SignatureDatabase(mok_x.lists + vendor_dbx.lists)
    assert state.mok_list_x_rt.to_bytes() == mok_x.to_bytes() + vendor_dbx.to_bytes()
    assert _shim(vendor_dbx=vendor_dbx).mok_list_x_rt == vendor_dbx


def test_shim_hashes_as_shim_does(signed: Signed) -> None:
    """shim pads an unsigned image's trailing data to 8 bytes in its hash (edk2 does not): the
    decision and the db lookup use shim's hash, and a parsed image is taken as is."""
    from cvm.formats.pe.image import PeImage

    odd = build_pe([SectionSpec(".text", b"\xc3" * 300, CODE), SectionSpec(".sbat", SBAT)],
                   trailer=b"abc")
    shim_hash = image_digest(odd, "sha256", "shim")
    assert shim_hash != image_digest(odd, "sha256")
    state = _shim(_list(EFI_CERT_SHA256, shim_hash))
    expected = Decision(NAME, True, "the image's sha256 hash is in db", "db", shim_hash,
                        _entry(shim_hash), EFI_CERT_SHA256, None, (),
                        EFI_IMAGE_SECURITY_DATABASE)
    assert verify_next_stage(odd, state, NAME) == expected
    assert verify_next_stage(PeImage.parse(odd), state, NAME) == expected
    unlisted = verify_next_stage(odd, _shim(), NAME)
    assert unlisted.reason.startswith("no matching signer") and unlisted.image_digest == shim_hash


def test_only_the_allowing_database_is_renamed_in_the_reason() -> None:
    root_key, signer_key = generate_rsa_key(), generate_rsa_key()
    root = issue_certificate("Old db CA", root_key)
    signer = issue_certificate("Signer", signer_key, (root, root_key), ca=False)
    image = sign_pe(build_pe([SectionSpec(".text", b"\xc3" * 64, CODE),
                              SectionSpec(".sbat", SBAT)]), signer_key, signer)
    payload = tbs_digest(root, "sha256") + bytes(16)
    state = _shim(mok_list=_certs(root), mok_list_x=_list(EFI_CERT_X509_SHA256, payload))
    assert verify_next_stage(image, state, NAME).reason == (
        "the MokListRT certificate CN=Old db CA that the signature chains to is in MokListX "
        "(EFI_CERT_X509_SHA256)")


def test_the_firmware_takes_a_parsed_image_as_is(signed: Signed) -> None:
    from cvm.formats.pe.image import PeImage

    expected = verify_image(signed.image, _certs(signed.root), EMPTY, NAME)
    assert verify_image(PeImage.parse(signed.image), _certs(signed.root), EMPTY,
                        NAME) == expected


def test_an_unparsable_signature_is_no_signature(signed: Signed) -> None:
    from cvm.formats.pe.certificate_table import WinCertificate
    from cvm.image.signing import attach_signatures, strip_signatures

    body, _ = strip_signatures(signed.image)
    garbage = attach_signatures(body, (WinCertificate(b"\x30\x03\x02\x01\x00"),))
    assert verify_image(garbage, _certs(signed.root), EMPTY, NAME) == Decision(
        NAME, False, "no parsable Authenticode signature and the image hash is not in db", "db",
        _digest(garbage))


def test_a_signature_after_an_unparsable_entry_still_counts(signed: Signed) -> None:
    from cvm.formats.pe.certificate_table import WinCertificate
    from cvm.image.signing import attach_signatures, strip_signatures

    body, entries = strip_signatures(signed.image)
    for junk in (WinCertificate(b"\x30\x03\x02\x01\x00"),  # PKCS#7 that does not parse
                 WinCertificate(bytes(16) + b"other", certificate_type=0x0EF1)):  # not PKCS#7
        image = attach_signatures(body, (junk, *entries))
        decision = verify_image(image, _certs(signed.root), EMPTY, NAME)
        assert decision.allowed and decision.signature_index == 1


def test_certificates_given_as_der_have_the_zero_owner(signed: Signed) -> None:
    from cvm.guest.boot.secureboot import ZERO_OWNER, as_database

    entry = as_database([der(signed.root)]).certificates()[0]
    assert entry == SignatureData(ZERO_OWNER, der(signed.root))
    assert as_database([der(signed.root)], OWNER).certificates()[0].owner == OWNER
