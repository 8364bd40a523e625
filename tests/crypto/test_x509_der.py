"""The DER reader of AMD's certificates against asn1crypto, the reference parser.

``parse_certificate`` reads AMD-shaped certificates itself (``cvm.crypto.x509_der``) and leaves
everything else to asn1crypto. Whatever the input — AMD's real certificates, the emulated
vendor's, other real certificates, and mutants of them — it must give what asn1crypto gives:
the same ``Certificate`` field by field (types included), or the same exception with the same
message. And the real and emulated AMD certificates must take the fast path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from asn1crypto import algos, core, parser, x509
from hypothesis import given
from hypothesis import strategies as st

from cvm.amd.pki import default_vendor
from cvm.crypto.x509_build import RSASSA_PSS_SHA384_ALGORITHM
from cvm.crypto.x509_chain import (
    AMD_PSS,
    Certificate,
    _signature_algorithm,
    certificate_ders,
    parse_certificate,
    parse_certificate_strictly,
)
from cvm.crypto.x509_der import (
    AMD_PSS_ALGORITHMS,
    ATTRIBUTE_NAMES,
    EXTENSION_NAMES,
    EXTENSION_SPECS,
    STRING_CODECS,
    read_certificate,
    value_identifier,
)
from cvm.errors import FormatError
from cvm.formats.snp.tcb_version import TcbVersion

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
AMD_FILES = (
    "snp/virtee-sev/tests/certs_data/cert_chain_milan",
    "snp/virtee-sev/tests/certs_data/cert_chain_turin",
    "snp/virtee-sev/tests/certs_data/vcek_milan.der",
    "snp/virtee-sev/tests/certs_data/vcek_turin.der",
    "snp/virtee-sev/src/certs/snp/builtin/genoa/ark.pem",
    "snp/virtee-sev/src/certs/snp/builtin/genoa/ask.pem",
    "snp/go-sev-guest/verify/trust/ask_ark_milan_vlek.pem",
    "snp/go-sev-guest/verify/trust/ask_ark_turin_vlek.pem",
    "snp/go-sev-guest/verify/testdata/vcek.testcer",
)
OTHER_FILES = ("secureboot/ms-uefi-ca-2023.der", "secureboot/debian-signer-2022-shim.der")


@cache
def amd_certificates() -> tuple[bytes, ...]:
    real = [der for name in AMD_FILES for der in certificate_ders((VECTORS / name).read_bytes())]
    emulated = []
    for product in ("Milan", "Genoa", "Turin"):
        vendor = default_vendor(product)
        chip = vendor.manufacture_chip(0)
        tcb = TcbVersion(boot_loader=4, snp=22, microcode=213, layout=vendor.product.tcb_layout)
        emulated += [vendor.ark_certificate, vendor.ask_certificate,
                     vendor.vcek_certificate(chip.chip_id, tcb)]
    return (*real, *emulated)


def outcome(parse: Callable[[bytes], Certificate], der: bytes) -> tuple[object, ...]:
    """Every field of the parsed certificate with its type and repr (so that a bytearray, a
    naive datetime or an int for a bool differ), or the exception's type and message."""
    try:
        cert = parse(der)
    except Exception as error:  # any exception must be the reference's
        return (type(error), str(error))
    values = [getattr(cert, f.name) for f in dataclasses.fields(cert)]
    return tuple(
        (type(value), value, value.isoformat() if hasattr(value, "isoformat") else repr(value))
        for value in values
    )


def assert_same(der: bytes) -> None:
    assert outcome(parse_certificate, der) == outcome(parse_certificate_strictly, der)


def tlv(identifier: int, contents: bytes) -> bytes:
    """A DER element (the length in its shortest form)."""
    size = len(contents)
    if size < 0x80:
        return bytes([identifier, size]) + contents
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([identifier, 0x80 | len(length)]) + length + contents


