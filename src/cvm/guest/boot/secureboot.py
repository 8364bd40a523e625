"""UEFI Secure Boot image verification as edk2 firmware does it: db, dbx and Authenticode.

UEFI 2.10 §32.5 "UEFI Image Validation" and edk2
``SecurityPkg/Library/DxeImageVerificationLib/DxeImageVerificationLib.c``
(``DxeImageVerificationHandler``, ``IsForbiddenByDbx``, ``IsAllowedByDb``,
``IsCertHashFoundInDbx``):

- an unsigned image is allowed only when its SHA-256 Authenticode hash is an EFI_CERT_SHA256
  entry of db and not of dbx;
- for a signed image every WIN_CERTIFICATE is examined in order; a signature whose digest is not
  the image's is skipped. A signature is forbidden (the image is refused, whatever else) when an
  EFI_CERT_X509 entry of dbx verifies it (partial chain: the dbx certificate may be the signer,
  an intermediate or an issuer of one), when it carries no certificate at all while dbx is not
  empty, or when the TBS hash (SHA-256, SHA-384 or SHA-512) of any certificate it carries is an
  EFI_CERT_X509_SHA256/384/512 entry of dbx;
- the first EFI_CERT_X509 entry of db that verifies a signature (partial chain, validity
  ignored) is its trust anchor; the signature is allowed only when the TBS hash of that anchor
  is not in dbx either. The anchor is the one certificate of the chain the signature does not
  carry, so with this check every certificate of the chain is weighed against dbx. As edk2, a
  revoked anchor ends the search of db for that signature;
- the image hash in dbx refuses the image and in db allows it.

Revocation times: an EFI_CERT_X509_SHA* entry carries an EFI_TIME after the hash. edk2 lets a
signature through a listed certificate only when a timestamp countersignature, verified against
a certificate of dbt, proves the image was signed before that time (``PassTimestampCheck``); a
zero time, or no dbt, means always revoked. cvm keeps no dbt and does not verify timestamp
countersignatures, so it decides as edk2 does without dbt: a listed certificate is revoked
whatever its revocation time.

The :class:`Decision` names the image, the verdict, the reason, the database consulted and, for
an allowed image, the exact EFI_SIGNATURE_DATA of db that matched: the firmware measures that
entry into PCR 7 as EV_EFI_VARIABLE_AUTHORITY (TCG PC Client PFP 1.05 §3.3.4.8).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.crypto.authenticode import AuthenticodeSignature
from cvm.crypto.x509_edk2 import Certificate, der, load_certificate, subject_text, tbs_digest
from cvm.errors import FormatError, PolicyError, VerificationError
from cvm.formats.pe.authenticode import digest_of
from cvm.formats.pe.image import PeImage
from cvm.formats.uefi.guids import (
    EFI_CERT_SHA1,
    EFI_CERT_SHA256,
    EFI_CERT_SHA384,
    EFI_CERT_SHA512,
    EFI_CERT_X509,
    EFI_CERT_X509_SHA256,
    EFI_CERT_X509_SHA384,
    EFI_CERT_X509_SHA512,
    EFI_IMAGE_SECURITY_DATABASE,
    SIGNATURE_TYPE_NAMES,
)
from cvm.formats.uefi.signature_list import SignatureData, SignatureDatabase, SignatureList
from cvm.wire import Guid

HASH_SIGNATURE_TYPES = {
    "sha1": EFI_CERT_SHA1, "sha256": EFI_CERT_SHA256, "sha384": EFI_CERT_SHA384,
    "sha512": EFI_CERT_SHA512,
}
X509_HASH_TYPES = {
    EFI_CERT_X509_SHA256: "sha256", EFI_CERT_X509_SHA384: "sha384",
    EFI_CERT_X509_SHA512: "sha512",
}
ZERO_OWNER = Guid.parse("00000000-0000-0000-0000-000000000000")


@dataclass(frozen=True)
class Decision:
    """The verdict on one image, why, and which entry of which database decided it."""

    image: str
    allowed: bool
    reason: str
    database: str
    image_digest: bytes
    matched: SignatureData | None = None
    signature_type: Guid | None = None
    signature_index: int | None = None
    chain: tuple[bytes, ...] = ()
    variable_vendor: Guid = EFI_IMAGE_SECURITY_DATABASE

    @property
    def verdict(self) -> str:
        return "allowed" if self.allowed else "refused"

    def __str__(self) -> str:
        return f"{self.image}: {self.verdict} ({self.reason}; database {self.database})"

    def appraise(self) -> Decision:
        """Return self when allowed, else raise PolicyError naming image, reason and database."""
        if not self.allowed:
            raise PolicyError(str(self))
        return self


def as_database(
    value: SignatureDatabase | bytes | list[bytes] | tuple[bytes, ...],
    owner: Guid = ZERO_OWNER,
) -> SignatureDatabase:
    """A signature database from ESL bytes, a database, or DER/PEM certificates (``owner``)."""
    if isinstance(value, SignatureDatabase):
        return value
    if isinstance(value, bytes | bytearray):
        return SignatureDatabase.parse(bytes(value))
    lists = tuple(
        SignatureList.of(EFI_CERT_X509, owner, der(load_certificate(item)))
        for item in value
    )
    return SignatureDatabase(lists)


@dataclass(frozen=True)
class ImageSignature:
    """One WIN_CERTIFICATE's Authenticode signature and the image digest (same algorithm)."""

    index: int
    signature: AuthenticodeSignature
    digest: bytes


