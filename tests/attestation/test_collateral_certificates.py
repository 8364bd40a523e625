"""KDS cert_chains and VCEKs in the collateral cache: recognised by content, verified to a
trusted ARK before they are filed, named from the VCEK's own extensions (Turin's 8-byte hwID
and fmcSPL included), and looked up for a bare report by its CHIP_ID and REPORTED_TCB — never
returning a VCEK whose certificate names another chip or TCB."""

from __future__ import annotations

import errno
import functools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import pem

from cvm.amd import Vendor
from cvm.amd.product import EMULATED_KDS_BASE
from cvm.attestation.verifier.collateral import CollateralCache, vcek_file_name
from cvm.attestation.verifier.collateral_certificates import (
    CHAIN,
    CRL,
    NONE_OF_THEM,
    VCEK,
    add_chain,
    add_vcek,
    cached_arks,
    cached_chain,
    chain_ders,
    chain_window_note,
    collateral_kind,
    kds_vcek_path,
    product_of_name,
    report_product,
    report_vcek,
    vcek_product,
)
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.x509_chain import load_certificates
from cvm.errors import ChainError, FormatError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
MILAN_TCB = TcbVersion(boot_loader=4, snp=22, microcode=213)
TURIN_TCB = TcbVersion(boot_loader=3, tee=1, snp=5, microcode=9, fmc=2, layout=TcbLayout.TURIN)
TCBS = {"Milan": MILAN_TCB, "Genoa": MILAN_TCB, "Turin": TURIN_TCB}


@functools.cache
def vendor(product: str) -> Vendor:
    return Vendor(product, clock=lambda: ISSUED)


def vcek(product: str, index: int = 1) -> tuple[bytes, bytes]:
    """The chip ID and VCEK certificate of chip ``index`` of ``product`` at its test TCB."""
    chip = vendor(product).manufacture_chip(index)
    return chip.chip_id, vendor(product).vcek_certificate(chip.chip_id, TCBS[product])


def report(product: str, chip_id: bytes, tcb: TcbVersion, version: int = 3,
           **fields: int) -> AttestationReport:
    cpuid = {"Milan": (0x19, 0x01), "Genoa": (0x19, 0x11), "Turin": (0x1A, 0x02)}[product]
    values = {"cpuid_fam_id": cpuid[0], "cpuid_mod_id": cpuid[1]} if version >= 3 else {}
    return AttestationReport(version=version, chip_id=chip_id, reported_tcb=tcb,
                             current_tcb=tcb, committed_tcb=tcb, launch_tcb=tcb,
                             **{**values, **fields})


@pytest.fixture(scope="module")
def roots() -> TrustRoots:
    return TrustRoots.of([vendor(p).trust_anchor() for p in ("Milan", "Genoa", "Turin")],
                         "emulated")


def _chain(product: str) -> tuple[bytes, bytes]:
    return vendor(product).ask_certificate, vendor(product).ark_certificate


# --- what a file is -----------------------------------------------------------------------


def test_each_kind_is_known_by_its_content() -> None:
    crl = vendor("Genoa").crl()
    assert collateral_kind(crl) == CRL
    assert collateral_kind(pem.armor("X509 CRL", crl)) == CRL
    assert collateral_kind(vendor("Genoa").cert_chain()) == CHAIN
    der = vcek("Turin")[1]
    assert collateral_kind(der) == VCEK
    assert collateral_kind(pem.armor("CERTIFICATE", der)) == VCEK


@pytest.mark.parametrize(("case", "says"), [
    ("junk", NONE_OF_THEM),
    ("an ARK alone", f"a certificate that is not a VCEK (VCEK: no structVersion extension): "
                     f"{NONE_OF_THEM}"),
    ("three certificates", f"3 certificates: {NONE_OF_THEM}"),
])
def test_anything_else_says_what_it_is_not(case: str, says: str) -> None:
    data = {"junk": b"\x30\x03\x02\x01\x00",
            "an ARK alone": vendor("Genoa").ark_certificate,
            "three certificates": pem.armor("CERTIFICATE", vcek("Genoa")[1])
            + vendor("Genoa").cert_chain()}[case]
    with pytest.raises(FormatError) as refused:
        collateral_kind(data)
    assert str(refused.value) == says


