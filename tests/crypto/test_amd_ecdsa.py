"""AMD-encoded ECDSA P-384 (56860 Table 24) against the real reports and their VCEKs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvm.crypto import amd_ecdsa
from cvm.crypto.x509_chain import parse_certificate
from cvm.errors import FormatError, SignatureError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport


def test_real_report_signature_verifies(vectors: Path) -> None:
    snp = vectors / "snp/go-sev-guest/verify/testdata"
    report = AttestationReport.from_bytes((snp / "attestation.bin").read_bytes())
    key = parse_certificate((snp / "vcek.testcer").read_bytes()).p384_public_key()
    amd_ecdsa.verify(key, report.signed_bytes(), report.signature_r, report.signature_s)
    with pytest.raises(SignatureError):
        amd_ecdsa.verify(key, report.signed_bytes()[1:], report.signature_r, report.signature_s)


def test_sign_verify_round_trip_and_determinism() -> None:
    key = amd_ecdsa.private_key_from_scalar(12345678901234567890)
    r, s = amd_ecdsa.sign(key, b"report")
    assert (r, s) == amd_ecdsa.sign(key, b"report")  # RFC 6979
    assert len(r) == len(s) == 72 and not any(r[48:]) and not any(s[48:])
    amd_ecdsa.verify(key.public_key(), b"report", r, s)
    with pytest.raises(SignatureError):
        amd_ecdsa.verify(key.public_key(), b"other", r, s)


def test_malformed_components_are_signature_errors() -> None:
    key = amd_ecdsa.private_key_from_scalar(7)
    r, s = amd_ecdsa.sign(key, b"m")
    with pytest.raises(SignatureError):
        amd_ecdsa.verify(key.public_key(), b"m", r[:48] + b"\x01" + r[49:], s)
    with pytest.raises(SignatureError):
        amd_ecdsa.verify(key.public_key(), b"m", bytes(72), s)
    with pytest.raises(SignatureError):
        too_big = amd_ecdsa.encode_component(amd_ecdsa.P384_ORDER)
        amd_ecdsa.verify(key.public_key(), b"m", r, too_big)


def test_component_and_key_helpers() -> None:
    with pytest.raises(UsageError):
        amd_ecdsa.encode_component(1 << 384)
    with pytest.raises(FormatError):
        amd_ecdsa.decode_component(bytes(71))
    with pytest.raises(UsageError):
        amd_ecdsa.private_key_from_scalar(0)
    key = amd_ecdsa.private_key_from_scalar(99).public_key()
    x, y = amd_ecdsa.public_key_coordinates(key)
    assert amd_ecdsa.public_key_coordinates(amd_ecdsa.public_key_from_coordinates(x, y)) == (x, y)
    with pytest.raises(FormatError):
        amd_ecdsa.public_key_from_coordinates(x, y + 1)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, amd_ecdsa.P384_ORDER - 1), st.binary(max_size=64))
def test_round_trip(scalar: int, message: bytes) -> None:
    key = amd_ecdsa.private_key_from_scalar(scalar)
    r, s = amd_ecdsa.sign(key, message)
    assert amd_ecdsa.decode_component(amd_ecdsa.encode_component(scalar)) == scalar
    amd_ecdsa.verify(key.public_key(), message, r, s)