def signatures_of(image: PeImage) -> list[ImageSignature]:
    """Each parsable Authenticode signature of ``image`` with the image digest it must match."""
    found = []
    for index, entry in enumerate(image.certificates):
        if entry.pkcs7 is None:
            continue
        try:
            signature = AuthenticodeSignature.parse(entry.pkcs7)
        except FormatError:
            continue
        found.append(ImageSignature(index, signature, digest_of(image, signature.digest_algorithm)))
    return found


def certificate_verifies(signature: AuthenticodeSignature, digest: bytes, anchor: bytes) -> bool:
    """True when the DER certificate ``anchor`` verifies ``signature`` (edk2 Pkcs7Verify)."""
    try:
        signature.verify(digest, load_certificate(anchor))
    except (VerificationError, FormatError):
        return False
    return True


def chain_certificates(signature: AuthenticodeSignature) -> tuple[Certificate, ...]:
    """The certificates the signature carries (edk2 ``Pkcs7GetSigners``' certificate stack)."""
    return signature.signed_data.certificates


def find_hash(database: SignatureDatabase, alg: str, digest: bytes) -> SignatureData | None:
    kind = HASH_SIGNATURE_TYPES.get(alg)
    return next((s for s in database.of_type(kind) if s.data == digest), None) if kind else None


@dataclass(frozen=True)
class Revocation:
    """Why dbx revokes a signature: the reason, the dbx entry and its signature type."""

    reason: str
    entry: SignatureData | None
    signature_type: Guid | None


def revoked_certificate(
    certificate: Certificate, dbx: SignatureDatabase
) -> tuple[SignatureData, Guid] | None:
    """edk2 ``IsCertHashFoundInDbx``: the first EFI_CERT_X509_SHA256/384/512 entry of ``dbx``
    (in database order) holding the TBS hash of ``certificate``, with its type, or None.

    Each entry is the hash followed by the 16-byte EFI_TIME of revocation (ignored: see the
    module docstring)."""
    for signature_type, signature in dbx.entries():
        hash_name = X509_HASH_TYPES.get(signature_type)
        if hash_name is None:
            continue
        digest = tbs_digest(certificate, hash_name)
        if signature.data[: len(digest)] == digest:
            return signature, signature_type
    return None


def forbidden_by(signature: AuthenticodeSignature, digest: bytes,
                 dbx: SignatureDatabase) -> Revocation | None:
    """edk2 ``IsForbiddenByDbx``: why ``dbx`` revokes this signature, or None."""
    if not dbx.lists:
        return None  # edk2: no dbx variable, nothing is forbidden
    for entry in dbx.certificates():
        if certificate_verifies(signature, digest, entry.data):
            return Revocation("a signing certificate is in dbx", entry, EFI_CERT_X509)
    carried = chain_certificates(signature)
    if not carried:
        return Revocation("the signature carries no certificate to check against dbx",
                          None, None)
    for certificate in carried:
        found = revoked_certificate(certificate, dbx)
        if found is not None:
            return Revocation(
                f"the TBS hash of {subject_text(certificate)}, a certificate of the signature, "
                f"is in dbx ({SIGNATURE_TYPE_NAMES[found[1]]})", found[0], found[1])
    return None