@pytest.mark.parametrize(("name", "product"), [
    ("Milan-B0", "Milan"), ("Genoa-B1", "Genoa"), ("Turin", "Turin")])
def test_a_vceks_product_is_its_product_names_first_part(name: str, product: str) -> None:
    assert product_of_name(name) == product


@pytest.mark.parametrize("name", ["Rome-B0", "MilanX", "milan-B0", ""])
def test_a_product_name_cvm_does_not_know_is_refused(name: str) -> None:
    with pytest.raises(FormatError) as refused:
        product_of_name(name)
    assert str(refused.value) == (f"the VCEK's productName {name!r} is no product cvm knows "
                                  "(Milan, Genoa, Turin)")


def test_the_product_of_a_vcek_pem_or_der() -> None:
    assert vcek_product(vcek("Turin")[1]) == "Turin"
    assert vcek_product(pem.armor("CERTIFICATE", vcek("Genoa")[1])) == "Genoa"


# --- chains -------------------------------------------------------------------------------


def test_a_chain_is_filed_under_its_arks_product_as_pem(tmp_path: Path,
                                                        roots: TrustRoots) -> None:
    added = add_chain(tmp_path, vendor("Turin").cert_chain(), roots)
    assert (added.product, added.replaced) == ("Turin", False)
    assert (added.ask.der, added.ark.der) == _chain("Turin")
    filed = (tmp_path / "cert_chain-Turin.pem").read_bytes()
    assert filed.startswith(b"-----BEGIN CERTIFICATE-----")
    assert [c.der for c in load_certificates(filed)] == list(_chain("Turin"))
    assert not add_chain(tmp_path, vendor("Turin").cert_chain(), roots).replaced  # the same
    (tmp_path / "cert_chain-Turin.pem").write_bytes(b"older")
    assert add_chain(tmp_path, vendor("Turin").cert_chain(), roots).replaced


def test_a_chain_of_der_certificates_is_filed_too(tmp_path: Path, roots: TrustRoots) -> None:
    ask, ark = _chain("Genoa")
    data = pem.armor("CERTIFICATE", ask) + b"a note between blocks\n" + pem.armor(
        "CERTIFICATE", ark)
    assert add_chain(tmp_path, data, roots).product == "Genoa"
    assert CollateralCache(tmp_path).chain("Genoa") == pem.armor("CERTIFICATE", ask) + \
        pem.armor("CERTIFICATE", ark)


@pytest.mark.parametrize(("case", "error", "says"), [
    ("untrusted ARK", ChainError, "is not among the trusted roots (only Milan)"),
    ("ASK of another ARK", ChainError, "SEV-Genoa-emulated <- ARK-Milan-emulated: the issuer "
                                       "name does not match"),
    ("ARK first", ChainError, "is not among the trusted roots"),
    ("one certificate", FormatError, "1 certificate(s), a cert_chain is the ASK then the ARK"),
])
def test_a_chain_that_does_not_verify_is_not_filed(
        tmp_path: Path, case: str, error: type[Exception], says: str) -> None:
    only_milan = TrustRoots.of([vendor("Milan").trust_anchor()], "only Milan")
    data = {"untrusted ARK": vendor("Genoa").cert_chain(),
            "ASK of another ARK": pem.armor("CERTIFICATE", vendor("Genoa").ask_certificate)
            + pem.armor("CERTIFICATE", vendor("Milan").ark_certificate),
            "ARK first": pem.armor("CERTIFICATE", vendor("Milan").ark_certificate)
            + pem.armor("CERTIFICATE", vendor("Milan").ask_certificate),
            "one certificate": pem.armor("CERTIFICATE", vendor("Milan").ark_certificate)}[case]
    with pytest.raises(error, match=says.replace("(", r"\(").replace(")", r"\)")):
        add_chain(tmp_path / "cache", data, only_milan)
    assert not (tmp_path / "cache").exists()


