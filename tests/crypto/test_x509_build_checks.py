"""The DER encoder of the emulated AMD certificates and CRLs, piece by piece, against two other
readers (pyca/cryptography, asn1crypto), the rules of X.690 and RFC 5280, and the bytes of AMD's
real Milan ARK and ASK. ``tests/interop/test_x509_build_openssl.py`` hands the same certificates
and CRLs to ``openssl``."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from asn1crypto import core, parser
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID
from hypothesis import given
from hypothesis import strategies as st

from cvm.crypto.rsa_pss import generate_private_key, public_key_der
from cvm.crypto.x509_build import (
    OID_AUTHORITY_KEY_ID,
    OID_BASIC_CONSTRAINTS,
    OID_CRL_DISTRIBUTION_POINTS,
    OID_KEY_USAGE,
    OID_SUBJECT_KEY_ID,
    RSASSA_PSS_SHA384_ALGORITHM,
    DistinguishedName,
    Extension,
    authority_key_id,
    basic_constraints_ca,
    crl_distribution_point,
    der_bit_string,
    der_integer,
    der_octet_string,
    der_oid,
    der_sequence,
    der_time,
    key_identifier,
    key_usage,
    sign_rsassa_pss,
    tbs_cert_list,
    tbs_certificate,
    tlv,
)
from cvm.errors import UsageError

MILAN = "snp/virtee-sev/src/certs/snp/builtin/milan"
NOT_BEFORE = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
NOT_AFTER = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
URL = "https://kdsintf.amd.com/vcek/v1/Milan/crl"


def _real_extensions(vectors: Path, role: str) -> dict[str, tuple[bool, bytes]]:
    """The real certificate's extensions: OID -> (critical, the extnValue contents)."""
    pem = (vectors / MILAN / f"{role}.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    parsed = asn1_x509.Certificate.load(der)
    return {e["extn_id"].dotted: (bool(e["critical"].native), e["extn_value"].contents)
            for e in parsed["tbs_certificate"]["extensions"]}


# --- DER pieces ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x123456])
def test_lengths_take_the_short_form_below_128_and_the_shortest_long_form_above(
        size: int) -> None:
    content = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert der_octet_string(content) == core.OctetString(content).dump()
    header = tlv(0x04, content)[: len(tlv(0x04, content)) - size]
    if size < 0x80:
        assert header == bytes([0x04, size])
    else:
        length = size.to_bytes((size.bit_length() + 7) // 8, "big")
        assert header == bytes([0x04, 0x80 | len(length)]) + length and length[0] != 0


@pytest.mark.parametrize("value", [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 1 << 64,
                                   (1 << 159) + 5])
def test_integers_are_minimal_and_never_negative(value: int) -> None:
    assert der_integer(value) == core.Integer(value).dump()
    assert core.Integer.load(der_integer(value), strict=True).native == value


def test_a_negative_integer_is_refused() -> None:
    with pytest.raises(UsageError) as caught:
        der_integer(-1)
    assert str(caught.value) == "negative INTEGER not supported"


@pytest.mark.parametrize("dotted", [
    "0.0", "0.39", "1.0", "1.39.127", "2.0", "2.47", "2.48", "2.999.3", "2.100.16383.16384",
    "1.2.840.113549.1.1.10", "1.3.6.1.4.1.3704.1.3.1", "2.16.840.1.101.3.4.2.2",
    "1.3.127.128.2097151.2097152",
])
def test_object_identifiers_as_x690_writes_them(dotted: str) -> None:
    """X.690 8.19.4: the first subidentifier is 40 X + Y, and under arc 2 it can pass 127."""
    assert der_oid(dotted) == core.ObjectIdentifier(dotted).dump()


@given(st.integers(0, 2), st.integers(0, 1 << 20), st.lists(st.integers(0, 1 << 40), max_size=5))
def test_any_object_identifier_matches_asn1crypto(first: int, second: int,
                                                  rest: list[int]) -> None:
    second = second % 40 if first < 2 else second
    dotted = ".".join(map(str, [first, second, *rest]))
    assert der_oid(dotted) == core.ObjectIdentifier(dotted).dump()


def test_the_pss_algorithm_names_rsassa_pss_sha384_salt_48() -> None:
    parsed = asn1_x509.SignedDigestAlgorithm.load(RSASSA_PSS_SHA384_ALGORITHM, strict=True)
    assert parsed["algorithm"].native == "rsassa_pss"
    assert parsed["parameters"].native == {
        "hash_algorithm": {"algorithm": "sha384", "parameters": None},
        "mask_gen_algorithm": {"algorithm": "mgf1",
                               "parameters": {"algorithm": "sha384", "parameters": None}},
        "salt_length": 48, "trailer_field": "trailer_field_bc"}
    assert der_oid("1.2.840.113549.1.1.10") in RSASSA_PSS_SHA384_ALGORITHM


def test_bit_strings_carry_their_unused_bit_count() -> None:
    assert der_bit_string(b"\xab\xcd") == b"\x03\x03\x00\xab\xcd"
    assert der_bit_string(b"\x06", unused_bits=1) == b"\x03\x02\x01\x06"
    assert core.BitString.load(der_bit_string(b"\x80", 7)).native == (1,)


@pytest.mark.parametrize(("moment", "expected"), [
    (datetime(1949, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x18\x0f19491231235959Z"),
    (datetime(1950, 1, 1, tzinfo=UTC), b"\x17\x0d500101000000Z"),
    (datetime(2005, 2, 3, 4, 5, 6, 789, tzinfo=UTC), b"\x17\x0d050203040506Z"),
    (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), b"\x17\x0d491231235959Z"),
    (datetime(2050, 1, 1, tzinfo=UTC), b"\x18\x0f20500101000000Z"),
    (datetime(2050, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),
     b"\x17\x0d491231233000Z"),
    (datetime(999, 1, 1, tzinfo=UTC), b"\x18\x0f09990101000000Z"),
])
def test_times_are_utctime_from_1950_through_2049_in_utc(moment: datetime,
                                                          expected: bytes) -> None:
    """RFC 5280 4.1.2.5: UTCTime for 1950-2049 (its two digits read as 19YY from 50), else
    GeneralizedTime; always in UTC ("Z"), without fractions of a second."""
    assert der_time(moment) == expected
    chosen = asn1_x509.Time.load(expected)
    assert chosen.native == moment.astimezone(UTC).replace(microsecond=0)


def test_times_are_utc_whatever_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    moment = datetime(2030, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7)))
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving time
    time.tzset()
    try:
        assert der_time(moment) == b"\x17\x0d300601190000Z"
    finally:
        monkeypatch.undo()
        time.tzset()


# --- names and extensions -----------------------------------------------------------------------

def test_the_name_has_amds_order_and_string_types(vectors: Path) -> None:
    name = DistinguishedName("ARK-Milan", locality_name="Zürich", country_name="CH")
    parsed = asn1_x509.Name.load(name.to_der(), strict=True)
    rdns = [(rdn[0]["type"].dotted, rdn[0]["value"].chosen.__class__.__name__,
             rdn[0]["value"].native) for rdn in parsed.chosen]
    assert rdns == [
        ("2.5.4.11", "UTF8String", "Engineering"), ("2.5.4.6", "PrintableString", "CH"),
        ("2.5.4.7", "UTF8String", "Zürich"), ("2.5.4.8", "UTF8String", "CA"),
        ("2.5.4.10", "UTF8String", "Advanced Micro Devices"),
        ("2.5.4.3", "UTF8String", "ARK-Milan")]
    assert all(len(rdn) == 1 for rdn in parsed.chosen)
    real = x509.load_pem_x509_certificate((vectors / MILAN / "ark.pem").read_bytes())
    assert DistinguishedName("ARK-Milan").to_der() == real.subject.public_bytes()


def test_criticality_is_written_only_when_true() -> None:
    """DER leaves out a DEFAULT value: a non-critical extension has no BOOLEAN at all."""
    quiet = Extension("2.5.29.14", b"\x04\x01\x00")
    loud = Extension("2.5.29.14", b"\x04\x01\x00", critical=True)
    assert quiet.to_der() == der_sequence(der_oid("2.5.29.14"), der_octet_string(b"\x04\x01\x00"))
    assert loud.to_der() == der_sequence(der_oid("2.5.29.14"), b"\x01\x01\xff",
                                         der_octet_string(b"\x04\x01\x00"))
    for extension in (quiet, loud):
        parsed = asn1_x509.Extension.load(extension.to_der(), strict=True)
        assert parsed["critical"].native is extension.critical
        assert parsed.dump(force=True) == extension.to_der()


def test_key_usage_and_basic_constraints_are_amds_bytes(vectors: Path) -> None:
    ark = _real_extensions(vectors, "ark")
    ask = _real_extensions(vectors, "ask")
    assert ark[OID_KEY_USAGE] == (True, key_usage(cert_sign=True, crl_sign=True))
    assert ask[OID_KEY_USAGE] == (True, key_usage(cert_sign=True, crl_sign=False))
    assert ark[OID_BASIC_CONSTRAINTS] == (True, basic_constraints_ca(None))
    assert ask[OID_BASIC_CONSTRAINTS] == (True, basic_constraints_ca(0))


@pytest.mark.parametrize(("cert_sign", "crl_sign"), [(False, False), (False, True),
                                                     (True, False), (True, True)])
def test_key_usage_names_exactly_the_bits_asked_for(cert_sign: bool, crl_sign: bool) -> None:
    value = key_usage(cert_sign=cert_sign, crl_sign=crl_sign)
    assert value[:3] == b"\x03\x02\x01" and value[3] & 0x01 == 0  # the unused bit is zero
    expected = {"key_cert_sign"} if cert_sign else set()
    assert asn1_x509.KeyUsage.load(value).native == expected | (
        {"crl_sign"} if crl_sign else set())


@pytest.mark.parametrize("path_length", [None, 0, 1, 200])
def test_basic_constraints_say_ca_with_the_path_length_given(path_length: int | None) -> None:
    parsed = _extension_value(OID_BASIC_CONSTRAINTS, basic_constraints_ca(path_length))
    assert isinstance(parsed, x509.BasicConstraints)
    assert parsed.ca is True and parsed.path_length == path_length


def test_authority_key_id_and_crl_distribution_point() -> None:
    aki = _extension_value(OID_AUTHORITY_KEY_ID, authority_key_id(bytes(range(20))))
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert aki.key_identifier == bytes(range(20))
    assert aki.authority_cert_issuer is None and aki.authority_cert_serial_number is None
    points = _extension_value(OID_CRL_DISTRIBUTION_POINTS, crl_distribution_point(URL))
    assert isinstance(points, x509.CRLDistributionPoints)
    (point,) = list(points)
    assert point.full_name == [x509.UniformResourceIdentifier(URL)]
    assert point.relative_name is None and point.reasons is None and point.crl_issuer is None


def _extension_value(oid: str, value: bytes) -> x509.ExtensionType:
    """The extension as pyca/cryptography reads it inside a certificate."""
    certificate = x509.load_der_x509_certificate(_certificate([Extension(oid, value)]))
    return certificate.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()])
