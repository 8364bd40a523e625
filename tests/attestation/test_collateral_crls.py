"""CRLs in the collateral cache: each filed under the product whose trusted ARK signed it,
never replaced by an older one, looked up by the product of the evidence's ARK; and the cache
listed file by file, what does not parse with its reason."""

from __future__ import annotations

import errno
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import pem

from cvm.amd import Vendor
from cvm.attestation.verifier.collateral import (
    FRESH,
    NOT_YET_VALID,
    STALE,
    CollateralCache,
    add_crl,
    ark_product,
    authentic_cached_crl,
    crl_freshness,
    crl_product,
    evidence_crl,
)
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto.x509_chain import Certificate, parse_certificate, parse_crl
from cvm.errors import ChainError, FormatError, PolicyError

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
LATER = ISSUED + timedelta(days=30)
WEEK = timedelta(days=7)


def crl(product: str, at: datetime = ISSUED, *, revoke: bool = False) -> bytes:
    """A CRL of this process's emulated ``product`` root made at ``at``."""
    vendor = Vendor(product, clock=lambda: at)
    if revoke:
        vendor.revoke_ask()
    return vendor.crl()


def ark(product: str) -> Certificate:
    return parse_certificate(Vendor(product).ark_certificate)


@pytest.fixture(scope="module")
def roots() -> TrustRoots:
    return TrustRoots.of([Vendor(p).trust_anchor() for p in ("Milan", "Genoa")], "emulated")


@pytest.fixture(scope="module")
def arks() -> list[Certificate]:
    return [ark("Milan"), ark("Genoa")]


def _tampered(der: bytes) -> bytes:
    return der[:-1] + bytes([der[-1] ^ 1])  # the last byte of the signature


def test_the_product_of_an_ark_is_the_trusted_root_it_hashes_to(roots: TrustRoots) -> None:
    assert ark_product(Vendor("Milan").ark_certificate, roots) == "Milan"
    assert ark_product(Vendor("Genoa").ark_certificate, roots) == "Genoa"
    assert ark_product(_tampered(Vendor("Genoa").ark_certificate), roots) is None
    only_milan = TrustRoots.of([Vendor("Milan").trust_anchor()])
    assert ark_product(Vendor("Genoa").ark_certificate, only_milan) is None


def test_the_evidence_gets_the_crl_of_its_own_product(tmp_path: Path, roots: TrustRoots) -> None:
    cache = CollateralCache(tmp_path)
    cache.put_crl("Milan", b"milan's")
    cache.put_crl("Genoa", b"genoa's")
    assert evidence_crl(tmp_path, Vendor("Genoa").ark_certificate, roots) == b"genoa's"
    assert evidence_crl(tmp_path, Vendor("Milan").ark_certificate, roots) == b"milan's"


def test_an_untrusted_ark_looks_up_no_crl(tmp_path: Path, roots: TrustRoots) -> None:
    """The chain check refuses it and says why; a missing CRL would hide that reason."""
    assert evidence_crl(tmp_path / "absent", _tampered(Vendor("Genoa").ark_certificate),
                        roots) is None


def test_a_trusted_product_without_its_crl_is_the_missing_files_error(
        tmp_path: Path, roots: TrustRoots) -> None:
    CollateralCache(tmp_path).put_crl("Milan", b"milan's")
    with pytest.raises(FileNotFoundError) as raised:
        evidence_crl(tmp_path, Vendor("Genoa").ark_certificate, roots)
    assert (raised.value.errno, raised.value.strerror, raised.value.filename) == (
        errno.ENOENT, "no Genoa CRL in the collateral cache (fetch KDS /vcek/v1/Genoa/crl, "
                      "then cvm attest collateral add it)", str(tmp_path))


def test_a_missing_crl_may_be_allowed(tmp_path: Path, roots: TrustRoots) -> None:
    """``report verify --allow-no-crl``: no CRL, no error; one cached is still taken."""
    assert evidence_crl(tmp_path, Vendor("Genoa").ark_certificate, roots,
                        required=False) is None
    CollateralCache(tmp_path).put_crl("Genoa", b"genoa's")
    assert evidence_crl(tmp_path, Vendor("Genoa").ark_certificate, roots,
                        required=False) == b"genoa's"