def test_the_arks_of_the_cached_chains_that_are_trusted(tmp_path: Path,
                                                        roots: TrustRoots) -> None:
    assert cached_arks(tmp_path, roots) == []
    add_chain(tmp_path, vendor("Genoa").cert_chain(), roots)
    add_chain(tmp_path, vendor("Turin").cert_chain(), roots)
    (tmp_path / "cert_chain-Milan.pem").write_bytes(b"not a chain")
    assert [ark.der for ark in cached_arks(tmp_path, roots)] == [
        vendor("Genoa").ark_certificate, vendor("Turin").ark_certificate]
    only_turin = TrustRoots.of([vendor("Turin").trust_anchor()])
    assert [ark.der for ark in cached_arks(tmp_path, only_turin)] == [
        vendor("Turin").ark_certificate]


def test_a_chain_is_two_certificates() -> None:
    assert chain_ders(vendor("Milan").cert_chain()) == _chain("Milan")
    with pytest.raises(FormatError, match=r"^3 certificate\(s\)"):
        chain_ders(vendor("Milan").cert_chain() + pem.armor("CERTIFICATE", vcek("Milan")[1]))


# --- VCEKs --------------------------------------------------------------------------------


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_a_vcek_is_filed_by_its_own_chip_and_tcb(tmp_path: Path, roots: TrustRoots,
                                                 product: str) -> None:
    chip_id, der = vcek(product)
    add_chain(tmp_path, vendor(product).cert_chain(), roots)
    added = add_vcek(tmp_path, pem.armor("CERTIFICATE", der), [], roots)
    hw_id = chip_id[:8] if product == "Turin" else chip_id
    assert added.name == vcek_file_name(hw_id, TCBS[product])
    assert added.name == f"vcek-{hw_id.hex()}-{TCBS[product].to_bytes().hex()}.der"
    assert (added.chain.product, added.chain.claims.hw_id, added.replaced) == (
        product, hw_id, False)
    assert (tmp_path / added.name).read_bytes() == der  # DER, whatever was given
    assert not add_vcek(tmp_path, der, [], roots).replaced
    (tmp_path / added.name).write_bytes(b"other")
    assert add_vcek(tmp_path, der, [], roots).replaced


def test_a_turin_name_has_8_bytes_of_chip_and_fmc_first() -> None:
    name = vcek_file_name(bytes(range(1, 9)), TURIN_TCB)
    assert name == "vcek-0102030405060708-0203010500000009.der"


def test_a_vcek_is_verified_with_a_given_chain(tmp_path: Path, roots: TrustRoots) -> None:
    der = vcek("Genoa")[1]
    added = add_vcek(tmp_path, der, [_chain("Milan"), _chain("Genoa")], roots)
    assert added.chain.product == "Genoa"
    assert not (tmp_path / "cert_chain-Genoa.pem").exists()  # the chain given is not filed


def test_a_vcek_without_a_chain_to_check_it_is_refused(tmp_path: Path,
                                                       roots: TrustRoots) -> None:
    add_chain(tmp_path, vendor("Milan").cert_chain(), roots)  # another product's
    with pytest.raises(UsageError) as refused:
        add_vcek(tmp_path, vcek("Genoa")[1], [], roots)
    assert str(refused.value) == (
        "no Genoa cert_chain to verify the VCEK with: add KDS /vcek/v1/Genoa/cert_chain to the "
        "cache first, or give it with --chain")


def test_a_vcek_that_verifies_with_no_chain_is_refused_with_the_first_reason(
        tmp_path: Path, roots: TrustRoots) -> None:
    forged = vcek("Genoa")[1][:-1] + bytes([vcek("Genoa")[1][-1] ^ 1])
    with pytest.raises(ChainError, match="SEV-VCEK <- SEV-Milan-emulated: the issuer name"):
        add_vcek(tmp_path / "cache", vcek("Genoa")[1], [_chain("Milan"), _chain("Turin")],
                 roots)
    add_chain(tmp_path / "cache", vendor("Genoa").cert_chain(), roots)
    with pytest.raises(ChainError, match="certificate signature does not verify"):
        add_vcek(tmp_path / "cache", forged, [], roots)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cert_chain-Genoa.pem"]
    untrusted = TrustRoots.of([vendor("Milan").trust_anchor()], "only Milan")
    with pytest.raises(ChainError, match="not among the trusted roots"):
        add_vcek(tmp_path / "cache", vcek("Genoa")[1], [], untrusted)


# --- looking a VCEK up for a report ---------------------------------------------------------


