"""X.509 certificates as UEFI firmware uses them: loading, issuer checks, partial chains.

edk2 ``CryptoPkg/Library/BaseCryptLib/Pk/CryptPkcs7VerifyCommon.c`` verifies with OpenSSL's
``X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_NO_CHECK_TIME`` and ``X509_PURPOSE_ANY``: any
certificate of the chain may be the trust anchor (a root, an intermediate or the signer itself),
validity periods are ignored and no extended key usage is required. :func:`chain_to_anchor`
does the same: it walks from the signer through the certificates the signature carries, checking
each link's signature, until it reaches a certificate equal to the anchor or issued by it.
RFC 5280 §4.1 (certificate fields) and §6.1 (path validation, minus the time checks).
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning

from cvm.errors import FormatError, UsageError

Certificate = x509.Certificate
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
Extension = TypeVar("Extension", bound=x509.ExtensionType)
MAX_CHAIN_LENGTH = 8
VERSION_TAG = 0xA0  # [0] EXPLICIT Version, present in v2 and v3 certificates
# The extensions OpenSSL 3.0 processes (``X509_supported_extension``; edk2 builds it
# ``no-rfc3779``): netscape-cert-type, keyUsage, subjectAltName, basicConstraints,
# certificatePolicies, cRLDistributionPoints, extKeyUsage, OCSP noCheck, policyConstraints,
# proxyCertInfo, nameConstraints, policyMappings, inhibitAnyPolicy.
HANDLED_EXTENSIONS = frozenset({
    "2.16.840.1.113730.1.1", "2.5.29.15", "2.5.29.17", "2.5.29.19", "2.5.29.32", "2.5.29.31",
    "2.5.29.37", "1.3.6.1.5.5.7.48.1.5", "2.5.29.36", "1.3.6.1.5.5.7.1.14", "2.5.29.30",
    "2.5.29.33", "2.5.29.54",
})
HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def load_certificate(data: bytes) -> Certificate:
    """A certificate from DER or PEM bytes."""
    try:
        with warnings.catch_warnings():
            # OpenSSL (and so edk2) accepts non-positive serial numbers; so does cvm
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            if data.lstrip().startswith(b"-----BEGIN"):
                certificate = x509.load_pem_x509_certificate(data)
            else:
                certificate = x509.load_der_x509_certificate(data)
            # cryptography parses lazily: touch every field used later so errors surface here
            _ = (certificate.subject, certificate.issuer, certificate.serial_number,
                 certificate.extensions, certificate.tbs_certificate_bytes,
                 certificate.signature)
    except (ValueError, x509.InvalidVersion, x509.DuplicateExtension,
            x509.UnsupportedGeneralNameType) as error:
        raise FormatError(f"not an X.509 certificate: {error}") from None
    return certificate


def brief(error: Exception) -> str:
    """The part of a parser's message that says what is wrong: OpenSSL's key loader explains
    every way a key may fail to load, then gives the one that did after ``Details:``."""
    text = str(error)
    _, found, details = text.partition("Details: ")
    return details.strip() if found and details.strip() else text


def load_private_key(data: bytes) -> PrivateKey:
    """An RSA or EC private key from PEM or DER (unencrypted)."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise FormatError(f"not an unencrypted private key: {brief(error)}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UsageError("only RSA and EC private keys can sign")
    return key


def serial_of(certificate: Certificate) -> int:
    """The serial number, accepting non-positive ones as OpenSSL does (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return certificate.serial_number


def der(certificate: Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def pem(certificate: Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def tbs_sha256(certificate: Certificate) -> bytes:
    """SHA-256 of the TBSCertificate: the value an EFI_CERT_X509_SHA256 dbx entry holds."""
    return tbs_digest(certificate, "sha256")


def tbs_digest(certificate: Certificate, hash_name: str) -> bytes:
    """The digest of the DER TBSCertificate (RFC 5280 §4.1.1.1) with ``hash_name``: what an
    EFI_CERT_X509_SHA256/384/512 entry holds (edk2 ``X509GetTBSCert`` then the hash)."""
    return hashlib.new(hash_name, certificate.tbs_certificate_bytes).digest()


def subject_text(certificate: Certificate) -> str:
    return certificate.subject.rfc4514_string()


def issued_by(certificate: Certificate, issuer: Certificate) -> bool:
    """True when ``issuer``'s name and key produced ``certificate``'s signature.

    OpenSSL's ``X509_verify`` as edk2 builds it: RSA PKCS#1 v1.5, RSASSA-PSS (with the
    certificate's own PSS parameters) and ECDSA, each only under a key of its own type. DSA is
    not built into edk2's OpenSSL (``no-dsa``), nor are EdDSA keys into the OpenSSL that OVMF
    links (``OpensslLib``/``OpensslLibCrypto``, configured ``no-ec``): such a signature, or one
    whose algorithm is unknown, issues nothing.
    """
    if certificate.issuer != issuer.subject or not _algorithms_agree(certificate):
        return False
    try:
        algorithm = certificate.signature_hash_algorithm
        scheme = certificate.signature_algorithm_parameters
    except (UnsupportedAlgorithm, ValueError):  # unknown, or malformed RSASSA-PSS parameters
        return False
    if not isinstance(algorithm, hashes.HashAlgorithm):
        return False
    key = issuer.public_key()
    signature, message = certificate.signature, certificate.tbs_certificate_bytes
    try:
        if isinstance(key, rsa.RSAPublicKey) and isinstance(scheme, padding.PKCS1v15 | padding.PSS):
            key.verify(signature, message, scheme, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(scheme, ec.ECDSA):
            key.verify(signature, message, scheme)
        else:
            return False
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True


def _algorithms_agree(certificate: Certificate) -> bool:
    """The signature AlgorithmIdentifier inside the TBSCertificate equals the outer one, byte
    for byte (RFC 5280 §4.1.1.2; OpenSSL's ``X509_verify`` compares them, parameters too).

    Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue } and
    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, ... }; the
    DER was checked when the certificate was loaded.
    """
    tbs = certificate.tbs_certificate_bytes
    whole = der(certificate)
    outer = _element(whole, _header_size(whole) + len(tbs))
    at = _header_size(tbs)
    if tbs[at] == VERSION_TAG:
        at += len(_element(tbs, at))
    at += len(_element(tbs, at))
    return _element(tbs, at) == outer


def _header_size(data: bytes, start: int = 0) -> int:
    """Tag and length octets of the DER element at ``start`` (X.690 §8.1.3, definite form)."""
    first = data[start + 1]
    return 2 if first < 0x80 else 2 + (first & 0x7F)


def _element(data: bytes, start: int) -> bytes:
    """The whole DER element (tag, length, contents) at ``start``."""
    head = _header_size(data, start)
    first = data[start + 1]
    size = first if head == 2 else int.from_bytes(data[start + 2 : start + head], "big")
    return data[start : start + head + size]


def verify_signature(
    signer: Certificate, signature: bytes, message: bytes, algorithm: hashes.HashAlgorithm
) -> bool:
    """Check an RSA PKCS#1 v1.5 or ECDSA signature by ``signer``'s key over ``message`` (a
    PKCS#7 signer's signature: OpenSSL's PKCS#7 knows no RSASSA-PSS signer)."""
    try:
        key = signer.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(algorithm))
        else:
            return False
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True