def test_key_identifiers_of_short_keys_are_rfc5280_method_1(curve: ec.EllipticCurve) -> None:
    """Short forms of length (P-256, P-384) and the one-byte long form (P-521)."""
    public = ec.generate_private_key(curve).public_key()
    spki = public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key_identifier(spki) == x509.SubjectKeyIdentifier.from_public_key(public).digest


@pytest.mark.parametrize("bits", [2048, 4096])
def test_key_identifiers_of_rsa_keys_are_rfc5280_method_1(bits: int) -> None:
    public = generate_private_key(b"x509 build", "ski", bits).public_key()
    assert key_identifier(public_key_der(public)) == (
        x509.SubjectKeyIdentifier.from_public_key(public).digest)


@pytest.mark.parametrize("parameters", [60, 200, 300])
def test_key_identifiers_skip_an_algorithm_of_any_length(parameters: int) -> None:
    """An AlgorithmIdentifier with long parameters (an EC key with explicit domain parameters
    has some 300 bytes of them) in the one-byte and two-byte long forms: only the key's bits
    are hashed."""
    bits = bytes(range(7, 7 + 65))
    algorithm = der_sequence(der_oid("1.2.840.10045.2.1"), der_octet_string(bytes(parameters)))
    spki = der_sequence(algorithm, der_bit_string(bits))
    assert key_identifier(spki) == hashlib.sha1(bits).digest()
    parsed = core.Sequence.load(spki)
    assert parsed.contents == algorithm + der_bit_string(bits)


