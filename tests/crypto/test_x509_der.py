"""The DER reader of AMD's certificates against asn1crypto, the reference parser.

``parse_certificate`` reads AMD-shaped certificates itself (``cvm.crypto.x509_der``) and leaves
everything else to asn1crypto. Whatever the input — AMD's real certificates, the emulated
vendor's, other real certificates, and mutants of them — it must give what asn1crypto gives:
the same ``Certificate`` field by field (types included), or the same exception with the same
message. And the real and emulated AMD certificates must take the fast path.
"""

from __future__ import annotations

import dataclasses
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
    _signature_algorithm,
    certificate_ders,
    parse_certificate,
    parse_certificate_strictly,
)
from cvm.crypto.x509_der import (
    AMD_PSS_ALGORITHMS,
    ATTRIBUTE_NAMES,
    EXTENSION_VALUE_IDENTIFIERS,
    STRING_CODECS,
    read_certificate,
)
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


def outcome(parse: object, der: bytes) -> tuple[object, ...]:
    """Every field of the parsed certificate with its type and repr (so that a bytearray, a
    naive datetime or an int for a bool differ), or the exception's type and message."""
    assert callable(parse)
    try:
        cert = parse(der)
    except Exception as error:  # any exception must be the reference's
        return (type(error), str(error))
    return tuple(
        (f.name, type(getattr(cert, f.name)), repr(getattr(cert, f.name)))
        for f in dataclasses.fields(cert)
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
    for dotted, identifier in EXTENSION_VALUE_IDENTIFIERS.items():
        spec = x509.Extension._oid_specs[x509.ExtensionId(dotted).native]
        core._parse_build(tlv(identifier, b""), spec=spec)
        with pytest.raises(ValueError, match="should have been"):
            core._parse_build(tlv(identifier ^ 0x20, b""), spec=spec)
    assert len(EXTENSION_VALUE_IDENTIFIERS) == len(x509.Extension._oid_specs)


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