def test_a_crl_is_the_product_whose_trusted_ark_signed_it(
        roots: TrustRoots, arks: list[Certificate]) -> None:
    genoa, milan = parse_crl(crl("Genoa")), parse_crl(crl("Milan"))
    assert crl_product(genoa, arks, roots) == "Genoa"
    assert crl_product(genoa, arks[::-1], roots) == "Genoa"
    assert crl_product(milan, arks, roots) == "Milan"


def test_a_crl_no_trusted_ark_signed_is_refused(roots: TrustRoots,
                                                arks: list[Certificate]) -> None:
    genoa = parse_crl(crl("Genoa"))
    with pytest.raises(ChainError) as refused:
        crl_product(genoa, [ark("Milan")], roots)
    assert str(refused.value) == ("the CRL of 'ARK-Genoa-emulated' is signed by no trusted ARK "
                                  "(emulated: Milan)")
    with pytest.raises(ChainError) as refused:
        crl_product(genoa, [], roots)
    assert str(refused.value).endswith("(emulated: no ARK certificate given)")
    # the right ARK's certificate, but not a trusted one: its signature is not even looked at
    only_milan = TrustRoots.of([Vendor("Milan").trust_anchor()], "pinned")
    with pytest.raises(ChainError, match=r"\(pinned: Milan\)$"):
        crl_product(genoa, arks, only_milan)
    # the trusted ARK's name, not its signature: refused
    forged = parse_crl(_tampered(crl("Genoa")))
    with pytest.raises(ChainError, match="signed by no trusted ARK"):
        crl_product(forged, arks, roots)


def test_every_ark_given_is_tried_in_turn(roots: TrustRoots) -> None:
    """An untrusted certificate, or a trusted ARK that did not sign, before the signer: the
    signer is still found; the refusal lists every trusted ARK tried."""
    stranger = parse_certificate(Vendor("Turin").ask_certificate)
    genoa = parse_crl(crl("Genoa"))
    assert crl_product(genoa, [stranger, ark("Milan"), ark("Genoa")], roots) == "Genoa"
    with pytest.raises(ChainError) as refused:
        crl_product(parse_crl(_tampered(crl("Genoa"))), [ark("Milan"), ark("Genoa")], roots)
    assert str(refused.value).endswith("(emulated: Milan, Genoa)")


def test_a_crl_without_a_common_name_is_refused_all_the_same(roots: TrustRoots,
                                                              arks: list[Certificate]) -> None:
    nameless = replace(parse_crl(crl("Genoa")), issuer=(("country_name", "US"),))
    with pytest.raises(ChainError) as refused:
        crl_product(nameless, arks, roots)
    assert str(refused.value).startswith("the CRL of '?' is signed by no trusted ARK")


def test_a_crl_is_fresh_from_its_this_update_to_its_next_update() -> None:
    revocations = parse_crl(crl("Genoa"))
    tick = timedelta(microseconds=1)
    assert crl_freshness(revocations, ISSUED) == FRESH
    assert crl_freshness(revocations, ISSUED + WEEK) == FRESH
    assert crl_freshness(revocations, ISSUED + WEEK + tick) == STALE
    assert crl_freshness(revocations, ISSUED - tick) == NOT_YET_VALID
    backwards = replace(revocations, next_update=ISSUED - tick)  # never current: stale
    assert crl_freshness(backwards, ISSUED) == STALE
    endless = replace(revocations, next_update=None)
    assert crl_freshness(endless, ISSUED + 1000 * WEEK) == FRESH
    assert crl_freshness(endless, ISSUED - tick) == NOT_YET_VALID


def test_a_crl_is_filed_under_its_product_as_der(tmp_path: Path, roots: TrustRoots,
                                                 arks: list[Certificate]) -> None:
    der = crl("Genoa", revoke=True)
    added = add_crl(tmp_path / "cache", pem.armor("X509 CRL", der), arks, roots, ISSUED)
    assert (added.product, added.crl, added.replaced, added.freshness) == (
        "Genoa", parse_crl(der), None, FRESH)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["crl-Genoa.der"]
    assert (tmp_path / "cache" / "crl-Genoa.der").read_bytes() == der
    assert add_crl(tmp_path / "cache", crl("Milan"), arks, roots, ISSUED).product == "Milan"
    assert CollateralCache(tmp_path / "cache").crl("Genoa") == der


