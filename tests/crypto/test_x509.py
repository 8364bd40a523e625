"""X.509 building (DER, RFC 5280) and chain checks against asn1crypto and AMD's real certs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import core, x509
from hypothesis import given
from hypothesis import strategies as st

from cvm.crypto.rsa_pss import generate_private_key, public_key_der, sign_pss
from cvm.crypto.x509_build import (
    RSASSA_PSS_SHA384_ALGORITHM,
    DistinguishedName,
    der_bit_string,
    der_integer,
    der_oid,
    der_sequence,
    der_time,
    sign_rsassa_pss,
    tbs_certificate,
)
from cvm.crypto.x509_chain import (
    check_signed_by,
    check_validity,
    load_certificates,
    parse_certificate,
    parse_crl,
)
from cvm.errors import ChainError, FormatError

MILAN = "snp/virtee-sev/src/certs/snp/builtin/milan"


def _self_signed(name: str, algorithm: bytes = RSASSA_PSS_SHA384_ALGORITHM) -> bytes:
    key = generate_private_key(b"x509 test", "key", 2048)
    dn = DistinguishedName(name)
    tbs = tbs_certificate(
        serial=5, issuer=dn, subject=dn, not_before=datetime(2024, 1, 1, tzinfo=UTC),
        not_after=datetime(2060, 1, 1, tzinfo=UTC), spki_der=public_key_der(key.public_key()),
        extensions=[],
    )
    if algorithm == RSASSA_PSS_SHA384_ALGORITHM:
        return sign_rsassa_pss(tbs, key, bytes(48))
    return der_sequence(tbs, algorithm, der_bit_string(sign_pss(key, tbs, bytes(48))))


def test_amd_name_encoding_matches_the_real_ark(vectors: Path) -> None:
    ark = load_certificates((vectors / MILAN / "ark.pem").read_bytes())[0]
    real = x509.Certificate.load(ark.der)["tbs_certificate"]["subject"].dump()
    assert DistinguishedName("ARK-Milan").to_der() == real


def test_pss_algorithm_identifier_is_amds(vectors: Path) -> None:
    ark = load_certificates((vectors / MILAN / "ark.pem").read_bytes())[0]
    assert ark.signature_algorithm == RSASSA_PSS_SHA384_ALGORITHM


def test_built_certificate_parses_and_verifies() -> None:
    cert = parse_certificate(_self_signed("test"))
    check_signed_by(cert, cert)
    assert cert.serial == 5 and cert.common_name == "test"
    assert cert.not_after.year == 2060  # GeneralizedTime after 2049
    with pytest.raises(ChainError, match="not valid"):
        check_validity(cert, datetime(2023, 1, 1, tzinfo=UTC))


def test_other_signature_algorithm_is_refused() -> None:
    sha256_rsa = bytes.fromhex("300d06092a864886f70d01010b0500")
    cert = parse_certificate(_self_signed("plain", sha256_rsa))
    with pytest.raises(ChainError, match="not RSASSA-PSS"):
        check_signed_by(cert, cert)


def test_tampered_certificate_is_refused(vectors: Path) -> None:
    ark_der = load_certificates((vectors / MILAN / "ark.pem").read_bytes())[0].der
    ask_der = load_certificates((vectors / MILAN / "ask.pem").read_bytes())[0].der
    tampered = bytearray(ask_der)
    tampered[300] ^= 1  # inside the ASK's public key
    ark = parse_certificate(ark_der)
    with pytest.raises(ChainError, match="does not verify"):
        check_signed_by(parse_certificate(bytes(tampered)), ark)
    with pytest.raises(ChainError, match="issuer name"):
        check_signed_by(ark, parse_certificate(ask_der))


def test_garbage_is_a_format_error() -> None:
    for junk in (b"", b"\x30\x03\x02\x01\x00", b"-----BEGIN CERTIFICATE-----\nAAAA\n"):
        with pytest.raises(FormatError):
            load_certificates(junk)
    with pytest.raises(FormatError):
        parse_crl(b"\x30\x00")


@given(st.lists(st.integers(0, 1 << 40), min_size=1, max_size=6))
def test_oid_encoding_matches_asn1crypto(arcs: list[int]) -> None:
    dotted = ".".join(["1", "3", *map(str, arcs)])
    assert der_oid(dotted) == core.ObjectIdentifier(dotted).dump()


@given(st.integers(0, 1 << 200))
def test_integer_encoding_matches_asn1crypto(value: int) -> None:
    assert der_integer(value) == core.Integer(value).dump()


def test_times() -> None:
    assert der_time(datetime(2045, 10, 22, 17, 23, 5, tzinfo=UTC)) == (
        b"\x17\x0d" + b"451022172305Z"
    )
    assert der_time(datetime(2050, 1, 1, tzinfo=UTC))[:2] == b"\x18\x0f"
