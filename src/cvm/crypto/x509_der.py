"""Reading the certificates AMD's SEV-SNP PKI issues straight from their DER: the fast path of
:func:`cvm.crypto.x509_chain.parse_certificate`.

RFC 5280 section 4.1 in the one shape AMD's ARK, ASK, VCEK and VLEK take (and the emulated
vendor's copies of them): a version 3 certificate whose signature AlgorithmIdentifier is, byte for
byte, one of AMD's two encodings of RSASSA-PSS with SHA-384, MGF1-SHA-384, a 48-byte salt and
trailerField 1 (RFC 4055 section 3.1); names made of the X.520 attributes AMD uses as
UTF8String, PrintableString or IA5String; UTCTime or GeneralizedTime validity in ``...Z`` form;
extensions present. Every length is definite, of at most two octets, and fits the element
around it, and every element sits exactly where RFC 5280 puts it.

:func:`read_certificate` answers ``None`` for anything else, and the caller then parses with
asn1crypto, which stays the reference: it names what is wrong in a malformed certificate and
accepts the unusual encodings this reader leaves to it. On every certificate this reader does
answer, asn1crypto gives the same values: the signed part and the identifiers are the slices
of the input that asn1crypto's ``dump()`` returns for them (a header whose last byte is 0x80,
which makes asn1crypto re-encode, is left to it), names and times are decoded with its codecs
and rules, and a standard extension's value has to begin with the element asn1crypto checks for
it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from asn1crypto import x509

from cvm.crypto.x509_build import RSASSA_PSS_SHA384_ALGORITHM

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OBJECT_IDENTIFIER = 0x06
VERSION_3 = b"\x02\x01\x02"  # the contents of [0] EXPLICIT Version: INTEGER 2
CRITICAL = b"\x01\x01\xff"  # BOOLEAN TRUE, as DER writes it
VERSION_TAG = 0xA0
EXTENSIONS_TAG = 0xA3
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
# AMD's RSASSA-PSS AlgorithmIdentifier as its ARKs, ASKs and Milan VCEKs encode it, and as its
# Turin VCEKs do, leaving out trailerField 1 (the DEFAULT); the parameters are the same.
AMD_PSS_ALGORITHMS = frozenset(
    {
        RSASSA_PSS_SHA384_ALGORITHM,
        bytes.fromhex(
            "304106092a864886f70d01010a3034a00f300d06096086480165030402020500a11c301a06092a8648"
            "86f70d010108300d06096086480165030402020500a203020130"
        ),
    }
)
# Digits before the final "Z": YYMMDDHHMMSS and YYYYMMDDHHMMSS.
TIME_DIGITS = {UTC_TIME: 12, GENERALIZED_TIME: 14}
# The X.520 attributes of AMD's names, by the contents of their OBJECT IDENTIFIER, with
# asn1crypto's names for them; asn1crypto decodes each as a DirectoryString.
ATTRIBUTE_NAMES = {
    b"\x55\x04\x03": "common_name",
    b"\x55\x04\x06": "country_name",
    b"\x55\x04\x07": "locality_name",
    b"\x55\x04\x08": "state_or_province_name",
    b"\x55\x04\x0a": "organization_name",
    b"\x55\x04\x0b": "organizational_unit_name",
}
# The DirectoryString alternatives read here, with the codec asn1crypto decodes them with.
STRING_CODECS = {0x0C: "utf-8", 0x13: "latin1", 0x16: "ascii"}
# asn1crypto parses the value of a standard extension with its type when the extension is read
# and refuses one that does not begin with that type's element: the types by extension name,
# the names by dotted OID.
EXTENSION_SPECS: dict[str, Any] = x509.Extension._oid_specs
EXTENSION_NAMES: dict[str, str] = x509.ExtensionId._map


class UnreadError(ValueError):
    """The input is outside the shape this reader handles; asn1crypto parses it (and names
    what is wrong, if anything is: this error never leaves the module, so it carries no
    message)."""


class CertificateFields(NamedTuple):
    """The fields of a :class:`~cvm.crypto.x509_chain.Certificate` read from its DER."""

    tbs: bytes
    serial: int
    issuer: tuple[tuple[str, str], ...]
    subject: tuple[tuple[str, str], ...]
    not_before: datetime
    not_after: datetime
    signature_algorithm: bytes
    signature: bytes
    spki: bytes
    tbs_signature_algorithm: bytes
    extensions: dict[str, tuple[bool, bytes]]


def element(data: bytes, at: int, end: int, identifier: int) -> tuple[int, int]:
    """Where the contents of the element at ``at`` begin and end; it must carry
    ``identifier``, a definite length of at most two octets, and end by ``end``."""
    if at + 2 > end or data[at] != identifier:
        raise UnreadError  # another element
    size = data[at + 1]
    start = at + 2
    if size >= 0x80:
        count = size - 0x80
        if not 0 < count <= 2:
            raise UnreadError  # an indefinite length or one of more than two octets
        # Length octets that run past ``end`` put the contents past it too: refused below.
        size = int.from_bytes(data[start : start + count])
        start += count
    if start + size > end:
        raise UnreadError  # an element longer than its container
    return start, start + size


def dumped(data: bytes, at: int, end: int, identifier: int) -> tuple[int, int]:
    """Where the element at ``at``, whose bytes are kept, ends. asn1crypto's ``dump()``
    returns such an element as it is, unless the last octet of its header is 0x80 (which it
    takes for an indefinite length and re-encodes): that is left to asn1crypto."""
    start, stop = element(data, at, end, identifier)
    if data[start - 1] == 0x80:
        raise UnreadError  # a header asn1crypto re-encodes
    return start, stop


def value_identifier(spec: Any) -> int:
    """The identifier octet of a value of an asn1crypto universal type (the type of every
    standard extension's value is one: class 0, a tag below 31)."""
    return int(spec.method << 5 | spec.tag)


def dotted(contents: bytes) -> str:
    """An OBJECT IDENTIFIER in dotted form; the last arc must be complete."""
    if not contents or contents[-1] & 0x80:
        raise UnreadError  # an incomplete object identifier
    arcs: list[int] = []
    value = 0
    for octet in contents:
        value = value << 7 | octet & 0x7F
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, (first, arcs[0] - 40 * first, *arcs[1:])))