def test_the_kds_path_of_a_vcek_is_the_emulated_kds_url() -> None:
    for product in ("Milan", "Turin"):
        chip_id = vcek(product)[0]
        hw_id = chip_id[:8] if product == "Turin" else chip_id
        url = vendor(product).kds.vcek_url(chip_id, TCBS[product])
        assert EMULATED_KDS_BASE + kds_vcek_path(product, hw_id, TCBS[product]) == url
    assert kds_vcek_path("Turin", b"\x01" * 8, TURIN_TCB) == (
        "/vcek/v1/Turin/0101010101010101?fmcSPL=02&blSPL=03&teeSPL=01&snpSPL=05&ucodeSPL=09")
    assert kds_vcek_path("Milan", b"\xab", MILAN_TCB) == (
        "/vcek/v1/Milan/ab?blSPL=04&teeSPL=00&snpSPL=22&ucodeSPL=213")


@pytest.mark.parametrize(("product", "version", "model", "expected"), [
    ("Turin", 3, 0x02, "Turin"), ("Turin", 2, None, "Turin"), ("Genoa", 3, 0x11, "Genoa"),
    ("Genoa", 3, 0x10, "Genoa"), ("Milan", 3, 0x0F, "Milan"), ("Milan", 3, 0x01, "Milan"),
    ("Milan", 2, None, "<product>")])
def test_the_product_a_report_names(product: str, version: int, model: int | None,
                                    expected: str) -> None:
    chip_id = vcek(product)[0]
    fields = {} if model is None else {"cpuid_mod_id": model}
    assert report_product(report(product, chip_id, TCBS[product], version, **fields)) == expected


def test_a_version_3_report_without_cpuid_names_no_product() -> None:
    found = report("Milan", vcek("Milan")[0], MILAN_TCB, cpuid_fam_id=0, cpuid_mod_id=0)
    assert report_product(found) == "<product>"


@pytest.mark.parametrize("product", ["Milan", "Turin"])
def test_a_report_finds_the_vcek_of_its_chip_and_tcb(tmp_path: Path, roots: TrustRoots,
                                                     product: str) -> None:
    chip_id, der = vcek(product)
    add_vcek(tmp_path, der, [_chain(product)], roots)
    add_vcek(tmp_path, vcek(product, 2)[1], [_chain(product)], roots)  # another chip's
    assert report_vcek(tmp_path, report(product, chip_id, TCBS[product])) == der


def test_a_missing_vcek_names_the_kds_path(tmp_path: Path) -> None:
    chip_id = vcek("Turin")[0]
    with pytest.raises(FileNotFoundError) as raised:
        report_vcek(tmp_path, report("Turin", chip_id, TURIN_TCB))
    assert (raised.value.errno, raised.value.filename) == (errno.ENOENT, str(tmp_path))
    assert raised.value.strerror == (
        f"no VCEK of chip {chip_id[:8].hex()}... at TCB 0x0900000005010302 in the collateral "
        f"cache (fetch KDS /vcek/v1/Turin/{chip_id[:8].hex()}?fmcSPL=02&blSPL=03&teeSPL=01&"
        "snpSPL=05&ucodeSPL=09, then cvm attest collateral add it)")


@pytest.mark.parametrize("swapped", ["another chip", "another TCB"])
def test_a_vcek_filed_under_another_name_is_never_returned(
        tmp_path: Path, roots: TrustRoots, swapped: str) -> None:
    chip_id = vcek("Milan")[0]
    other = (vcek("Milan", 2)[1] if swapped == "another chip" else vendor("Milan")
             .vcek_certificate(chip_id, TcbVersion(boot_loader=5, snp=22, microcode=213)))
    name = vcek_file_name(chip_id, MILAN_TCB)
    (tmp_path / name).write_bytes(other)
    with pytest.raises(ChainError) as refused:
        report_vcek(tmp_path, report("Milan", chip_id, MILAN_TCB))
    assert str(refused.value).startswith(f"{tmp_path / name} is the VCEK of chip ")
    assert str(refused.value).endswith(
        f", not of the report's chip {chip_id[:8].hex()}... at 0xd516000000000004")


