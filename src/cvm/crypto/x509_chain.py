"""Parsing X.509 certificates and CRLs and checking AMD-style RSASSA-PSS signatures on them.

RFC 5280 (sections 4.1, 5.1, 6.1) as used by AMD's SEV-SNP PKI (AMD 57230):
ARK (self-signed) -> ASK or ASVK -> VCEK or VLEK, every link RSASSA-PSS with SHA-384,
MGF1-SHA-384 and a 48-byte salt. Parsing goes through ``asn1crypto`` (it accepts the VCEK's
serial number 0, which RFC 5280 forbids but AMD issues), except for certificates in AMD's own
shape, which :mod:`cvm.crypto.x509_der` reads from their DER with the same result at a
fraction of the cost; signatures through ``cryptography``.
Only the parameters AMD uses are accepted: anything else is a :class:`ChainError`.

The signature algorithm (with its RSASSA-PSS parameters, RFC 4055 section 3.1) is parsed with
the rest of the certificate or CRL, so a malformed parameter is a :class:`FormatError` like any
other malformed field, never an error escaping from a later check. The hash parameters inside
must be absent or NULL (RFC 4055); as RFC 5280 section 4.1.1.2 requires, the algorithm outside
the signed part equals the one inside it (a check Go's ``crypto/x509`` also makes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from asn1crypto import algos, crl, pem, x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cvm.crypto.rsa_pss import SALT_SIZE, verify_pss
from cvm.crypto.x509_der import read_certificate
from cvm.errors import ChainError, FormatError, SignatureError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
RSASSA_PSS = "rsassa_pss"
# asn1crypto raises these for malformed DER, however deep the malformed element sits.
_DER_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError)


@dataclass(frozen=True)
class SignatureAlgorithm:
    """A signature AlgorithmIdentifier; for RSASSA-PSS, its parameters (RFC 4055 3.1)."""

    name: str
    hash_algorithm: str | None = None
    mask_generation: str | None = None
    mask_hash_algorithm: str | None = None
    salt_length: int | None = None
    trailer_field: str | None = None


def _one_line(error: Exception) -> str:
    """asn1crypto's messages span lines; an error message is one line."""
    return " ".join(str(error).split())


# RFC 7468 section 3: the label is printable ASCII without hyphen-minus at its ends, single
# spaces and hyphens inside; OpenSSL and ``cryptography`` refuse any other encapsulation line.
_BOUNDARY = re.compile(rb"-----(BEGIN|END) ([!-,.-~](?:[ !-~]*[!-,.-~])?)-----")


def _check_armour(data: bytes) -> None:
    """Every block opens with an exact ``-----BEGIN label-----`` line and closes with the
    exact ``-----END label-----`` of the same label, as OpenSSL reads PEM (RFC 7468): a frame
    with a dash missing or a label that changes is malformed, not read all the same. Text
    outside the blocks is allowed; trailing white space on a boundary line is ignored."""
    label: bytes | None = None
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.rstrip()
        if label is None and not line.startswith(b"-----BEGIN"):
            continue
        if label is not None and not line.startswith(b"-"):
            continue
        boundary = _BOUNDARY.fullmatch(line)
        expected = b"BEGIN" if label is None else b"END"
        if boundary is None or boundary[1] != expected or (
                label is not None and boundary[2] != label):
            which = "a BEGIN" if label is None else f"the END {label.decode('ascii')}"
            raise FormatError(f"malformed PEM: line {number} is not {which} line "
                              "(-----BEGIN LABEL----- ... -----END LABEL-----)")
        label = boundary[2] if label is None else None
    if label is not None:
        raise FormatError(f"malformed PEM: no END line for the {label.decode('ascii')} block")


def _digest_name(digest: algos.DigestAlgorithm, what: str) -> str:
    # Parsed now, not later: asn1crypto itself refuses anything but NULL for SHA-2 hashes.
    if digest["parameters"].native is not None:
        raise FormatError(f"{what}: hash parameters that are neither absent nor NULL")
    return str(digest["algorithm"].native)


def _signature_algorithm(value: algos.SignedDigestAlgorithm, what: str) -> SignatureAlgorithm:
    """Parse an AlgorithmIdentifier completely (asn1crypto parses lazily)."""
    name = str(value["algorithm"].native)
    if name != RSASSA_PSS:
        return SignatureAlgorithm(name)
    params = value["parameters"]
    if not isinstance(params, algos.RSASSAPSSParams):
        raise FormatError(f"{what}: RSASSA-PSS without parameters")
    mgf = params["mask_gen_algorithm"]
    mgf_name = str(mgf["algorithm"].native)
    mgf_params = mgf["parameters"]
    if not isinstance(mgf_params, algos.DigestAlgorithm):
        raise FormatError(f"{what}: mask generation function {mgf_name} is not MGF1")
    return SignatureAlgorithm(
        name=name,
        hash_algorithm=_digest_name(params["hash_algorithm"], what),
        mask_generation=mgf_name,
        mask_hash_algorithm=_digest_name(mgf_params, what),
        salt_length=int(params["salt_length"].native),
        trailer_field=str(params["trailer_field"].native),
    )