def name(data: bytes, at: int, end: int) -> tuple[tuple[str, str], ...]:
    """The attributes of the RDNSequence between ``at`` and ``end``, in order."""
    attributes = []
    while at < end:
        rdn, at = element(data, at, end, SET)
        while rdn < at:
            start, stop = element(data, rdn, at, SEQUENCE)
            oid_start, oid_end = element(data, start, stop, OBJECT_IDENTIFIER)
            kind = ATTRIBUTE_NAMES.get(data[oid_start:oid_end])
            if kind is None or oid_end == stop:
                raise UnreadError  # an attribute this reader does not know
            codec = STRING_CODECS.get(data[oid_end])
            if codec is None:
                raise UnreadError  # a string type this reader does not decode
            value_start, value_end = element(data, oid_end, stop, data[oid_end])
            if value_end != stop:
                raise UnreadError  # an attribute with more than a type and a value
            attributes.append((kind, data[value_start:value_end].decode(codec)))
            rdn = stop
    return tuple(attributes)


def time(data: bytes, at: int, end: int) -> tuple[datetime, int]:
    """A UTCTime or GeneralizedTime in ``...Z`` form, and where the next element begins."""
    # ``at`` is inside the certificate (the validity is followed by the subject), so data[at]
    # exists; an element that does not fit is refused by element().
    digits = TIME_DIGITS.get(data[at])
    if digits is None:
        raise UnreadError  # not a time
    start, stop = element(data, at, end, data[at])
    text = data[start:stop]
    if len(text) != digits + 1 or text[-1:] != b"Z" or not text[:-1].isdigit():
        raise UnreadError  # a time in another form
    if digits == 12:  # UTCTime: years 1950 to 2049 (RFC 5280 4.1.2.5.1)
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:]
    else:
        year = int(text[:4])
        rest = text[4:]
    month, day, hour, minute, second = (int(rest[i : i + 2]) for i in range(0, 10, 2))
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC), stop


