"""``cvm attest collateral add`` with KDS cert_chains and VCEKs: each file recognised by its
content, verified to a trusted ARK, filed under its product (a chain) or its own chip and TCB
(a VCEK); a chain once cached checks the CRLs and VCEKs added after it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem

from cvm.attestation.verifier.collateral import vcek_file_name
from cvm.cli import attest_collateral
from cvm.cli.main import execute
from cvm.crypto.x509_chain import parse_certificate
from cvm.errors import FormatError, UsageError
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion

from .test_collateral_cli import ADD, ISSUED, _file, store_crl, store_vendor

TCBS = {"Genoa": TcbVersion(boot_loader=4, snp=22, microcode=213),
        "Turin": TcbVersion(boot_loader=3, tee=1, snp=5, microcode=9, fmc=2,
                            layout=TcbLayout.TURIN)}


@pytest.fixture(autouse=True)
def _pinned() -> None:
    for product in ("Milan", "Genoa", "Turin"):
        store_vendor(product, ISSUED)


def _vcek(product: str, index: int = 1) -> tuple[bytes, bytes]:
    """The hwID and VCEK of chip ``index`` of this installation's emulated ``product``."""
    vendor = store_vendor(product, ISSUED)
    chip = vendor.manufacture_chip(index)
    hw_id = chip.chip_id[:8] if product == "Turin" else chip.chip_id
    return hw_id, vendor.vcek_certificate(chip.chip_id, TCBS[product])


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_a_chain_then_a_vcek_are_filed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       product: str) -> None:
    vendor = store_vendor(product, ISSUED)
    hw_id, der = _vcek(product)
    chain = _file(tmp_path, "cert_chain", vendor.cert_chain())
    vcek = _file(tmp_path, "vcek.pem", pem.armor("CERTIFICATE", der))
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), str(chain), str(vcek), "--trust", "emulated",
                    "--now", "2026-02-01"]) == 0
    name = vcek_file_name(hw_id, TCBS[product])
    shown = hw_id[:8].hex() + ("" if product == "Turin" else "...")
    product_name = "Turin" if product == "Turin" else f"{product}-B0"
    assert capsys.readouterr().out.splitlines() == [
        f"{chain}: {product} cert_chain (ASK SEV-{product}-emulated, ARK ARK-{product}-emulated "
        f"SHA-256 {vendor.ark_fingerprint()[:16]}...) filed as "
        f"{cache / f'cert_chain-{product}.pem'}",
        f"{vcek}: {product_name} VCEK of chip {shown} at TCB {TCBS[product]} filed as "
        f"{cache / name}"]
    assert (cache / name).read_bytes() == der
    assert sorted(p.name for p in cache.iterdir()) == sorted([f"cert_chain-{product}.pem", name])


