"""Malformed RSASSA-PSS parameters in AMD's real certificates (and a CRL) are bad input.

Every byte of the signature AlgorithmIdentifier (RFC 4055 3.1) of each real ARK, ASK and VCEK,
outside the signed part and inside it, is changed in turn; the chain verifier, trusting whatever
ARK it is given so that every check runs, must answer with a FormatError or a ChainError —
never another exception — and the CLI with exit code 65 or 66 and one line on stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import core

from cvm.amd import Vendor
from cvm.attestation.verifier import ChainVerifier, TrustRoots
from cvm.cli.main import execute
from cvm.crypto.x509_build import RSASSA_PSS_SHA384_ALGORITHM
from cvm.crypto.x509_chain import load_certificates, parse_certificate
from cvm.errors import ChainError, FormatError
from cvm.formats.snp.tcb_version import TcbVersion

AT = datetime(2026, 6, 1, tzinfo=UTC)
CERTS = "snp/virtee-sev/tests/certs_data"
PRODUCTS = ("milan", "turin")
VALUES = (0x00, 0xFF)


def _real_chain(vectors: Path, product: str) -> dict[str, bytes]:
    ask, ark = (c.der for c in load_certificates((vectors / CERTS / f"cert_chain_{product}")
                                                 .read_bytes()))
    vcek = load_certificates((vectors / CERTS / f"vcek_{product}.der").read_bytes())[0].der
    return {"vcek": vcek, "ask": ask, "ark": ark}


def _algorithm_spans(der: bytes) -> tuple[list[int], int]:
    """Offsets of the signature AlgorithmIdentifiers (inside the signed part and outside),
    and their size."""
    algorithm = core.Sequence.load(der)[1].dump()
    spans = [i for i in range(len(der)) if der.startswith(algorithm, i)]
    assert len(spans) == 2  # the TBS ``signature`` field and the outer signatureAlgorithm
    return spans, len(algorithm)


def _mutants(der: bytes) -> Iterator[bytes]:
    """Each byte of the outer identifier set to 0x00, to 0xFF and with its low bit flipped;
    each byte of the signed one with its low bit flipped (which the signature then catches)."""
    (inner, outer), size = _algorithm_spans(der)
    for start, values in ((outer, VALUES), (inner, ())):
        for offset in range(start, start + size):
            for value in (*values, der[offset] ^ 0x01):
                if der[offset] != value:
                    yield der[:offset] + bytes([value]) + der[offset + 1 :]


def _verify(chain: dict[str, bytes], crl: bytes | None = None) -> None:
    ark = parse_certificate(chain["ark"])
    product = ark.common_name.split("-")[1]  # "ARK-Milan", "ARK-Milan-emulated"
    roots = TrustRoots.of([(product, ark.fingerprint_sha256)], "fuzz")
    ChainVerifier(roots).verify(chain["vcek"], chain["ask"], chain["ark"], AT, crl)


@pytest.mark.parametrize("product", PRODUCTS)
def test_real_chain_verifies_unmodified(vectors: Path, product: str) -> None:
    _verify(_real_chain(vectors, product))


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("which", ["ark", "ask", "vcek"])
def test_mutated_pss_parameters_are_format_or_chain_errors(
    vectors: Path, product: str, which: str
) -> None:
    chain = _real_chain(vectors, product)
    refused = 0
    for mutant in _mutants(chain[which]):
        with pytest.raises((FormatError, ChainError)) as caught:
            _verify({**chain, which: mutant})
        assert "\n" not in str(caught.value)
        refused += 1
    assert refused > 250


def test_mutated_pss_parameters_of_a_crl(vectors: Path) -> None:
    vendor = Vendor("Milan", clock=lambda: AT)
    chip = vendor.manufacture_chip(0)
    tcb = TcbVersion(boot_loader=4, snp=22, microcode=213)
    chain = {
        "vcek": vendor.vcek_certificate(chip.chip_id, tcb),
        "ask": vendor.ask_certificate,
        "ark": vendor.ark_certificate,
    }
    crl = vendor.crl()
    _verify(chain, crl)
    for mutant in _mutants(crl):
        with pytest.raises((FormatError, ChainError)):
            _verify(chain, mutant)


def test_hash_parameters_must_be_absent_or_null(vectors: Path) -> None:
    """RFC 4055: SHA-384's parameters are NULL or absent; anything else is malformed."""
    der = _real_chain(vectors, "milan")["vcek"]
    outer = _algorithm_spans(der)[0][1]
    null_at = outer + RSASSA_PSS_SHA384_ALGORITHM.index(bytes.fromhex("0500"))
    for replacement in (b"\x01\x00", b"\x04\x00", b"\x30\x00"):
        mutant = der[:null_at] + replacement + der[null_at + 2 :]
        with pytest.raises(FormatError, match="Null"):
            parse_certificate(mutant)
    # An unknown hash (2.16.840.1.101.3.4.2.99) with parameters that are not NULL.
    hash_at = outer + RSASSA_PSS_SHA384_ALGORITHM.index(bytes.fromhex("06096086480165030402020500"))
    unknown = bytes.fromhex("06096086480165030402630400")
    mutant = der[:hash_at] + unknown + der[hash_at + len(unknown) :]
    with pytest.raises(FormatError, match="neither absent nor NULL"):
        parse_certificate(mutant)


def _tlv(tag: int, content: bytes) -> bytes:
    assert len(content) < 0x80
    return bytes([tag, len(content)]) + content


def test_outer_algorithm_must_equal_the_signed_one(vectors: Path) -> None:
    """RFC 5280 4.1.1.2: an outer identifier that differs from the signed one is refused,
    even when both mean the same (SHA-384's NULL parameters left out, as RFC 4055 allows)."""
    chain = _real_chain(vectors, "milan")
    sha384 = _tlv(0x30, bytes.fromhex("0609608648016503040202"))
    mgf1 = _tlv(0x30, bytes.fromhex("06092a864886f70d010108") + sha384)
    params = _tlv(0x30, _tlv(0xA0, sha384) + _tlv(0xA1, mgf1) + bytes.fromhex("a203020130"))
    absent = _tlv(0x30, bytes.fromhex("06092a864886f70d01010a") + params)
    body = core.Sequence.load(chain["vcek"])
    contents = body[0].dump() + absent + body[2].dump()
    mutant = b"\x30\x82" + len(contents).to_bytes(2, "big") + contents
    assert parse_certificate(mutant).tbs == parse_certificate(chain["vcek"]).tbs
    with pytest.raises(ChainError, match="differs from the signed one"):
        _verify({**chain, "vcek": mutant})


def test_cli_exit_code_is_65_or_66_on_one_line(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = _real_chain(vectors, "milan")
    report = vectors / CERTS / "report_milan.hex"
    chain_file = vectors / CERTS / "cert_chain_milan"
    codes = set()
    for index, mutant in enumerate(_mutants(chain["vcek"])):
        if index % 11:
            continue
        vcek = tmp_path / "vcek.der"
        vcek.write_bytes(mutant)
        code = execute(["report", "verify", str(report), "--vcek", str(vcek), "--chain",
                        str(chain_file), "--at", AT.isoformat()])
        err = capsys.readouterr().err
        assert code in (65, 66), err
        assert err.count("\n") == 1 and "internal" not in err
        codes.add(code)
    assert codes == {65, 66}