def test_a_newer_or_equal_crl_replaces_the_cached_one(tmp_path: Path, roots: TrustRoots,
                                                       arks: list[Certificate]) -> None:
    first, same_time = crl("Genoa"), crl("Genoa", revoke=True)
    add_crl(tmp_path, first, arks, roots, ISSUED)
    added = add_crl(tmp_path, same_time, arks, roots, ISSUED)
    assert added.replaced == parse_crl(first)
    assert CollateralCache(tmp_path).crl("Genoa") == same_time
    newer = crl("Genoa", LATER)
    added = add_crl(tmp_path, newer, arks, roots, LATER)
    assert added.replaced == parse_crl(same_time) and added.freshness == FRESH
    assert CollateralCache(tmp_path).crl("Genoa") == newer


def test_an_older_crl_is_a_rollback_and_refused(tmp_path: Path, roots: TrustRoots,
                                                arks: list[Certificate]) -> None:
    """An older list may not name an ASK revoked since: it never replaces a newer one."""
    newer = crl("Genoa", LATER, revoke=True)
    add_crl(tmp_path, newer, arks, roots, LATER)
    with pytest.raises(PolicyError) as refused:
        add_crl(tmp_path, crl("Genoa"), arks, roots, LATER)
    assert str(refused.value) == (
        "a rollback: this Genoa CRL's thisUpdate 2026-01-01T00:00:00+00:00 is older than the "
        "cached one's 2026-01-31T00:00:00+00:00; refused")
    assert CollateralCache(tmp_path).crl("Genoa") == newer
    # another product's CRL is another product's: no rollback across products
    assert add_crl(tmp_path, crl("Milan"), arks, roots, LATER).replaced is None


@pytest.mark.parametrize("cached", ["garbage", "other product", "forged"])
def test_a_cached_crl_that_is_not_that_products_keeps_nothing_out(
        tmp_path: Path, roots: TrustRoots, arks: list[Certificate], cached: str) -> None:
    """What sits in ``crl-Genoa.der`` counts only if Genoa's trusted ARK signed it: a corrupt
    file, Milan's CRL or a forged newer one do not block the authentic CRL."""
    content = {"garbage": b"\x30\x03\x02\x01\x00", "other product": crl("Milan", LATER),
               "forged": _tampered(crl("Genoa", LATER))}[cached]
    (tmp_path / "crl-Genoa.der").write_bytes(content)
    assert authentic_cached_crl(content, "Genoa", arks, roots) is None
    added = add_crl(tmp_path, crl("Genoa"), arks, roots, ISSUED)
    assert added.replaced is None
    assert CollateralCache(tmp_path).crl("Genoa") == crl("Genoa")


def test_the_authentic_cached_crl_is_read_back(roots: TrustRoots,
                                               arks: list[Certificate]) -> None:
    assert authentic_cached_crl(None, "Genoa", arks, roots) is None
    assert authentic_cached_crl(crl("Genoa"), "Genoa", arks, roots) == parse_crl(crl("Genoa"))


def test_a_stale_crl_is_filed_and_said_stale(tmp_path: Path, roots: TrustRoots,
                                             arks: list[Certificate]) -> None:
    added = add_crl(tmp_path, crl("Genoa"), arks, roots, LATER)
    assert added.freshness == STALE
    assert CollateralCache(tmp_path).crl("Genoa") == crl("Genoa")


@pytest.mark.parametrize(("data", "error"), [
    (b"not a crl", FormatError), (Vendor("Genoa").ark_certificate, FormatError),
    (_tampered(crl("Genoa")), ChainError)])
def test_what_is_refused_writes_nothing(tmp_path: Path, roots: TrustRoots,
                                        arks: list[Certificate], data: bytes,
                                        error: type[Exception]) -> None:
    with pytest.raises(error):
        add_crl(tmp_path / "cache", data, arks, roots, ISSUED)
    assert not (tmp_path / "cache").exists()
