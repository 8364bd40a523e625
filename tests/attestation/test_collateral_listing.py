"""The collateral cache listed file by file: each chain checked against the trusted roots, each
CRL's signature and each VCEK's chain checked against the cached chain of its product (or said
not verified, and why), a VCEK under another chip's or TCB's name unusable, and what does not
parse with its reason."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import pem

from cvm.amd import Vendor
from cvm.attestation.verifier.collateral import STALE, CollateralCache, vcek_file_name
from cvm.attestation.verifier.collateral_listing import (
    NO_CHAIN,
    NOT_VERIFIED,
    UNUSABLE,
    VERIFIED,
    CachedChain,
    CachedCrl,
    CachedVcek,
    Status,
    Unreadable,
    cached_file,
    chain_state,
    chain_states,
    list_cache,
    status_text,
)
from cvm.attestation.verifier.trust import TrustRoots
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
TCB = TcbVersion(boot_loader=4, snp=22, microcode=213)
TURIN_TCB = TcbVersion(boot_loader=3, snp=5, microcode=9, fmc=2, layout=TcbLayout.TURIN)
NOT_OF_THE_CACHE = ("not a file of the cache (cert_chain-<product>.pem, crl-<product>.der, "
                    "vcek-<chip id>-<tcb>.der)")


@functools.cache
def vendor(product: str, revoked: bool = False) -> Vendor:
    made = Vendor(product, clock=lambda: ISSUED)
    if revoked:
        made.revoke_ask()
    return made


@pytest.fixture(scope="module")
def roots() -> TrustRoots:
    return TrustRoots.of([vendor(p).trust_anchor() for p in ("Milan", "Genoa", "Turin")],
                         "emulated")


def _vcek(product: str, index: int, tcb: TcbVersion) -> tuple[bytes, bytes]:
    chip = vendor(product).manufacture_chip(index)
    hw_id = chip.chip_id[:8] if tcb.layout is TcbLayout.TURIN else chip.chip_id
    return hw_id, vendor(product).vcek_certificate(chip.chip_id, tcb)


def test_status_texts() -> None:
    assert status_text(Status(VERIFIED)) == "verified"
    assert status_text(Status(NOT_VERIFIED, NO_CHAIN)) == "not verified (no chain cached)"
    assert status_text(Status(UNUSABLE, "why")) == "unusable: why"


def test_the_cache_is_listed_file_by_file_each_verified(tmp_path: Path,
                                                       roots: TrustRoots) -> None:
    cache = CollateralCache(tmp_path)
    cache.put_chain("Genoa", vendor("Genoa").cert_chain())
    cache.put_crl("Genoa", vendor("Genoa", revoked=True).crl())
    hw_id, der = _vcek("Genoa", 3, TCB)
    cache.put_vcek(hw_id, TCB, der)
    turin_id, turin = _vcek("Turin", 1, TURIN_TCB)
    cache.put_vcek(turin_id, TURIN_TCB, turin)  # no Turin chain cached
    cache.put_crl("Milan", vendor("Milan").crl())  # no Milan chain either
    (tmp_path / "crl-Turin.der").write_bytes(b"\x30\x00")
    (tmp_path / "notes.txt").write_text("fetched Monday")
    entries = list_cache(tmp_path, ISSUED + WEEK + timedelta(seconds=1), roots)
    assert [entry.name for entry in entries] == sorted(p.name for p in tmp_path.iterdir())
    by_name = {entry.name: entry for entry in entries}
    chain = by_name["cert_chain-Genoa.pem"]
    assert isinstance(chain, CachedChain) and chain.status == Status(VERIFIED)
    assert (chain.product, chain.ask.der, chain.ark.der) == (
        "Genoa", vendor("Genoa").ask_certificate, vendor("Genoa").ark_certificate)
    genoa = by_name["crl-Genoa.der"]
    assert isinstance(genoa, CachedCrl)
    assert (genoa.product, genoa.freshness, genoa.status) == ("Genoa", STALE, Status(VERIFIED))
    assert genoa.crl.revoked_serials
    milan = by_name["crl-Milan.der"]
    assert isinstance(milan, CachedCrl) and milan.status == Status(NOT_VERIFIED, NO_CHAIN)
    vcek = by_name[vcek_file_name(hw_id, TCB)]
    assert isinstance(vcek, CachedVcek) and vcek.status == Status(VERIFIED)
    assert (vcek.claims.hw_id, vcek.claims.tcb, vcek.certificate.der) == (hw_id, TCB, der)
    unverified = by_name[vcek_file_name(turin_id, TURIN_TCB)]
    assert isinstance(unverified, CachedVcek)
    assert unverified.status == Status(NOT_VERIFIED, NO_CHAIN)
    unreadable = {e.name: e.reason for e in entries if isinstance(e, Unreadable)}
    assert set(unreadable) == {"crl-Turin.der", "notes.txt"}
    assert unreadable["crl-Turin.der"].startswith("not a DER X.509 CRL (")
    assert unreadable["notes.txt"] == NOT_OF_THE_CACHE


def test_a_vcek_under_another_name_is_unusable(tmp_path: Path, roots: TrustRoots) -> None:
    """A VCEK filed (or renamed) under another chip's or another TCB's name would be found for
    reports it does not belong to."""
    cache = CollateralCache(tmp_path)
    cache.put_chain("Genoa", vendor("Genoa").cert_chain())
    hw_id, der = _vcek("Genoa", 3, TCB)
    other_id = _vcek("Genoa", 4, TCB)[0]
    other_tcb = TcbVersion(boot_loader=5, snp=22, microcode=213)
    cache.put_vcek(other_id, TCB, der)
    cache.put_vcek(hw_id, other_tcb, der)
    states = chain_states(tmp_path, roots)
    own = vcek_file_name(hw_id, TCB)
    for name in (vcek_file_name(other_id, TCB), vcek_file_name(hw_id, other_tcb)):
        entry = cached_file(tmp_path / name, ISSUED, states, roots)
        assert isinstance(entry, CachedVcek)
        assert entry.status == Status(UNUSABLE, (
            f"its certificate is for chip {hw_id[:8].hex()}... at TCB 0xd516000000000004, "
            f"its name would be {own}"))


def test_a_vcek_of_another_chain_is_unusable(tmp_path: Path, roots: TrustRoots) -> None:
    cache = CollateralCache(tmp_path)
    cache.put_chain("Genoa", vendor("Genoa").cert_chain())
    hw_id, der = _vcek("Genoa", 3, TCB)
    forged = der[:-1] + bytes([der[-1] ^ 1])
    cache.put_vcek(hw_id, TCB, forged)
    entry = cached_file(tmp_path / vcek_file_name(hw_id, TCB), ISSUED,
                        chain_states(tmp_path, roots), roots)
    assert isinstance(entry, CachedVcek) and entry.status.state == UNUSABLE
    assert entry.status.reason.endswith("the certificate signature does not verify")


def test_a_vcek_of_an_unknown_product_is_unusable(tmp_path: Path, roots: TrustRoots) -> None:
    from cvm.amd.kds import KeyDistributionService
    from cvm.amd.product import Product

    kds = KeyDistributionService(vendor("Genoa").authority)
    object.__setattr__(kds, "product", Product("Genoa", "Rome-B0", 0x17, 0x31, 0,
                                               TcbLayout.MILAN_GENOA))
    chip = kds.manufacture_chip(1)
    der = kds.vcek_certificate(chip.chip_id, TCB)
    CollateralCache(tmp_path).put_vcek(chip.chip_id, TCB, der)
    entry = cached_file(tmp_path / vcek_file_name(chip.chip_id, TCB), ISSUED,
                        chain_states(tmp_path, roots), roots)
    assert isinstance(entry, CachedVcek) and entry.status == Status(
        UNUSABLE, "the VCEK's productName 'Rome-B0' is no product cvm knows "
                  "(Milan, Genoa, Turin)")


@pytest.mark.parametrize(("chain", "reason"), [
    ("another product's", "its ARK is Milan's, not Genoa's"),
    ("an untrusted one", "is not among the trusted roots (no Genoa)"),
    ("an ASK its ARK did not sign", "SEV-Milan-emulated <- ARK-Genoa-emulated: the issuer"),
])
def test_an_unusable_chain_verifies_nothing(tmp_path: Path, roots: TrustRoots, chain: str,
                                            reason: str) -> None:
    data = {"another product's": vendor("Milan").cert_chain(),
            "an untrusted one": vendor("Genoa").cert_chain(),
            "an ASK its ARK did not sign": pem.armor("CERTIFICATE",
                                                     vendor("Milan").ask_certificate)
            + pem.armor("CERTIFICATE", vendor("Genoa").ark_certificate)}[chain]
    cache = CollateralCache(tmp_path)
    cache.put_chain("Genoa", data)
    cache.put_crl("Genoa", vendor("Genoa").crl())
    hw_id, der = _vcek("Genoa", 3, TCB)
    cache.put_vcek(hw_id, TCB, der)
    if chain == "an untrusted one":
        roots = TrustRoots.of([vendor(p).trust_anchor() for p in ("Milan", "Turin")], "no Genoa")
    entries = {e.name: e for e in list_cache(tmp_path, ISSUED, roots)}
    listed = entries["cert_chain-Genoa.pem"]
    assert isinstance(listed, CachedChain) and listed.status.state == UNUSABLE
    assert reason in listed.status.reason
    unverified = Status(NOT_VERIFIED, "the cached Genoa cert_chain is unusable")
    assert entries["crl-Genoa.der"].status == unverified  # type: ignore[union-attr]
    assert entries[vcek_file_name(hw_id, TCB)].status == unverified  # type: ignore[union-attr]


def test_a_crl_signed_by_another_ark_is_unusable(tmp_path: Path, roots: TrustRoots) -> None:
    cache = CollateralCache(tmp_path)
    cache.put_chain("Genoa", vendor("Genoa").cert_chain())
    cache.put_crl("Genoa", vendor("Milan").crl())
    entry = list_cache(tmp_path, ISSUED, roots)[1]
    assert isinstance(entry, CachedCrl)
    assert entry.status == Status(UNUSABLE, "CRL: issuer does not match the root certificate")


def test_the_state_of_each_products_chain(tmp_path: Path, roots: TrustRoots) -> None:
    assert chain_state(None, "Milan", roots) is None
    assert chain_state(vendor("Milan").cert_chain(), "Milan", roots) == (
        vendor("Milan").ask_certificate, vendor("Milan").ark_certificate)
    assert str(chain_state(b"junk", "Milan", roots)).startswith("not a DER X.509 certificate (")
    (tmp_path / "cert_chain-Turin.pem").mkdir()  # not a file: no chain
    (tmp_path / "cert_chain-Milan.pem").write_bytes(vendor("Milan").cert_chain())
    assert chain_states(tmp_path, roots) == {
        "Milan": (vendor("Milan").ask_certificate, vendor("Milan").ark_certificate),
        "Genoa": None, "Turin": None}


def test_a_chain_that_cannot_be_read_is_unusable(tmp_path: Path, roots: TrustRoots,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cert_chain-Milan.pem").write_bytes(vendor("Milan").cert_chain())

    def failing(path: Path) -> bytes:
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", failing)
    assert chain_states(tmp_path, roots)["Milan"] == "Permission denied"

    def no_message(path: Path) -> bytes:
        raise OSError("the disk went away")

    monkeypatch.setattr(Path, "read_bytes", no_message)
    assert chain_states(tmp_path, roots)["Milan"] == "the disk went away"


def test_a_chain_file_that_is_not_a_chain_is_unreadable(tmp_path: Path,
                                                        roots: TrustRoots) -> None:
    (tmp_path / "cert_chain-Milan.pem").write_bytes(pem.armor(
        "CERTIFICATE", vendor("Milan").ark_certificate))
    entry = cached_file(tmp_path / "cert_chain-Milan.pem", ISSUED,
                        chain_states(tmp_path, roots), roots)
    assert entry == Unreadable("cert_chain-Milan.pem",
                               "1 certificate(s), a cert_chain is the ASK then the ARK")


VCEK_NAME = "vcek-" + "ab" * 64 + "-" + "04000000000016d5" + ".der"
TURIN_NAME = "vcek-" + "ab" * 8 + "-" + "0203000500000009" + ".der"


@pytest.mark.parametrize("name", [
    "crl-Rome.der", "crl-milan.der", "crl-Milan.der.bak", "old-crl-Milan.der", "crl-Milan.pem",
    "vcek--0400000000000016.der", "vcek-AB-0400000000000016.der", "vcek-ab-04000000000016.der",
    "vcek-ab-040000000000001600.der", VCEK_NAME + ".tmp", "x" + VCEK_NAME,
    "vcek-" + "ab" * 63 + "-04000000000016d5.der", "vcek-" + "ab" * 9 + "-04000000000016d5.der",
    "cert_chain-Rome.pem", "cert_chain-Milan.der", "x" + "cert_chain-Milan.pem",
    "cert_chain-Milan.pem.bak"])
def test_only_the_caches_names_are_read(tmp_path: Path, name: str, roots: TrustRoots) -> None:
    (tmp_path / name).write_bytes(vendor("Genoa").crl())
    assert cached_file(tmp_path / name, ISSUED, chain_states(tmp_path, roots),
                       roots) == Unreadable(name, NOT_OF_THE_CACHE)


@pytest.mark.parametrize("name", [VCEK_NAME, TURIN_NAME])
def test_a_vcek_file_that_is_not_a_vcek_says_why(tmp_path: Path, roots: TrustRoots,
                                                 name: str) -> None:
    states = chain_states(tmp_path, roots)
    (tmp_path / name).write_bytes(b"\x30\x00")
    assert cached_file(tmp_path / name, ISSUED, states, roots).reason.startswith(  # type: ignore[union-attr]
        "not a DER X.509 certificate (")
    (tmp_path / name).write_bytes(vendor("Genoa").ark_certificate)  # no AMD extensions
    entry = cached_file(tmp_path / name, ISSUED, states, roots)
    assert isinstance(entry, Unreadable) and entry.reason.startswith("VCEK: ")


def test_a_cache_file_that_cannot_be_read_says_why(tmp_path: Path, roots: TrustRoots) -> None:
    (tmp_path / "crl-Turin.der").mkdir()
    assert cached_file(tmp_path / "crl-Turin.der", ISSUED, {}, roots) == Unreadable(
        "crl-Turin.der", "Is a directory")


def test_a_read_error_without_an_os_message_says_what_it_has(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roots: TrustRoots) -> None:
    (tmp_path / "crl-Turin.der").write_bytes(b"")

    def failing(path: Path) -> bytes:
        raise OSError("the disk went away")

    monkeypatch.setattr(Path, "read_bytes", failing)
    assert cached_file(tmp_path / "crl-Turin.der", ISSUED, {}, roots) == Unreadable(
        "crl-Turin.der", "the disk went away")


def test_a_missing_cache_is_the_os_error(tmp_path: Path, roots: TrustRoots) -> None:
    with pytest.raises(FileNotFoundError):
        list_cache(tmp_path / "absent", ISSUED, roots)
    assert list_cache(tmp_path, ISSUED, roots) == []