def test_a_cached_vcek_that_does_not_parse_names_its_file(tmp_path: Path) -> None:
    chip_id = vcek("Milan")[0]
    name = vcek_file_name(chip_id, MILAN_TCB)
    (tmp_path / name).write_bytes(vendor("Milan").ark_certificate)
    with pytest.raises(FormatError) as refused:
        report_vcek(tmp_path, report("Milan", chip_id, MILAN_TCB))
    assert str(refused.value) == f"{tmp_path / name}: VCEK: no structVersion extension"


def test_the_cached_chain_of_a_product(tmp_path: Path, roots: TrustRoots) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        cached_chain(tmp_path, "Genoa", roots)
    assert raised.value.strerror == (
        "no Genoa cert_chain in the collateral cache (fetch KDS /vcek/v1/Genoa/cert_chain, "
        "then cvm attest collateral add it)")
    add_chain(tmp_path, vendor("Genoa").cert_chain(), roots)
    assert cached_chain(tmp_path, "Genoa", roots) == CollateralCache(tmp_path).chain("Genoa")


def test_a_cached_chain_of_another_product_is_refused_by_name(tmp_path: Path,
                                                              roots: TrustRoots) -> None:
    CollateralCache(tmp_path).put_chain("Genoa", vendor("Milan").cert_chain())
    with pytest.raises(ChainError) as refused:
        cached_chain(tmp_path, "Genoa", roots)
    assert str(refused.value) == (f"{tmp_path / 'cert_chain-Genoa.pem'}: its ARK is Milan's, "
                                  "the VCEK is Genoa's")
    # an ARK no root trusts: the chain verifier refuses it and says why
    only_genoa = TrustRoots.of([vendor("Genoa").trust_anchor()])
    assert cached_chain(tmp_path, "Genoa", only_genoa) == vendor("Milan").cert_chain()


def test_a_cached_chain_that_does_not_parse_names_its_file(tmp_path: Path,
                                                           roots: TrustRoots) -> None:
    CollateralCache(tmp_path).put_chain("Genoa", pem.armor("CERTIFICATE",
                                                           vendor("Genoa").ark_certificate))
    with pytest.raises(FormatError) as refused:
        cached_chain(tmp_path, "Genoa", roots)
    assert str(refused.value) == (f"{tmp_path / 'cert_chain-Genoa.pem'}: 1 certificate(s), a "
                                  "cert_chain is the ASK then the ARK")


def test_a_window_note_only_outside_the_window() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert chain_window_note(start, end, start) == ""
    assert chain_window_note(start, end, end) == ""
    before = datetime(2025, 12, 31, tzinfo=UTC)
    assert chain_window_note(start, end, before) == (
        "; not valid at 2025-12-31T00:00:00+00:00 (valid 2026-01-01T00:00:00+00:00 to "
        "2027-01-01T00:00:00+00:00): verification refuses it then")
    assert chain_window_note(start, end, datetime(2027, 1, 2, tzinfo=UTC)) != ""


# --- real AMD collateral ----------------------------------------------------------------------


def test_amds_real_chains_and_vceks_are_filed(tmp_path: Path, vectors: Path) -> None:
    """AMD's Milan and Turin cert_chains and VCEKs (KDS's own bytes): each verified to AMD's
    pinned ARK and named from its extensions — Turin's with 8 bytes of hwID and fmcSPL."""
    base = vectors / "snp/virtee-sev/tests/certs_data"
    amd = TrustRoots.amd()
    for product in ("milan", "turin"):
        assert add_chain(tmp_path, (base / f"cert_chain_{product}").read_bytes(),
                         amd).product == product.capitalize()
    milan = add_vcek(tmp_path, (base / "vcek_milan.der").read_bytes(), [], amd)
    turin = add_vcek(tmp_path, (base / "vcek_turin.der").read_bytes(), [], amd)
    assert milan.name == ("vcek-d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc"
                          "15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6-"
                          "0300000000000873.der")
    assert turin.name == "vcek-1e550a8ee5cf9f4d-0000000000000009.der"
    assert (turin.chain.product, turin.chain.claims.tcb.layout) == ("Turin", TcbLayout.TURIN)
    real = bytes.fromhex((base / "report_milan.hex").read_text().strip())
    parsed = AttestationReport.from_bytes(real)
    assert report_vcek(tmp_path, parsed) == (base / "vcek_milan.der").read_bytes()