@dataclass(frozen=True)
class Authority:
    """The db entry that verified a signature, the chain to it, and its dbx revocation if any."""

    entry: SignatureData
    chain: tuple[Certificate, ...]
    revoked: Revocation | None = None


def allowed_by(signature: AuthenticodeSignature, digest: bytes, db: SignatureDatabase,
               dbx: SignatureDatabase = SignatureDatabase()) -> Authority | None:
    """edk2 ``IsAllowedByDb``: the first X.509 entry of db verifying the signature, with the
    dbx revocation of that anchor's TBS hash when there is one; None when no entry verifies."""
    for entry in db.certificates():
        try:
            anchor = load_certificate(entry.data)
            chain = signature.verify(digest, anchor)
        except (VerificationError, FormatError):
            continue
        found = revoked_certificate(anchor, dbx)
        if found is None:
            return Authority(entry, tuple(chain))
        reason = (f"the db certificate {subject_text(anchor)} that the signature chains to is "
                  f"in dbx ({SIGNATURE_TYPE_NAMES[found[1]]})")
        return Authority(entry, tuple(chain), Revocation(reason, found[0], found[1]))
    return None


def verify_image(
    pe_bytes: bytes | PeImage,
    db: SignatureDatabase | bytes,
    dbx: SignatureDatabase | bytes = b"",
    name: str = "image",
) -> Decision:
    """The firmware's decision on the PE image ``pe_bytes`` under ``db`` and ``dbx``.

    Malformed PE files raise FormatError; every other outcome is a Decision.
    """
    image = pe_bytes if isinstance(pe_bytes, PeImage) else PeImage.parse(pe_bytes)
    allow, deny = as_database(db), as_database(dbx)
    sha256 = digest_of(image, "sha256")
    if not image.certificates:
        return _unsigned(name, sha256, allow, deny)
    decision: Decision | None = None
    revoked: Decision | None = None
    signatures = signatures_of(image)
    matching = [s for s in signatures if s.signature.digest == s.digest]
    for item in matching:
        forbidden = forbidden_by(item.signature, item.digest, deny)
        if forbidden is not None:
            return Decision(name, False, forbidden.reason, "dbx", sha256, forbidden.entry,
                            forbidden.signature_type, item.index)
        if decision is None:
            found = allowed_by(item.signature, item.digest, allow, deny)
            if found is not None and found.revoked is None:
                decision = Decision(
                    name, True, "a signature chains to a certificate in db", "db", sha256,
                    found.entry, EFI_CERT_X509, item.index, tuple(der(c) for c in found.chain),
                )
            elif found is not None and revoked is None:
                assert found.revoked is not None
                revoked = Decision(name, False, found.revoked.reason, "dbx", sha256,
                                   found.revoked.entry, found.revoked.signature_type, item.index)
        alg = item.signature.digest_algorithm
        listed = find_hash(deny, alg, item.digest)
        if listed is not None:
            return Decision(name, False, f"the image's {alg} hash is in dbx", "dbx", sha256,
                            listed, HASH_SIGNATURE_TYPES[alg], item.index)
        if decision is None:
            listed = find_hash(allow, alg, item.digest)
            if listed is not None:
                decision = Decision(name, True, f"the image's {alg} hash is in db", "db", sha256,
                                    listed, HASH_SIGNATURE_TYPES[alg], item.index)
    if decision is not None:
        return decision
    if revoked is not None:
        return revoked
    if signatures and not matching:
        reason = "the image hash differs from the digest its signatures carry"
    elif not signatures:
        reason = "no parsable Authenticode signature and the image hash is not in db"
    else:
        reason = "no matching signer: no certificate or hash in db verifies the image"
    return Decision(name, False, reason, "db", sha256)


def _unsigned(name: str, sha256: bytes, allow: SignatureDatabase,
              deny: SignatureDatabase) -> Decision:
    listed = find_hash(deny, "sha256", sha256)
    if listed is not None:
        return Decision(name, False, "unsigned and its sha256 hash is in dbx", "dbx", sha256,
                        listed, EFI_CERT_SHA256)
    listed = find_hash(allow, "sha256", sha256)
    if listed is not None:
        return Decision(name, True, "unsigned, its sha256 hash is in db", "db", sha256,
                        listed, EFI_CERT_SHA256)
    return Decision(name, False, "unsigned and its hash is not in db", "db", sha256)