# --- whole certificates and CRLs ----------------------------------------------------------------

_KEY = generate_private_key(b"x509 build", "signer", 2048)


def _certificate(extensions: list[Extension], serial: int = 0x0123456789ABCDEF,
                 not_before: datetime = NOT_BEFORE, not_after: datetime = NOT_AFTER) -> bytes:
    spki = public_key_der(_KEY.public_key())
    tbs = tbs_certificate(
        serial=serial, issuer=DistinguishedName("ARK-Test"),
        subject=DistinguishedName("ASK-Test", organizational_unit_name="Signing"),
        not_before=not_before, not_after=not_after, spki_der=spki, extensions=extensions)
    return sign_rsassa_pss(tbs, _KEY, bytes(range(48)))


def _verify_pss(signature: bytes, data: bytes) -> None:
    _KEY.public_key().verify(signature, data, padding.PSS(padding.MGF1(hashes.SHA384()), 48),
                             hashes.SHA384())


@pytest.mark.parametrize("serial", [1, 0x80, 0x0123456789ABCDEF, (1 << 159) - 1])
def test_a_certificate_reads_back_field_by_field(serial: int) -> None:
    """(Serial 0, which AMD's VCEKs carry, is the INTEGER test's: pyca/cryptography warns.)"""
    spki = public_key_der(_KEY.public_key())
    extensions = [
        Extension(OID_KEY_USAGE, key_usage(cert_sign=True, crl_sign=True), True),
        Extension(OID_SUBJECT_KEY_ID, der_octet_string(key_identifier(spki))),
        Extension(OID_AUTHORITY_KEY_ID, authority_key_id(b"\x11" * 20)),
        Extension(OID_BASIC_CONSTRAINTS, basic_constraints_ca(0), True),
        Extension(OID_CRL_DISTRIBUTION_POINTS, crl_distribution_point(URL)),
    ]
    der = _certificate(extensions, serial, datetime(2020, 1, 1, tzinfo=UTC),
                       datetime(2060, 1, 1, tzinfo=UTC))
    certificate = x509.load_der_x509_certificate(der)
    assert certificate.version == x509.Version.v3
    assert certificate.serial_number == serial
    assert certificate.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert certificate.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ARK-Test"
    assert certificate.subject.rfc4514_string() == (
        "CN=ASK-Test,O=Advanced Micro Devices,ST=CA,L=Santa Clara,C=US,OU=Signing")
    assert certificate.not_valid_before_utc == datetime(2020, 1, 1, tzinfo=UTC)
    assert certificate.not_valid_after_utc == datetime(2060, 1, 1, tzinfo=UTC)
    assert certificate.public_key().public_numbers() == _KEY.public_key().public_numbers()
    assert [(e.oid.dotted_string, e.critical) for e in certificate.extensions] == [
        (OID_KEY_USAGE, True), (OID_SUBJECT_KEY_ID, False), (OID_AUTHORITY_KEY_ID, False),
        (OID_BASIC_CONSTRAINTS, True), (OID_CRL_DISTRIBUTION_POINTS, False)]
    ski = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(_KEY.public_key())
    # The signature covers the TBS exactly, with the algorithm named inside and outside it.
    parsed = asn1_x509.Certificate.load(der, strict=True)
    assert parsed["signature_algorithm"].dump() == RSASSA_PSS_SHA384_ALGORITHM
    assert parsed["tbs_certificate"]["signature"].dump() == RSASSA_PSS_SHA384_ALGORITHM
    assert parsed["signature_value"].contents[0] == 0  # no unused bits
    _verify_pss(certificate.signature, certificate.tbs_certificate_bytes)