def children(contents: bytes) -> list[bytes]:
    """The encodings of the elements one after another in ``contents``."""
    found = []
    while contents:
        _, _, _, header, inner, trailer = parser.parse(contents)
        size = len(header) + len(inner) + len(trailer)
        found.append(contents[:size])
        contents = contents[size:]
    return found


def contents_of(element: bytes) -> bytes:
    return bytes(parser.parse(element)[4])


def split(der: bytes) -> tuple[list[bytes], bytes, bytes]:
    """The TBSCertificate's fields, the signature algorithm and the signature value."""
    tbs, algorithm, signature = children(contents_of(der))
    return children(contents_of(tbs)), algorithm, signature


def join(tbs_fields: list[bytes], algorithm: bytes, signature: bytes) -> bytes:
    return tlv(0x30, tlv(0x30, b"".join(tbs_fields)) + algorithm + signature)


def test_amd_certificates_take_the_fast_path_and_equal_asn1cryptos() -> None:
    certificates = amd_certificates()
    assert len(certificates) == 22  # 13 real, 9 emulated
    for der in certificates:
        assert read_certificate(der) is not None
        assert_same(der)
        assert parse_certificate(der).algorithm == AMD_PSS


@pytest.mark.parametrize("name", OTHER_FILES)
def test_other_certificates_go_to_asn1crypto(name: str) -> None:
    der = (VECTORS / name).read_bytes()
    assert read_certificate(der) is None
    assert_same(der)


def test_the_tables_are_asn1cryptos() -> None:
    for oid, attribute in ATTRIBUTE_NAMES.items():
        identifier = x509.NameType.load(tlv(0x06, oid))
        assert identifier.native == attribute
        assert x509.NameTypeAndValue._oid_specs[attribute] is x509.DirectoryString
    alternatives = {alt[1].tag: alt[1]._encoding for alt in x509.DirectoryString._alternatives}
    assert {tag: alternatives[tag] for tag in STRING_CODECS} == STRING_CODECS
    assert set(EXTENSION_SPECS) <= set(EXTENSION_NAMES.values())
    for spec in EXTENSION_SPECS.values():  # the element asn1crypto takes, and no other
        assert spec.class_ == 0 and spec.tag < 31 and spec.explicit is None
        identifier = value_identifier(spec)
        core._parse_build(tlv(identifier, b""), spec=spec)
        with pytest.raises(ValueError, match="should have been"):
            core._parse_build(tlv(identifier ^ 0x20, b""), spec=spec)
        with pytest.raises(ValueError, match="should have been"):
            core._parse_build(tlv(identifier ^ 0x40, b""), spec=spec)


def test_amds_algorithm_encodings_are_amd_pss() -> None:
    assert RSASSA_PSS_SHA384_ALGORITHM in AMD_PSS_ALGORITHMS
    for encoding in AMD_PSS_ALGORITHMS:
        parsed = algos.SignedDigestAlgorithm.load(encoding)
        assert _signature_algorithm(parsed, "certificate") == AMD_PSS


def _spans(der: bytes) -> dict[str, tuple[int, int]]:
    """Where (start, size) the signature algorithms and the TBSCertificate's fields sit."""
    outer_header = len(der) - len(contents_of(der))
    tbs, algorithm, _ = children(contents_of(der))
    at = outer_header + len(tbs) - len(contents_of(tbs))
    spans = {"outer algorithm": (outer_header + len(tbs), len(algorithm))}
    labels = ("version", "serial", "inner algorithm", "issuer", "validity", "subject", "spki",
              "extensions")
    for label, field in zip(labels, children(contents_of(tbs)), strict=True):
        spans[label] = (at, len(field))
        at += len(field)
    return spans


REGIONS = ("outer algorithm", "inner algorithm", "issuer", "subject", "validity", "extensions",
           "version", "serial")


