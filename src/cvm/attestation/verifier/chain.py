"""Verifying the ARK -> ASK -> VCEK chain of an SNP report, with a cache of verified chains.

AMD 57230 (certificate chain, signature algorithm, VCEK extensions); the
checks are those real verifiers make (go-sev-guest ``verify``, snpguest ``verify certs``):

1. the ARK hashes to a trusted fingerprint (:mod:`.trust`) — that names the product;
2. ARK is self-signed, ASK is signed by the ARK, VCEK by the ASK (RSASSA-PSS SHA-384,
   salt 48, issuer names matching), ARK and ASK are CAs, the VCEK key is P-384;
3. every certificate is valid now, and, when a CRL is given, the CRL is the ARK's, current,
   and does not list the ASK;
4. the VCEK's AMD extensions decode and its productName belongs to the trusted product.

RSA-4096 verifications are the expensive part, so a verified chain is cached by its exact
bytes (and CRL): later reports from the same chip and TCB only pay for one ECDSA verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.amd_ecdsa import PublicKey
from cvm.crypto.x509_chain import (
    Certificate,
    check_crl,
    check_signed_by,
    check_validity,
    parse_certificate,
    parse_crl,
)
from cvm.errors import ChainError, FormatError
from cvm.formats.snp.vcek_extensions import VcekExtensions

OID_BASIC_CONSTRAINTS = "2.5.29.19"
CACHE_LIMIT = 256


@dataclass(frozen=True)
class VerifiedChain:
    """What a verified chain establishes: the product, the VCEK key and its claims."""

    product: str
    ark_fingerprint: str
    vcek_public_key: PublicKey
    claims: VcekExtensions
    valid_from: datetime
    valid_until: datetime


def _require_ca(cert: Certificate) -> None:
    constraints = cert.extensions.get(OID_BASIC_CONSTRAINTS)
    # BasicConstraints ::= SEQUENCE { cA BOOLEAN TRUE, ... }: 30 len 01 01 ff, critical (AMD's)
    if constraints is None or not constraints[0] or constraints[1][2:5] != b"\x01\x01\xff":
        raise ChainError(f"{cert.common_name}: not marked as a CA (BasicConstraints)")


class ChainVerifier:
    """Verifies chains against fixed trust roots and remembers the ones that verified."""

    def __init__(self, roots: TrustRoots) -> None:
        self.roots = roots
        self._cache: dict[tuple[bytes, bytes, bytes, bytes], VerifiedChain] = {}

    def verify(
        self, vcek: bytes, ask: bytes, ark: bytes, now: datetime, crl: bytes | None = None
    ) -> VerifiedChain:
        """Verify the chain (DER certificates) at ``now``; raise ChainError if it fails."""
        key = (bytes(vcek), bytes(ask), bytes(ark), bytes(crl or b""))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._verify_uncached(vcek, ask, ark, now, crl)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = cached
        if not cached.valid_from <= now <= cached.valid_until:
            raise ChainError(
                f"the certificate chain is not valid at {now.isoformat()} (valid "
                f"{cached.valid_from.isoformat()} to {cached.valid_until.isoformat()})"
            )
        return cached

    def _verify_uncached(
        self, vcek_der: bytes, ask_der: bytes, ark_der: bytes, now: datetime, crl: bytes | None
    ) -> VerifiedChain:
        signed = signed_chain(self.roots, vcek_der, ask_der, ark_der)
        certificates = (signed.ark, signed.ask, signed.vcek)
        for cert in certificates:
            check_validity(cert, now)
        valid_from, valid_until = validity_window(certificates)
        if crl is not None:
            revocations = parse_crl(crl)
            check_crl(revocations, signed.ark, now)
            if signed.ask.serial in revocations.revoked_serials:
                raise ChainError(
                    f"{signed.ask.common_name} (serial {signed.ask.serial:#x}) is revoked")
            if revocations.next_update is not None:
                valid_until = min(valid_until, revocations.next_update)
            valid_from = max(valid_from, revocations.this_update)
        return signed.verified(valid_from, valid_until)


def validity_window(certificates: tuple[Certificate, ...]) -> tuple[datetime, datetime]:
    """When every one of ``certificates`` is valid: the latest notBefore, earliest notAfter."""
    return (max(cert.not_before for cert in certificates),
            min(cert.not_after for cert in certificates))


def authenticated_ask(roots: TrustRoots, ask_der: bytes, ark_der: bytes
                      ) -> tuple[str, Certificate, Certificate]:
    """The product of a KDS ``cert_chain`` (ASK and ARK, DER) whose ARK is a trusted root,
    self-signed, and signs the ASK, both marked as CAs; with the ASK and ARK parsed. Time
    aside: the validity of each certificate is the verifier's check at use."""
    ark = parse_certificate(ark_der)
    product = roots.product_of(ark.fingerprint_sha256)
    if product is None:
        raise ChainError(
            f"the root {ark.common_name!r} (SHA-256 {ark.fingerprint_sha256}) is not "
            f"among the trusted roots ({roots.label})"
        )
    ask = parse_certificate(ask_der)
    check_signed_by(ark, ark)
    check_signed_by(ask, ark)
    _require_ca(ark)
    _require_ca(ask)
    return product, ask, ark


def vcek_claims(vcek: Certificate, product: str) -> VcekExtensions:
    """The AMD extensions of ``vcek``, whose productName must be ``product``'s."""
    try:
        claims = VcekExtensions.from_extensions(vcek.extension_values())
    except FormatError as error:
        raise ChainError(f"VCEK extensions: {error}") from None
    if not claims.product_name.split("-")[0] == product:
        raise ChainError(
            f"the VCEK is for product {claims.product_name!r}, the root is {product}'s"
        )
    return claims


@dataclass(frozen=True)
class SignedChain:
    """A chain whose signatures, CA marks, VCEK key and claims hold, time and CRL aside."""

    product: str
    ark: Certificate
    ask: Certificate
    vcek: Certificate
    vcek_public_key: PublicKey
    claims: VcekExtensions

    def verified(self, valid_from: datetime, valid_until: datetime) -> VerifiedChain:
        return VerifiedChain(
            product=self.product,
            ark_fingerprint=self.ark.fingerprint_sha256,
            vcek_public_key=self.vcek_public_key,
            claims=self.claims,
            valid_from=valid_from,
            valid_until=valid_until,
        )


def signed_chain(roots: TrustRoots, vcek_der: bytes, ask_der: bytes, ark_der: bytes
                 ) -> SignedChain:
    """ARK -> ASK -> VCEK checked but for time and revocation (:func:`authenticated_ask`, the
    VCEK signed by the ASK, its P-384 key, its claims of the ARK's product)."""
    product, ask, ark = authenticated_ask(roots, ask_der, ark_der)
    vcek = parse_certificate(vcek_der)
    check_signed_by(vcek, ask)
    public_key = vcek.p384_public_key()
    return SignedChain(product, ark, ask, vcek, public_key, vcek_claims(vcek, product))


def authenticate_chain(roots: TrustRoots, vcek_der: bytes, ask_der: bytes, ark_der: bytes
                       ) -> VerifiedChain:
    """The chain checked as :meth:`ChainVerifier.verify` checks it, whatever the time and
    without a CRL: what the collateral cache checks when a VCEK is filed or listed. Its
    window is when all three certificates are valid."""
    signed = signed_chain(roots, vcek_der, ask_der, ark_der)
    return signed.verified(*validity_window((signed.ark, signed.ask, signed.vcek)))