def _crl(revoked: list[tuple[int, datetime]], number: int = 7) -> bytes:
    tbs = tbs_cert_list(
        issuer=DistinguishedName("ARK-Test"), this_update=NOT_BEFORE,
        next_update=NOT_BEFORE + timedelta(days=7), revoked=revoked, crl_number=number,
        authority_key=b"\x22" * 20)
    return sign_rsassa_pss(tbs, _KEY, bytes(48))


def test_a_crl_reads_back_field_by_field() -> None:
    revoked = [(0x80, datetime(2024, 1, 2, tzinfo=UTC)), (5, datetime(2051, 3, 4, tzinfo=UTC))]
    der = _crl(revoked, number=0x1234)
    crl = x509.load_der_x509_crl(der)
    assert crl.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert crl.issuer.rfc4514_string() == (
        "CN=ARK-Test,O=Advanced Micro Devices,ST=CA,L=Santa Clara,C=US,OU=Engineering")
    assert crl.last_update_utc == NOT_BEFORE
    assert crl.next_update_utc == NOT_BEFORE + timedelta(days=7)
    assert [(r.serial_number, r.revocation_date_utc) for r in crl] == revoked
    assert all(len(r.extensions) == 0 for r in crl)
    assert [(e.oid, e.critical) for e in crl.extensions] == [
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False), (ExtensionOID.CRL_NUMBER, False)]
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value
    assert number.crl_number == 0x1234
    key_id = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert key_id.key_identifier == b"\x22" * 20
    # RFC 5280 5.1.2.1: "this field MUST be present" (version v2) when extensions are.
    assert asn1_crl.CertificateList.load(der, strict=True)["tbs_cert_list"]["version"].native == (
        "v2")
    _verify_pss(crl.signature, crl.tbs_certlist_bytes)


def test_a_crl_without_revoked_certificates_leaves_the_list_out() -> None:
    """RFC 5280 5.1.2.6: "When there are no revoked certificates, the revoked certificates list
    MUST be absent." """
    der = _crl([])
    tbs = asn1_crl.CertificateList.load(der, strict=True)["tbs_cert_list"]
    assert len(x509.load_der_x509_crl(der)) == 0
    _, _, _, _, contents, _ = parser.parse(tbs.dump(), strict=True)
    tags = []
    while contents:
        class_, _, tag, header, body, _ = parser.parse(contents)
        tags.append((class_, tag))
        contents = contents[len(header) + len(body):]
    # version, signature, issuer, thisUpdate, nextUpdate, [0] crlExtensions
    assert tags == [(0, 2), (0, 16), (0, 16), (0, 23), (0, 23), (2, 0)]