@given(st.data())
def test_mutated_bytes_give_what_asn1crypto_gives(data: st.DataObject) -> None:
    der = data.draw(st.sampled_from(amd_certificates()))
    start, size = _spans(der)[data.draw(st.sampled_from(REGIONS))]
    mutant = bytearray(der)
    for _ in range(data.draw(st.integers(1, 3))):
        at = start + data.draw(st.integers(0, size - 1))
        mutant[at] = data.draw(st.one_of(st.integers(0, 255), st.just(mutant[at] ^ 0x01)))
    assert_same(bytes(mutant))


@given(st.data())
def test_mutated_bytes_anywhere_give_what_asn1crypto_gives(data: st.DataObject) -> None:
    der = data.draw(st.sampled_from(amd_certificates()))
    at = data.draw(st.integers(0, len(der) - 1))
    mutant = der[:at] + bytes([data.draw(st.integers(0, 255))]) + der[at + 1 :]
    assert_same(mutant)
    assert_same(der[:at])
    assert_same(der + data.draw(st.binary(min_size=1, max_size=3)))


def test_every_byte_of_the_algorithm_identifiers() -> None:
    der = amd_certificates()[0]
    spans = _spans(der)
    for label in ("outer algorithm", "inner algorithm"):
        start, size = spans[label]
        for at in range(start, start + size):
            for value in (0x00, 0xFF, der[at] ^ 0x01):
                assert_same(der[:at] + bytes([value]) + der[at + 1 :])


def _vcek() -> tuple[list[bytes], bytes, bytes]:
    return split(amd_certificates()[4])  # the real Milan VCEK


def _with(index: int, field: bytes) -> bytes:
    fields, algorithm, signature = _vcek()
    return join([*fields[:index], field, *fields[index + 1 :]], algorithm, signature)


def _name(*attributes: tuple[bytes, int, bytes]) -> bytes:
    return tlv(0x30, b"".join(tlv(0x31, tlv(0x30, tlv(0x06, oid) + tlv(tag, value)))
                              for oid, tag, value in attributes))


CN = b"\x55\x04\x03"
ISSUER, VALIDITY, SUBJECT, SPKI, EXTENSIONS = 3, 4, 5, 6, 7


def assert_read(der: bytes, fast: bool) -> None:
    """The reader takes ``der`` (or leaves it to asn1crypto), and either way the outcome is
    asn1crypto's."""
    assert (read_certificate(der) is not None) is fast
    assert_same(der)


@pytest.mark.parametrize("tag", range(0x40))
def test_every_string_type_of_a_name(tag: int) -> None:
    for value in (b"ARK-Milan", "é".encode(), b"\xff", b""):
        assert_read(_with(SUBJECT, _name((CN, tag, value))), tag in STRING_CODECS
                    and not (tag == 0x0C and value == b"\xff")
                    and not (tag == 0x16 and value[:1] >= b"\x80"))


def test_names_the_reader_leaves_to_asn1crypto() -> None:
    assert_read(_with(SUBJECT, _name((b"\x55\x04\x05", 0x0C, b"serial"))), fast=False)
    assert_read(_with(SUBJECT, _name((b"\x55\x04", 0x0C, b"short oid"))), fast=False)
    extra = tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, CN) + tlv(0x0C, b"a") + tlv(0x0C, b"b"))))
    assert_read(_with(SUBJECT, extra), fast=False)
    type_only = tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, CN))))
    assert_read(_with(SUBJECT, type_only), fast=False)
    assert_read(_with(SUBJECT, tlv(0x30, tlv(0x30, b""))), fast=False)  # an RDN not a SET


def test_names_the_reader_reads() -> None:
    assert_read(_with(SUBJECT, tlv(0x30, b"")), fast=True)  # an empty name
    assert_read(_with(SUBJECT, tlv(0x30, tlv(0x31, b""))), fast=True)  # an empty RDN
    two = tlv(0x31, tlv(0x30, tlv(0x06, CN) + tlv(0x0C, b"a")) + tlv(0x30, tlv(0x06, CN)
                                                                       + tlv(0x13, b"b")))
    assert_read(_with(ISSUER, tlv(0x30, two)), fast=True)
    assert read_certificate(_with(ISSUER, tlv(0x30, two))).issuer == (  # type: ignore[union-attr]
        ("common_name", "a"), ("common_name", "b"))
    # A name of exactly 128 bytes (header 30 81 80) is read: a name is decoded, never dumped.
    long_name = _name((CN, 0x0C, b"x" * (128 - 11)))
    assert long_name[:3] == b"\x30\x81\x80"
    assert_read(_with(SUBJECT, long_name), fast=True)