def sign_message(key: PrivateKey, message: bytes, hash_name: str = "sha256") -> bytes:
    """RSA PKCS#1 v1.5 (or ECDSA) signature of ``message`` with ``hash_name``."""
    algorithm = HASHES[hash_name]
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), algorithm)
    return key.sign(message, ec.ECDSA(algorithm))


def _may_issue(certificate: Certificate) -> bool:
    """OpenSSL ``X509_check_ca`` as the chain check uses it: a keyUsage without keyCertSign
    refuses, whatever basicConstraints says; else basicConstraints cA when present; else a
    self-signed v1 certificate, or a keyUsage (which then has keyCertSign). A v3 certificate
    with neither extension issues nothing."""
    key_usage = _extension(certificate, x509.KeyUsage)
    if key_usage is not None and not key_usage.key_cert_sign:
        return False
    constraints = _extension(certificate, x509.BasicConstraints)
    if constraints is not None:
        return constraints.ca
    if certificate.version == x509.Version.v1:
        return certificate.issuer == certificate.subject
    return key_usage is not None


def _extension(certificate: Certificate, kind: type[Extension]) -> Extension | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _critical_extensions_handled(certificate: Certificate) -> bool:
    """OpenSSL refuses a chain holding a certificate with a critical extension it does not
    process (``X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION``; edk2 does not set
    ``X509_V_FLAG_IGNORE_CRITICAL``)."""
    return all(extension.oid.dotted_string in HANDLED_EXTENSIONS
               for extension in certificate.extensions if extension.critical)


def chain_to_anchor(
    signer: Certificate, intermediates: list[Certificate], anchor: Certificate
) -> list[Certificate] | None:
    """The chain signer → ... → anchor (edk2 partial-chain rules), or None when there is none."""
    anchor_der = der(anchor)
    chain = [signer]
    current = signer
    for _ in range(MAX_CHAIN_LENGTH):
        if der(current) == anchor_der:
            return _handled(chain)
        if issued_by(current, anchor) and _may_issue(anchor):
            return _handled([*chain, anchor])
        issuer = next(
            (c for c in intermediates
             if c not in chain and _may_issue(c) and issued_by(current, c)),
            None,
        )
        if issuer is None:
            return None
        chain.append(issuer)
        current = issuer
    return None


def _handled(chain: list[Certificate]) -> list[Certificate] | None:
    return chain if all(_critical_extensions_handled(c) for c in chain) else None


def has_rsa_key(certificate: Certificate) -> bool:
    """Whether the certificate's subject key is RSA (what edk2's ``RsaGetPublicKeyFromX509``
    asks of an X.509 list enrolled in Setup Mode)."""
    return isinstance(certificate.public_key(), rsa.RSAPublicKey)


def generate_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def rsa_public_numbers(key: PrivateKey) -> tuple[int, int] | None:
    """The modulus and public exponent of an RSA private key; None for any other key type."""
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    numbers = key.public_key().public_numbers()
    return numbers.n, numbers.e


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_certificate(
    common_name: str,
    key: PrivateKey,
    issuer: tuple[Certificate, PrivateKey] | None = None,
    ca: bool = True,
    serial: int | None = None,
    not_before: datetime.datetime | None = None,
    key_cert_sign: bool | None = None,
) -> Certificate:
    """A certificate for ``key``: self-signed, or issued by ``issuer`` (certificate, key).

    Carries the code-signing extended key usage, as signing tools expect of a signer, and
    basicConstraints (``ca``) — or, when ``key_cert_sign`` is given, no basicConstraints but a
    keyUsage with or without keyCertSign, as some older CAs were issued.
    """
    start = not_before or datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name)])
    issuer_name, issuer_key = (name, key) if issuer is None else (issuer[0].subject, issuer[1])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
    )
    if key_cert_sign is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
    builder = (
        builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())