def extensions(data: bytes, at: int, end: int) -> dict[str, tuple[bool, bytes]]:
    """Each extension's dotted OID with its criticality and value, the last one of an OID
    kept."""
    found: dict[str, tuple[bool, bytes]] = {}
    while at < end:
        start, at = element(data, at, end, SEQUENCE)
        oid_start, oid_end = element(data, start, at, OBJECT_IDENTIFIER)
        oid = dotted(data[oid_start:oid_end])
        critical = data[oid_end : oid_end + 3] == CRITICAL
        value_start, value_end = element(data, oid_end + 3 * critical, at, OCTET_STRING)
        if value_end != at:
            raise UnreadError  # an extension with more than an OID, a criticality and a value
        spec = EXTENSION_SPECS.get(EXTENSION_NAMES.get(oid, oid))
        if spec is not None:
            element(data, value_start, value_end, value_identifier(spec))
        found[oid] = (critical, data[value_start:value_end])
    return found


def _tbs_certificate(
    der: bytes, start: int, end: int, outer: tuple[bytes, bytes, bytes]
) -> CertificateFields:
    """The fields of the TBSCertificate between ``start`` and ``end``, with ``outer``: the
    TBSCertificate's encoding, the signature algorithm's and the signature."""
    version_start, at = element(der, start, end, VERSION_TAG)
    if der[version_start:at] != VERSION_3:
        raise UnreadError  # not a version 3 certificate
    serial_start, serial_end = element(der, at, end, INTEGER)
    if serial_start == serial_end:
        raise UnreadError  # an empty serial number
    signature_end = dumped(der, serial_end, end, SEQUENCE)[1]
    issuer_start, issuer_end = element(der, signature_end, end, SEQUENCE)
    validity_start, validity_end = element(der, issuer_end, end, SEQUENCE)
    not_before, at = time(der, validity_start, validity_end)
    not_after, at = time(der, at, validity_end)
    if at != validity_end:
        raise UnreadError  # a validity with more than two times
    subject_start, subject_end = element(der, validity_end, end, SEQUENCE)
    spki_end = dumped(der, subject_end, end, SEQUENCE)[1]
    wrapper_start, wrapper_end = element(der, spki_end, end, EXTENSIONS_TAG)
    list_start, list_end = element(der, wrapper_start, wrapper_end, SEQUENCE)
    if list_end != wrapper_end or wrapper_end != end:
        raise UnreadError  # unique identifiers or more than the extensions after the key
    return CertificateFields(
        tbs=outer[0],
        serial=int.from_bytes(der[serial_start:serial_end], signed=True),
        issuer=name(der, issuer_start, issuer_end),
        subject=name(der, subject_start, subject_end),
        not_before=not_before,
        not_after=not_after,
        signature_algorithm=outer[1],
        signature=outer[2],
        spki=der[subject_end:spki_end],
        tbs_signature_algorithm=der[serial_end:signature_end],
        extensions=extensions(der, list_start, list_end),
    )


def read_certificate(der: bytes) -> CertificateFields | None:
    """The fields of an AMD-shaped DER certificate, or ``None`` for anything else (including
    a malformed certificate), which asn1crypto then parses."""
    if not isinstance(der, bytes):
        return None
    try:
        start, end = element(der, 0, len(der), SEQUENCE)
        tbs_start, tbs_end = dumped(der, start, end, SEQUENCE)
        algorithm_end = element(der, tbs_end, end, SEQUENCE)[1]
        if der[tbs_end:algorithm_end] not in AMD_PSS_ALGORITHMS:
            raise UnreadError  # another signature algorithm
        signature_start, signature_end = element(der, algorithm_end, end, BIT_STRING)
        if signature_end != len(der) or der[signature_start : signature_start + 1] != b"\x00":
            raise UnreadError  # a signature with unused bits, or data after the certificate
        outer = (der[start:tbs_end], der[tbs_end:algorithm_end],
                 der[signature_start + 1 : signature_end])
        return _tbs_certificate(der, tbs_start, tbs_end, outer)
    except ValueError:  # UnreadError, or a name that does not decode, or an impossible date
        return None