def _time(tag: int, text: bytes) -> bytes:
    return tlv(tag, text)


@pytest.mark.parametrize(
    ("not_before", "fast"),
    [
        (_time(0x17, b"490101000000Z"), True),  # 2049
        (_time(0x17, b"500101000000Z"), True),  # 1950
        (_time(0x18, b"20500101000000Z"), True),
        (_time(0x18, b"00000101000000Z"), False),  # year 0: asn1crypto's extended_datetime
        (_time(0x17, b"500101000000+0100"), False),
        (_time(0x17, b"5001010000Z"), False),  # no seconds
        (_time(0x17, b"500101000060Z"), False),  # second 60
        (_time(0x17, b"501301000000Z"), False),  # month 13
        (_time(0x17, b"50010100000aZ"), False),
        (_time(0x17, b"5001010000+1Z"), False),  # int() would take each of these
        (_time(0x17, b"50 101000000Z"), False),
        (_time(0x17, b"50010100001 Z"), False),
        (_time(0x17, b"500101000000z"), False),
        (_time(0x17, b"500101000000Z\n"), False),
        (_time(0x18, b"205001010000Z"), False),
        (_time(0x18, b"20500101000000.5Z"), False),
        (_time(0x04, b"500101000000Z"), False),
    ],
)
def test_validity_times(not_before: bytes, fast: bool) -> None:
    not_after = _time(0x18, b"20600101000000Z")
    assert_read(_with(VALIDITY, tlv(0x30, not_before + not_after)), fast)
    assert_read(_with(VALIDITY, tlv(0x30, not_after + not_before)), fast)
    assert_read(_with(VALIDITY, tlv(0x30, not_before)), fast=False)
    assert_read(_with(VALIDITY, tlv(0x30, not_before + not_after + not_after)), fast=False)


def _extension(oid: bytes, value: bytes, critical: bytes = b"") -> bytes:
    return tlv(0x30, tlv(0x06, oid) + critical + tlv(0x04, value))


BASIC_CONSTRAINTS = b"\x55\x1d\x13"
AMD_PRODUCT_NAME = bytes.fromhex("2b060104019c780102")