@dataclass(frozen=True)
class Certificate:
    """A parsed certificate: what chain checks need, plus its exact DER."""

    der: bytes
    tbs: bytes = field(repr=False)
    serial: int
    issuer: tuple[tuple[str, str], ...]
    subject: tuple[tuple[str, str], ...]
    not_before: datetime
    not_after: datetime
    signature_algorithm: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    spki: bytes = field(repr=False)
    algorithm: SignatureAlgorithm = field(repr=False)
    tbs_signature_algorithm: bytes = field(repr=False)
    extensions: dict[str, tuple[bool, bytes]] = field(repr=False, hash=False, compare=False)

    @property
    def fingerprint_sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def common_name(self) -> str:
        return next((value for name, value in self.subject if name == "common_name"), "")

    def public_key(self) -> PublicKey:
        try:
            key = serialization.load_der_public_key(self.spki)
        except (ValueError, UnsupportedAlgorithm):
            raise FormatError(f"{self.common_name}: malformed public key") from None
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ChainError(f"{self.common_name}: unsupported public key type")
        return key

    def p384_public_key(self) -> ec.EllipticCurvePublicKey:
        """The certified key, which must be ECDSA P-384 (a VCEK or VLEK)."""
        key = self.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP384R1
        ):
            raise ChainError(f"{self.common_name}: the key is not an ECDSA P-384 key")
        return key

    def extension_values(self) -> dict[str, bytes]:
        return {oid: value for oid, (_, value) in self.extensions.items()}


def _name(value: x509.Name) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(atv["type"].native), str(atv["value"].native)) for rdn in value.chosen for atv in rdn
    )


def parse_certificate(der: bytes) -> Certificate:
    """Parse one DER certificate; raise FormatError if it is not one.

    AMD's certificates are read straight from their DER (:mod:`cvm.crypto.x509_der`); anything
    else, a malformed certificate included, goes through asn1crypto, with the same result."""
    fields = read_certificate(der)
    if fields is None:
        return parse_certificate_strictly(der)
    return Certificate(der=bytes(der), algorithm=AMD_PSS, **fields._asdict())


def parse_certificate_strictly(der: bytes) -> Certificate:
    """Parse one DER certificate with asn1crypto, the reference parser."""
    try:
        cert = x509.Certificate.load(der, strict=True)
        tbs = cert["tbs_certificate"]
        validity = tbs["validity"]
        extensions: dict[str, tuple[bool, bytes]] = {}
        for item in tbs["extensions"]:
            extensions[item["extn_id"].dotted] = (
                bool(item["critical"].native),
                item["extn_value"].contents,
            )
        return Certificate(
            der=bytes(der),
            tbs=tbs.dump(),
            serial=int(tbs["serial_number"].native),
            issuer=_name(tbs["issuer"]),
            subject=_name(tbs["subject"]),
            not_before=validity["not_before"].native,
            not_after=validity["not_after"].native,
            signature_algorithm=cert["signature_algorithm"].dump(),
            signature=cert["signature_value"].native,
            spki=tbs["subject_public_key_info"].dump(),
            algorithm=_signature_algorithm(cert["signature_algorithm"], "certificate"),
            tbs_signature_algorithm=tbs["signature"].dump(),
            extensions=extensions,
        )
    except _DER_ERRORS as error:
        raise FormatError(f"not a DER X.509 certificate ({_one_line(error)})") from None


def certificate_ders(data: bytes) -> list[bytes]:
    """The bytes of every certificate in ``data`` — one DER certificate, or the CERTIFICATE
    blocks of PEM data in file order — unparsed: what relays and stores need, the parse and
    every check left to whoever verifies them."""
    if not pem.detect(data):
        return [bytes(data)]
    _check_armour(data)
    try:
        ders = [der for kind, _, der in pem.unarmor(data, multiple=True) if kind == "CERTIFICATE"]
    except ValueError as error:
        raise FormatError(f"malformed PEM ({_one_line(error)})") from None
    if not ders:
        raise FormatError("no CERTIFICATE block in the PEM data")
    return ders


def load_certificates(data: bytes) -> list[Certificate]:
    """Every certificate in ``data``: one DER certificate, or PEM blocks in file order."""
    return [parse_certificate(der) for der in certificate_ders(data)]


def certificates_pem(ders: Iterable[bytes]) -> bytes:
    """``ders`` as PEM CERTIFICATE blocks, in order (what KDS serves as ``cert_chain``)."""
    return b"".join(pem.armor("CERTIFICATE", der) for der in ders)