def test_what_is_filed_again_says_it_replaced_another_and_when_it_is_not_valid(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vendor = store_vendor("Genoa", ISSUED)
    hw_id, der = _vcek("Genoa")
    chain = _file(tmp_path, "chain.pem", vendor.cert_chain())
    vcek = _file(tmp_path, "vcek.der", der)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cert_chain-Genoa.pem").write_bytes(b"old")
    (cache / vcek_file_name(hw_id, TCBS["Genoa"])).write_bytes(b"old")
    assert execute([*ADD, str(cache), str(chain), str(vcek), "--trust", "emulated",
                    "--now", "2099-01-01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    certificates = [parse_certificate(d) for d in (vendor.ark_certificate,
                                                   vendor.ask_certificate, der)]
    start = max(c.not_before for c in certificates[:2]).isoformat()
    end = min(c.not_after for c in certificates[:2]).isoformat()
    assert lines[0].endswith(
        "cert_chain-Genoa.pem, replacing another; not valid at 2099-01-01T00:00:00+00:00 (valid "
        f"{start} to {end}): verification refuses it then")
    assert lines[1].startswith(f"{vcek}: Genoa-B0 VCEK of chip ")
    assert lines[1].endswith(
        f", replacing another; not valid at 2099-01-01T00:00:00+00:00 (valid "
        f"{max(c.not_before for c in certificates).isoformat()} to "
        f"{min(c.not_after for c in certificates).isoformat()}): verification refuses it then")


def test_a_vcek_needs_a_chain_cached_or_given(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    vcek = _file(tmp_path, "vcek.der", _vcek("Genoa")[1])
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), str(vcek), "--trust", "emulated"]) == 64
    assert capsys.readouterr().err == (
        f"cvm: error: {vcek}: no Genoa cert_chain to verify the VCEK with: add KDS "
        "/vcek/v1/Genoa/cert_chain to the cache first, or give it with --chain\n")
    milan = _file(tmp_path, "milan.pem", store_vendor("Milan", ISSUED).cert_chain())
    assert execute([*ADD, str(cache), str(vcek), "--trust", "emulated", "--chain",
                    str(milan)]) == 66
    captured = capsys.readouterr()
    assert captured.err.startswith(f"cvm: error: {vcek}: SEV-VCEK <- SEV-Milan-emulated: ")
    assert captured.err.count("\n") == 1 and not cache.exists()
    genoa = _file(tmp_path, "genoa.pem", store_vendor("Genoa", ISSUED).cert_chain())
    assert execute([*ADD, str(cache), str(vcek), "--trust", "emulated", "--chain", str(milan),
                    "--chain", str(genoa)]) == 0
    assert [p.name for p in cache.iterdir()] == [
        vcek_file_name(*_vcek("Genoa")[:1], TCBS["Genoa"])]


def test_only_chain_files_of_two_certificates_give_a_vceks_chain(tmp_path: Path) -> None:
    vendor = store_vendor("Genoa", ISSUED)
    ark = _file(tmp_path, "ark.pem", pem.armor("CERTIFICATE", vendor.ark_certificate))
    chain = _file(tmp_path, "chain.pem", vendor.cert_chain())
    assert attest_collateral.given_chains([ark, chain]) == [
        (vendor.ask_certificate, vendor.ark_certificate)]
    junk = _file(tmp_path, "junk.pem", b"junk")
    with pytest.raises(FormatError) as refused:
        attest_collateral.given_chains([junk])
    assert str(refused.value).startswith(f"--chain {junk}: not a DER X.509 certificate (")


def test_a_cached_chain_checks_the_crls_added_after_it(tmp_path: Path) -> None:
    """With AMD's roots cvm knows no ARK certificate of its own: the cached chain's ARK is the
    one a CRL is checked with (here the emulated roots, labelled as --trust amd's would be)."""
    from cvm.cli.attest import _roots

    roots = _roots("emulated")
    trusted = attest_collateral.Trusted("amd", roots, [], [])
    crl = store_crl("Turin")
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match=r"^--trust amd: no trusted ARK certificate"):
        attest_collateral.filing_line(tmp_path / "crl", cache, crl, trusted=trusted, now=ISSUED)
    attest_collateral.filing_line(tmp_path / "chain", cache,
                                  store_vendor("Turin", ISSUED).cert_chain(), trusted=trusted,
                                  now=ISSUED)
    line = attest_collateral.filing_line(tmp_path / "crl", cache, crl, trusted=trusted,
                                         now=ISSUED)
    assert line.startswith(f"{tmp_path / 'crl'}: Turin CRL of 2026-01-01T00:00:00+00:00")
    assert (cache / "crl-Turin.der").read_bytes() == crl


def test_a_crl_vcek_and_chain_in_one_command(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    files = [_file(tmp_path, "chain", store_vendor("Turin", ISSUED).cert_chain()),
             _file(tmp_path, "crl", store_crl("Turin")),
             _file(tmp_path, "vcek", _vcek("Turin")[1])]
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), *map(str, files), "--trust", "emulated", "--now",
                    now.isoformat()]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert sorted(p.name for p in cache.iterdir()) == sorted([
        "cert_chain-Turin.pem", "crl-Turin.der",
        vcek_file_name(_vcek("Turin")[0], TCBS["Turin"])])