@pytest.mark.parametrize(
    ("extension", "fast"),
    [
        (_extension(BASIC_CONSTRAINTS, b"\x30\x03\x01\x01\xff", b"\x01\x01\xff"), True),
        (_extension(BASIC_CONSTRAINTS, b"\x30\x00"), True),
        (_extension(BASIC_CONSTRAINTS, b"\x30\x00\x05\x00"), True),  # asn1crypto reads the first
        (_extension(BASIC_CONSTRAINTS, b"\x30\x80\x00\x00"), False),  # indefinite
        (_extension(BASIC_CONSTRAINTS, b"\x31\x00"), False),  # not the type asn1crypto checks
        (_extension(BASIC_CONSTRAINTS, b"\x30\x05\x00"), False),  # longer than the value
        (_extension(BASIC_CONSTRAINTS, b""), False),
        (_extension(AMD_PRODUCT_NAME, b"\x31\x00"), True),  # any value for an unknown OID
        (_extension(AMD_PRODUCT_NAME, b""), True),
        (_extension(AMD_PRODUCT_NAME, b"x", b"\x01\x01\x00"), False),  # FALSE written out
        (_extension(AMD_PRODUCT_NAME, b"x", b"\x01\x01\x01"), False),
        (_extension(AMD_PRODUCT_NAME, b"x") + b"\x05\x00", False),
        (tlv(0x30, tlv(0x06, AMD_PRODUCT_NAME) + tlv(0x04, b"x") + b"\x05\x00"), False),
        (tlv(0x30, tlv(0x06, AMD_PRODUCT_NAME)), False),
        (tlv(0x30, tlv(0x06, AMD_PRODUCT_NAME) + tlv(0x24, tlv(0x04, b"x"))), False),
        (_extension(b"", b"x"), False),
        (_extension(b"\x2b\x86", b"x"), False),  # the last arc incomplete
        (_extension(b"\x2b\x80\x01", b"x"), True),  # a non-minimal arc, read as asn1crypto does
        (_extension(b"\x88\x37\x03", b"x"), True),  # 2.999.3
        (_extension(b"\x27\x03", b"x"), True),  # 0.39.3
        (_extension(b"\x4f\x03", b"x"), True),  # 1.39.3
        (_extension(b"\x28\x03", b"x"), True),  # 1.0.3
        (_extension(b"\x50\x03", b"x"), True),  # 2.0.3
        (b"", True),
    ],
)
def test_extensions(extension: bytes, fast: bool) -> None:
    fields = _vcek()[0]
    others = contents_of(contents_of(fields[EXTENSIONS]))
    assert_read(_with(EXTENSIONS, tlv(0xA3, tlv(0x30, others + extension))), fast)
    assert_read(_with(EXTENSIONS, tlv(0xA3, tlv(0x30, extension + others))), fast)


def test_extensions_in_order_the_last_of_an_oid_kept() -> None:
    first = _extension(AMD_PRODUCT_NAME, b"first", b"\x01\x01\xff")
    second = _extension(AMD_PRODUCT_NAME, b"second")
    der = _with(EXTENSIONS, tlv(0xA3, tlv(0x30, first + _extension(CN, b"x") + second)))
    assert_read(der, fast=True)
    assert list(parse_certificate(der).extensions.items()) == [
        ("1.3.6.1.4.1.3704.1.2", (False, b"second")), ("2.5.4.3", (False, b"x"))]


def test_the_tbs_certificates_shape() -> None:
    fields, algorithm, signature = _vcek()
    assert_read(join(fields, algorithm, signature), fast=True)
    for version in (b"\xa0\x03\x02\x01\x00", b"\xa0\x03\x02\x01\x01", b"\xa0\x04\x02\x02\x00\x02",
                    b"\x80\x03\x02\x01\x02", b""):
        assert_read(join([version, *fields[1:]], algorithm, signature), fast=False)
    assert_read(join(fields[:-1], algorithm, signature), fast=False)  # no extensions
    unique_id = tlv(0x81, b"\x00\x01")
    assert_read(join([*fields[:-1], unique_id, fields[-1]], algorithm, signature), fast=False)
    assert_read(join([*fields, b"\x05\x00"], algorithm, signature), fast=False)
    wrapped = tlv(0xA3, contents_of(fields[-1]) + b"\x05\x00")
    assert_read(join([*fields[:-1], wrapped], algorithm, signature), fast=False)
    for serial in (b"\x02\x00", b"\x02\x01\xff", b"\x02\x02\x00\x80", b"\x12\x01\x01"):
        assert_read(join([fields[0], serial, *fields[2:]], algorithm, signature),
                    fast=serial[:2] in (b"\x02\x01", b"\x02\x02"))
    assert parse_certificate(join([fields[0], b"\x02\x01\xff", *fields[2:]], algorithm,
                                  signature)).serial == -1


