"""The verifier on real AMD evidence: accepted under AMD's pinned roots, any bit flip refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.attestation.verifier import AMD_ARK_SHA256, Evidence, TrustRoots, Verifier
from cvm.crypto.x509_chain import load_certificates
from cvm.errors import ChainError, FormatError, SignatureError, VerificationError
from cvm.formats.snp.attestation_report import SIGNED_SIZE

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _go(vectors: Path) -> Evidence:
    base = vectors / "snp/go-sev-guest/verify/testdata"
    return Evidence.from_cert_chain(
        (base / "attestation.bin").read_bytes(),
        (base / "vcek.testcer").read_bytes(),
        (base / "milan.testcer").read_bytes(),
    )


def _virtee(vectors: Path) -> Evidence:
    base = vectors / "snp/virtee-sev"
    return Evidence.from_cert_chain(
        bytes.fromhex((base / "tests/certs_data/report_milan.hex").read_text().strip()),
        (base / "tests/certs_data/vcek_milan.der").read_bytes(),
        (base / "src/certs/snp/builtin/milan/ask.pem").read_bytes()
        + (base / "src/certs/snp/builtin/milan/ark.pem").read_bytes(),
    )


@pytest.fixture(scope="module")
def amd() -> Verifier:
    return Verifier(TrustRoots.amd(), clock=lambda: NOW)


def test_pinned_fingerprints_are_the_vector_arks(vectors: Path) -> None:
    for product in ("milan", "genoa", "turin"):
        path = vectors / f"snp/virtee-sev/src/certs/snp/builtin/{product}/ark.pem"
        ark = load_certificates(path.read_bytes())[0]
        assert AMD_ARK_SHA256[product.capitalize()] == ark.fingerprint_sha256


def test_real_reports_are_authentic(amd: Verifier, vectors: Path) -> None:
    go = amd.verify(_go(vectors))
    assert go.chain.product == "Milan"
    assert go.report.measurement.hex().startswith("b07af9620f3b839b")
    virtee = amd.verify(_virtee(vectors))
    assert virtee.report.reported_tcb.to_int() == 0x7308000000000003


def test_virtee_negative_case_bit_7_of_byte_21(amd: Verifier, vectors: Path) -> None:
    evidence = _virtee(vectors)
    data = bytearray(evidence.report)
    data[21] ^= 0x80
    with pytest.raises(SignatureError):
        amd.verify(Evidence(bytes(data), evidence.vcek, evidence.ask, evidence.ark))


def _flip_all(amd: Verifier, evidence: Evidence, bits: range) -> dict[int, str]:
    outcomes: dict[int, str] = {}
    for bit in bits:
        data = bytearray(evidence.report)
        data[bit // 8] ^= 1 << (bit % 8)
        try:
            amd.verify(Evidence(bytes(data), evidence.vcek, evidence.ask, evidence.ark))
        except (VerificationError, FormatError) as error:
            name = type(error).__name__
        else:
            name = f"ACCEPTED bit {bit}"
        outcomes[bit] = name
    return outcomes


def _in(outcomes: dict[int, str], start: int, end: int) -> set[str]:
    return {name for bit, name in outcomes.items() if start * 8 <= bit < end * 8}


@pytest.mark.slow
@pytest.mark.parametrize("source", ["go-sev-guest", "virtee"])
def test_every_bit_of_signed_region_and_signature_is_covered(
    amd: Verifier, vectors: Path, source: str
) -> None:
    evidence = _go(vectors) if source == "go-sev-guest" else _virtee(vectors)
    outcomes = _flip_all(amd, evidence, range((SIGNED_SIZE + 144) * 8))
    assert set(outcomes.values()) <= {"SignatureError", "FormatError", "ChainError"}
    assert len(outcomes) == (SIGNED_SIZE + 144) * 8
    assert _in(outcomes, 0x050, 0x0C0) == {"SignatureError"}  # REPORT_DATA, MEASUREMENT
    assert _in(outcomes, 0x2A0, 0x2D0) == {"SignatureError"}  # R (low 48 bytes)
    assert _in(outcomes, 0x2D0, 0x2E8) == {"SignatureError"}  # R (bytes that must be zero)
    assert _in(outcomes, 0x04C, 0x050) == {"FormatError"}  # reserved
    assert _in(outcomes, 0x180, 0x188) <= {"ChainError", "FormatError"}  # REPORTED_TCB
    assert _in(outcomes, 0x1A0, 0x1E0) == {"ChainError"}  # CHIP_ID vs the VCEK's hwID


def test_spread_of_bits_outside_the_slow_run(amd: Verifier, vectors: Path) -> None:
    evidence = _virtee(vectors)
    outcomes = _flip_all(amd, evidence, range(0, (SIGNED_SIZE + 144) * 8, 7))
    assert set(outcomes.values()) <= {"SignatureError", "FormatError", "ChainError"}
    assert "SignatureError" in outcomes.values()


def test_real_chain_is_refused_under_emulated_roots(vectors: Path) -> None:
    verifier = Verifier(TrustRoots.of([("Milan", "00" * 32)], "emulated"), clock=lambda: NOW)
    with pytest.raises(ChainError, match="not among the trusted roots"):
        verifier.verify(_go(vectors))


def test_vcek_of_the_other_chip_is_refused(amd: Verifier, vectors: Path) -> None:
    go, virtee = _go(vectors), _virtee(vectors)
    with pytest.raises(ChainError, match=r"TCB|chip"):
        amd.verify(Evidence(go.report, virtee.vcek, go.ask, go.ark))


def test_expired_or_not_yet_valid_chain(vectors: Path) -> None:
    for when in (datetime(2021, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)):
        verifier = Verifier(TrustRoots.amd(), clock=lambda when=when: when)
        with pytest.raises(ChainError, match="not valid"):
            verifier.verify(_go(vectors))


def test_swapped_certificates_are_refused(amd: Verifier, vectors: Path) -> None:
    go = _go(vectors)
    with pytest.raises(ChainError):
        amd.verify(Evidence(go.report, go.vcek, go.ark, go.ark))
    with pytest.raises(ChainError):
        amd.verify(Evidence(go.report, go.vcek, go.ask, go.ask))
    genoa = vectors / "snp/go-sev-guest/verify/trust/ask_ark_genoa.pem"
    ask, ark = load_certificates(genoa.read_bytes())
    with pytest.raises(ChainError):
        amd.verify(Evidence(go.report, go.vcek, ask.der, ark.der))
