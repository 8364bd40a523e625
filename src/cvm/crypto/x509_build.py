"""Building X.509 certificates and CRLs byte for byte as AMD's key distribution service does.

RFC 5280 (Certificate section 4.1, CertificateList section 5.1) in DER (X.690). A small
encoder lives here rather than a general library so that every byte is chosen: AMD's
certificates encode the RSASSA-PSS parameters with an explicit ``trailerField 1`` (RFC 4055
section 3.1), order the subject RDNs OU, C, L, ST, O, CN with C as PrintableString and the
rest UTF8String, and carry extensions in a fixed order (AMD 57230 VCEK extensions; checked against
the real Milan ARK, ASK and VCEK in the project's vectors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cvm.crypto.rsa_pss import RsaPrivateKey, sign_pss
from cvm.errors import UsageError

# AlgorithmIdentifier{rsassaPss, {sha384, mgf1(sha384), saltLength 48, trailerField 1}},
# exactly as in AMD's certificates.
RSASSA_PSS_SHA384_ALGORITHM = bytes.fromhex(
    "304606092a864886f70d01010a3039a00f300d06096086480165030402020500a11c301a06092a864886f7"
    "0d010108300d06096086480165030402020500a203020130a303020101"
)
OID_KEY_USAGE = "2.5.29.15"
OID_SUBJECT_KEY_ID = "2.5.29.14"
OID_AUTHORITY_KEY_ID = "2.5.29.35"
OID_BASIC_CONSTRAINTS = "2.5.29.19"
OID_CRL_DISTRIBUTION_POINTS = "2.5.29.31"
OID_CRL_NUMBER = "2.5.29.20"
_NAME_ATTRIBUTES = (
    ("2.5.4.11", "organizational_unit_name", 0x0C),
    ("2.5.4.6", "country_name", 0x13),
    ("2.5.4.7", "locality_name", 0x0C),
    ("2.5.4.8", "state_or_province_name", 0x0C),
    ("2.5.4.10", "organization_name", 0x0C),
    ("2.5.4.3", "common_name", 0x0C),
)


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def der_integer(value: int) -> bytes:
    if value < 0:
        raise UsageError("negative INTEGER not supported")
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_sequence(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def der_oid(dotted: str) -> bytes:
    """X.690 8.19: the first two arcs make one subidentifier (40 X + Y, which passes 127 under
    arc 2), each subidentifier in base 128, high bit set on all but its last byte."""
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def der_octet_string(data: bytes) -> bytes:
    return tlv(0x04, data)


def der_bit_string(data: bytes, unused_bits: int = 0) -> bytes:
    return tlv(0x03, bytes([unused_bits]) + data)


def der_time(moment: datetime) -> bytes:
    """UTCTime from 1950 through 2049, GeneralizedTime outside (RFC 5280 4.1.2.5): a UTCTime's
    two-digit year stands for 1950-2049 only."""
    moment = moment.astimezone(UTC)
    seconds = moment.strftime("%m%d%H%M%SZ")
    if 1950 <= moment.year < 2050:
        return tlv(0x17, f"{moment.year % 100:02d}{seconds}".encode())
    return tlv(0x18, f"{moment.year:04d}{seconds}".encode())


@dataclass(frozen=True)
class DistinguishedName:
    """An AMD-style name: OU, C, L, ST, O, CN, one attribute per RDN, in that order."""

    common_name: str
    organization_name: str = "Advanced Micro Devices"
    organizational_unit_name: str = "Engineering"
    country_name: str = "US"
    locality_name: str = "Santa Clara"
    state_or_province_name: str = "CA"

    def to_der(self) -> bytes:
        rdns = []
        for oid, attribute, tag in _NAME_ATTRIBUTES:
            value = getattr(self, attribute).encode()
            rdns.append(tlv(0x31, der_sequence(der_oid(oid), tlv(tag, value))))
        return der_sequence(*rdns)


@dataclass(frozen=True)
class Extension:
    oid: str
    value: bytes
    critical: bool = False

    def to_der(self) -> bytes:
        critical = tlv(0x01, b"\xff") if self.critical else b""
        return der_sequence(der_oid(self.oid), critical, der_octet_string(self.value))


def key_identifier(spki_der: bytes) -> bytes:
    """SHA-1 of the subjectPublicKey BIT STRING value (RFC 5280 4.2.1.2, method 1)."""
    # SubjectPublicKeyInfo = SEQUENCE { AlgorithmIdentifier, BIT STRING }: skip to the bits.
    body = _contents(spki_der)
    algorithm_end = _element_end(body, 0)
    return hashlib.sha1(_contents(body[algorithm_end:])[1:]).digest()


def _element_end(data: bytes, offset: int) -> int:
    size = data[offset + 1]
    header = 2
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
        header += count
    return offset + header + size


def _contents(element: bytes) -> bytes:
    size = element[1]
    header = 2
    if size & 0x80:
        header += size & 0x7F
    return element[header:_element_end(element, 0)]


def key_usage(*, cert_sign: bool, crl_sign: bool) -> bytes:
    bits = (0x04 if cert_sign else 0) | (0x02 if crl_sign else 0)
    return der_bit_string(bytes([bits]), unused_bits=1)


def basic_constraints_ca(path_length: int | None) -> bytes:
    length = b"" if path_length is None else der_integer(path_length)
    return der_sequence(tlv(0x01, b"\xff"), length)


def authority_key_id(key_id: bytes) -> bytes:
    return der_sequence(tlv(0x80, key_id))


def crl_distribution_point(uri: str) -> bytes:
    full_name = tlv(0xA0, tlv(0x86, uri.encode()))
    return der_sequence(der_sequence(tlv(0xA0, full_name)))


def tbs_certificate(
    *,
    serial: int,
    issuer: DistinguishedName,
    subject: DistinguishedName,
    not_before: datetime,
    not_after: datetime,
    spki_der: bytes,
    extensions: Sequence[Extension],
) -> bytes:
    return der_sequence(
        tlv(0xA0, der_integer(2)),
        der_integer(serial),
        RSASSA_PSS_SHA384_ALGORITHM,
        issuer.to_der(),
        der_sequence(der_time(not_before), der_time(not_after)),
        subject.to_der(),
        spki_der,
        tlv(0xA3, der_sequence(*(item.to_der() for item in extensions))),
    )


def sign_rsassa_pss(tbs: bytes, signer: RsaPrivateKey, salt: bytes) -> bytes:
    """Certificate or CertificateList = SEQUENCE { tbs, algorithm, BIT STRING signature }."""
    signature = sign_pss(signer, tbs, salt)
    return der_sequence(tbs, RSASSA_PSS_SHA384_ALGORITHM, der_bit_string(signature))


def tbs_cert_list(
    *,
    issuer: DistinguishedName,
    this_update: datetime,
    next_update: datetime,
    revoked: Sequence[tuple[int, datetime]],
    crl_number: int,
    authority_key: bytes,
) -> bytes:
    """TBSCertList v2 (RFC 5280 5.1.2) with CRL number and authority key identifier."""
    entries = [der_sequence(der_integer(serial), der_time(when)) for serial, when in revoked]
    extensions = [
        Extension(OID_AUTHORITY_KEY_ID, authority_key_id(authority_key)),
        Extension(OID_CRL_NUMBER, der_integer(crl_number)),
    ]
    return der_sequence(
        der_integer(1),
        RSASSA_PSS_SHA384_ALGORITHM,
        issuer.to_der(),
        der_time(this_update),
        der_time(next_update),
        der_sequence(*entries) if entries else b"",
        tlv(0xA0, der_sequence(*(item.to_der() for item in extensions))),
    )