def test_signature_value_and_the_certificate_around_it() -> None:
    fields, algorithm, signature = _vcek()
    value = contents_of(signature)
    assert_read(join(fields, algorithm, tlv(0x03, value)), fast=True)
    assert_read(join(fields, algorithm, tlv(0x03, b"\x00")), fast=True)  # empty, no unused bits
    for bad in (tlv(0x03, b"\x01" + value[1:]), tlv(0x03, b""), tlv(0x04, value)):
        assert_read(join(fields, algorithm, bad), fast=False)
    with pytest.raises(FormatError, match=r"not a DER X\.509 certificate "):
        parse_certificate(join(fields, algorithm, tlv(0x03, b"")))
    der = join(fields, algorithm, signature)
    assert_read(der + b"\x00", fast=False)
    assert_read(tlv(0x30, contents_of(der) + b"\x05\x00"), fast=False)
    assert_read(tlv(0x31, contents_of(der)), fast=False)
    assert_read(der[:-1], fast=False)
    assert outcome(parse_certificate, bytearray(der)) == outcome(  # type: ignore[arg-type]
        parse_certificate_strictly, bytearray(der))  # type: ignore[arg-type]
    assert read_certificate(bytearray(der)) is None  # type: ignore[arg-type]


def _long(identifier: int, contents: bytes, octets: int) -> bytes:
    """An element whose length takes ``octets`` octets, however short it is (BER)."""
    return bytes([identifier, 0x80 | octets]) + len(contents).to_bytes(octets, "big") + contents


def test_lengths() -> None:
    fields, algorithm, signature = _vcek()
    # Non-minimal lengths: asn1crypto keeps the bytes as they are, and so does the reader.
    serial = _long(0x02, contents_of(fields[1]), 2)
    assert_read(join([fields[0], serial, *fields[2:]], algorithm, signature), fast=True)
    tbs = _long(0x30, b"".join(fields), 2)
    assert_read(tlv(0x30, tbs + algorithm + signature), fast=True)
    assert_read(_long(0x30, tbs + algorithm + signature, 2), fast=True)
    # Three length octets, and the indefinite length, are left to asn1crypto.
    assert_read(join([fields[0], _long(0x02, contents_of(fields[1]), 3), *fields[2:]],
                     algorithm, signature), fast=False)
    indefinite = b"\x30\x80" + b"".join(fields) + b"\x00\x00"
    assert_read(tlv(0x30, indefinite + algorithm + signature), fast=False)
    assert_read(join([fields[0], b"\x02\x81", *fields[2:]], algorithm, signature), fast=False)
    # A name of 128 bytes with the indefinite length and no end-of-contents: were 0x80 taken
    # for a length of 128, the certificate would read (asn1crypto refuses it).
    name = contents_of(_name((CN, 0x0C, b"x" * (128 - 11))))
    assert len(name) == 0x80
    assert_read(_with(SUBJECT, b"\x30\x80" + name), fast=False)


@pytest.mark.parametrize("size", [0x7F, 0x80, 0x180, 0x181, 0x280])
def test_kept_elements_whose_header_ends_in_0x80(size: int) -> None:
    """asn1crypto re-encodes an element whose header ends in 0x80 when it dumps it (taking it
    for an indefinite length); such a TBSCertificate, key or inner algorithm goes to it."""
    fields, algorithm, signature = _vcek()
    ends_in_0x80 = size & 0xFF == 0x80
    key = tlv(0x30, bytes(size))
    assert_read(join([*fields[:SPKI], key, *fields[SPKI + 1 :]], algorithm, signature),
                fast=not ends_in_0x80)
    inner = tlv(0x30, bytes(size))
    assert_read(join([*fields[:2], inner, *fields[3:]], algorithm, signature),
                fast=not ends_in_0x80)


@pytest.mark.parametrize("size", [0x47F, 0x480, 0x481, 0x580])
def test_a_tbs_certificate_whose_header_ends_in_0x80(size: int) -> None:
    fields, algorithm, signature = _vcek()
    rest = len(b"".join(fields)) - len(fields[SPKI])
    key = tlv(0x30, bytes(size - rest - 4))  # a key of 256 bytes or more: a 4-byte header
    tbs_fields = [*fields[:SPKI], key, *fields[SPKI + 1 :]]
    assert len(b"".join(tbs_fields)) == size
    assert_read(join(tbs_fields, algorithm, signature), fast=size & 0xFF != 0x80)