AMD_PSS = SignatureAlgorithm(RSASSA_PSS, "sha384", "mgf1", "sha384", SALT_SIZE, "trailer_field_bc")


def _check_pss_algorithm(
    algorithm: SignatureAlgorithm, outer: bytes, inner: bytes, what: str
) -> None:
    if algorithm.name != RSASSA_PSS:
        raise ChainError(f"{what}: signature algorithm is not RSASSA-PSS")
    if algorithm != AMD_PSS:
        raise ChainError(f"{what}: RSASSA-PSS parameters are not SHA-384/MGF1-SHA-384/salt 48")
    if outer != inner:
        raise ChainError(f"{what}: the signature algorithm differs from the signed one")


def check_signed_by(child: Certificate, issuer: Certificate) -> None:
    """``child`` names ``issuer`` as its issuer and carries a valid PSS signature by it."""
    what = f"{child.common_name} <- {issuer.common_name}"
    if child.issuer != issuer.subject:
        raise ChainError(f"{what}: the issuer name does not match the issuing certificate")
    _check_pss_algorithm(
        child.algorithm, child.signature_algorithm, child.tbs_signature_algorithm, what
    )
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainError(f"{what}: the issuing key is not an RSA key")
    try:
        verify_pss(key, child.tbs, child.signature)
    except SignatureError:
        raise ChainError(f"{what}: the certificate signature does not verify") from None


def check_validity(cert: Certificate, now: datetime) -> None:
    if not cert.not_before <= now <= cert.not_after:
        raise ChainError(
            f"{cert.common_name}: not valid at {now.isoformat()} "
            f"(valid {cert.not_before.isoformat()} to {cert.not_after.isoformat()})"
        )


@dataclass(frozen=True)
class RevocationList:
    """A parsed CRL (RFC 5280 5.1): its issuer, update times and revoked serials."""

    der: bytes
    tbs: bytes = field(repr=False)
    issuer: tuple[tuple[str, str], ...]
    this_update: datetime
    next_update: datetime | None
    revoked_serials: frozenset[int]
    signature_algorithm: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    algorithm: SignatureAlgorithm = field(repr=False)
    tbs_signature_algorithm: bytes = field(repr=False)


def parse_crl(data: bytes) -> RevocationList:
    """Parse a DER or PEM CRL; raise FormatError if it is not one."""
    if pem.detect(data):
        _check_armour(data)
        try:
            kind, _, data = pem.unarmor(data)
        except ValueError as error:
            raise FormatError(f"malformed PEM CRL ({_one_line(error)})") from None
        if kind != "X509 CRL":  # a certificate chain given for a CRL, say
            raise FormatError(f"a PEM {kind} block, not an X509 CRL")
    try:
        parsed = crl.CertificateList.load(data, strict=True)
        tbs = parsed["tbs_cert_list"]
        revoked: Iterable[crl.RevokedCertificate] = tbs["revoked_certificates"]
        return RevocationList(
            der=bytes(data),
            tbs=tbs.dump(),
            issuer=_name(tbs["issuer"]),
            this_update=tbs["this_update"].native,
            next_update=tbs["next_update"].native,
            revoked_serials=frozenset(int(entry["user_certificate"].native) for entry in revoked),
            signature_algorithm=parsed["signature_algorithm"].dump(),
            signature=parsed["signature"].native,
            algorithm=_signature_algorithm(parsed["signature_algorithm"], "CRL"),
            tbs_signature_algorithm=tbs["signature"].dump(),
        )
    except _DER_ERRORS as error:
        raise FormatError(f"not a DER X.509 CRL ({_one_line(error)})") from None


def check_crl(revocations: RevocationList, issuer: Certificate, now: datetime) -> None:
    """The CRL is issued and signed by ``issuer`` and current at ``now``."""
    check_crl_signature(revocations, issuer)
    if not crl_is_current(revocations, now):
        raise ChainError(f"CRL: not current at {now.isoformat()}")


def crl_is_current(revocations: RevocationList, now: datetime) -> bool:
    """``now`` is from the CRL's thisUpdate to its nextUpdate (none: no end)."""
    return revocations.this_update <= now and (
        revocations.next_update is None or now <= revocations.next_update
    )


def check_crl_signature(revocations: RevocationList, issuer: Certificate) -> None:
    """The CRL is issued and signed by ``issuer`` (its name, AMD's RSASSA-PSS parameters, the
    signature), whatever the time."""
    if revocations.issuer != issuer.subject:
        raise ChainError("CRL: issuer does not match the root certificate")
    _check_pss_algorithm(
        revocations.algorithm, revocations.signature_algorithm,
        revocations.tbs_signature_algorithm, "CRL",
    )
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ChainError("CRL: the issuing key is not an RSA key")
    try:
        verify_pss(key, revocations.tbs, revocations.signature)
    except SignatureError:
        raise ChainError("CRL: the signature does not verify") from None
