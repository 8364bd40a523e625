"""``cvm attest collateral add|show`` and ``cvm attest appraise --collateral``: the cache is
filled by product (the trusted ARK that signed each CRL), never rolled back, listed file by
file; an appraisal takes the CRL of the evidence's own product."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import pem

from cvm.amd import Vendor
from cvm.amd.authority import EmulatedRoot
from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.verifier.collateral import FRESH
from cvm.attestation.verifier.collateral_listing import (
    VERIFIED,
    CachedCrl,
    CachedVcek,
    Status,
    Unreadable,
)
from cvm.cli import attest, attest_collateral
from cvm.cli.main import execute
from cvm.crypto.x509_chain import parse_certificate, parse_crl
from cvm.errors import ChainError, FormatError, UsageError
from cvm.formats.kbs.rcar import Attestation
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion
from cvm.formats.snp.vcek_extensions import VcekExtensions
from cvm.scenarios.attested_guest import build_owner, reference_json, seeded_random

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
LATER = ISSUED + timedelta(days=30)
ADD = ("attest", "collateral", "add")
SHOW = ("attest", "collateral", "show")
TCB = TcbVersion(boot_loader=4, snp=22, microcode=213)


@functools.cache
def _store_root(directory: Path, product: str) -> EmulatedRoot:
    return RootStore(directory).root(product, create=True)  # its keys load slowly: once


def store_vendor(product: str, at: datetime) -> Vendor:
    """The emulated AMD of this installation (what ``--trust emulated`` trusts), at ``at``."""
    store = RootStore.for_workspace(DEFAULT_WORKSPACE)
    root = _store_root(store.directory, product)
    return Vendor(product, store.seed(), lambda: at, root=root)


@pytest.fixture(autouse=True)
def _pinned() -> None:
    """Every test here trusts this installation's Milan and Genoa roots, whatever runs first."""
    for product in ("Milan", "Genoa"):
        store_vendor(product, ISSUED)


def store_crl(product: str, at: datetime = ISSUED, *, revoke: bool = False) -> bytes:
    vendor = store_vendor(product, at)
    if revoke:
        vendor.revoke_ask()
    return vendor.crl()


def _file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_a_crl_is_filed_under_the_product_that_signed_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    milan, genoa = store_crl("Milan"), store_crl("Genoa", revoke=True)
    files = [_file(tmp_path, "milan.der", milan),
             _file(tmp_path, "genoa.pem", pem.armor("X509 CRL", genoa))]
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), *map(str, files), "--trust", "emulated",
                    "--now", "2026-01-02"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{files[0]}: Milan CRL of 2026-01-01T00:00:00+00:00 (0 revoked) filed as "
        f"{cache / 'crl-Milan.der'}",
        f"{files[1]}: Genoa CRL of 2026-01-01T00:00:00+00:00 (1 revoked) filed as "
        f"{cache / 'crl-Genoa.der'}"]
    assert (cache / "crl-Milan.der").read_bytes() == milan
    assert (cache / "crl-Genoa.der").read_bytes() == genoa  # the PEM's DER


def test_a_newer_crl_replaces_an_older_one_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    older = _file(tmp_path, "older.der", store_crl("Genoa"))
    newer = _file(tmp_path, "newer.der", store_crl("Genoa", LATER, revoke=True))
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), str(older), "--trust", "emulated", "--now",
                    "2026-01-02"]) == 0
    capsys.readouterr()
    assert execute([*ADD, str(cache), str(newer), "--trust", "emulated", "--now",
                    "2026-01-31"]) == 0
    assert capsys.readouterr().out == (
        f"{newer}: Genoa CRL of 2026-01-31T00:00:00+00:00 (1 revoked) filed as "
        f"{cache / 'crl-Genoa.der'}, replacing the one of 2026-01-01T00:00:00+00:00\n")
    assert execute([*ADD, str(cache), str(older), "--trust", "emulated"]) == 67
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"cvm: error: {older}: a rollback: this Genoa CRL's thisUpdate "
        "2026-01-01T00:00:00+00:00 is older than the cached one's 2026-01-31T00:00:00+00:00; "
        "refused\n")
    assert (cache / "crl-Genoa.der").read_bytes() == newer.read_bytes()


def test_a_stale_crl_is_filed_and_the_line_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = _file(tmp_path, "stale.der", store_crl("Genoa"))
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), str(stale), "--trust", "emulated", "--now",
                    "2026-01-09"]) == 0
    assert capsys.readouterr().out.endswith(
        "filed as " + str(cache / "crl-Genoa.der") + "; stale at 2026-01-09T00:00:00+00:00 "
        "(nextUpdate 2026-01-08T00:00:00+00:00): appraisal refuses it until a newer one is "
        "added\n")
    assert (cache / "crl-Genoa.der").read_bytes() == stale.read_bytes()
    assert execute([*ADD, str(cache), str(stale), "--trust", "emulated", "--now",
                    "2025-12-31"]) == 0
    assert capsys.readouterr().out.endswith(
        ", replacing the one of 2026-01-01T00:00:00+00:00; not yet valid at "
        "2025-12-31T00:00:00+00:00\n")


@pytest.mark.parametrize(("case", "code", "message"), [
    ("not a crl", 65, "{file}: not a CRL, a KDS cert_chain (ASK then ARK) or a VCEK "
                      "certificate\n"),
    ("an ASK alone", 65, "{file}: a certificate that is not a VCEK (VCEK: no structVersion "
                         "extension): not a CRL, a KDS cert_chain (ASK then ARK) or a VCEK "
                         "certificate\n"),
    ("another root's", 66, "{file}: the CRL of 'ARK-Genoa-emulated' is signed by no trusted "
                           "ARK (emulated: "),
    ("another root's chain", 66, "{file}: the root 'ARK-Genoa-emulated' (SHA-256 "),
    ("missing", 74, "No such file or directory: {file}"),
])
def test_each_refusal_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     case: str, code: int, message: str) -> None:
    file = tmp_path / "given"
    if case != "missing":
        file.write_bytes({"not a crl": b"\x30\x03\x02\x01\x00",
                          "an ASK alone": store_vendor("Genoa", ISSUED).ask_certificate,
                          "another root's": Vendor("Genoa").crl(),
                          "another root's chain": Vendor("Genoa").cert_chain()}[case])
    assert execute([*ADD, str(tmp_path / "cache"), str(file), "--trust", "emulated"]) == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("cvm: error: " + message.format(file=file))
    assert not (tmp_path / "cache").exists()


def test_a_refusal_stops_at_its_file_after_adding_the_ones_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _file(tmp_path, "good.der", store_crl("Milan"))
    bad = _file(tmp_path, "bad.der", b"junk")
    after = _file(tmp_path, "after.der", store_crl("Genoa"))
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), str(good), str(bad), str(after), "--trust",
                    "emulated"]) == 65
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{good}: Milan CRL") and captured.out.count("\n") == 1
    assert captured.err.startswith(f"cvm: error: {bad}: ")
    assert sorted(p.name for p in cache.iterdir()) == ["crl-Milan.der"]


def test_amds_roots_need_their_certificates(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """cvm pins AMD's ARKs by fingerprint: without --chain no CRL of theirs can be checked,
    and a --chain without a trusted ARK in it is not what the user believed."""
    crl = _file(tmp_path, "crl.der", store_crl("Milan"))
    assert execute([*ADD, str(tmp_path / "cache"), str(crl)]) == 64
    assert capsys.readouterr().err == (
        f"cvm: error: {crl}: --trust amd: no trusted ARK certificate to check a CRL's signature "
        "with (cvm pins AMD's ARKs by fingerprint only): add KDS /vcek/v1/<product>/cert_chain "
        "to the cache first, or give it with --chain\n")
    chain = _file(tmp_path, "chain.pem", store_vendor("Milan", ISSUED).cert_chain())
    assert execute([*ADD, str(tmp_path / "cache"), str(crl), "--chain", str(chain)]) == 66
    assert capsys.readouterr().err == (
        f"cvm: error: --chain {chain}: no certificate in it is a trusted ARK (amd)\n")
    assert not (tmp_path / "cache").exists()


def test_the_chain_given_supplies_amds_ark(vectors: Path) -> None:
    """AMD's real Milan chain (ASK, then ARK, as KDS serves it): only the ARK is taken, and it
    is AMD's; the ASK alone is no ARK."""
    chain = vectors / "snp/virtee-sev/tests/certs_data/cert_chain_milan"
    roots, arks = attest_collateral.trusted_arks("amd", [chain])
    assert roots.label == "amd"
    assert [roots.product_of(ark.fingerprint_sha256) for ark in arks] == ["Milan"]
    ask = vectors / "snp/virtee-sev/src/certs/snp/builtin/milan/ask.pem"
    with pytest.raises(ChainError, match="no certificate in it is a trusted ARK"):
        attest_collateral.trusted_arks("amd", [chain, ask])


def test_the_emulated_roots_are_every_pinned_ark() -> None:
    store_vendor("Genoa", ISSUED)
    store = RootStore.for_workspace(DEFAULT_WORKSPACE)
    roots, arks = attest_collateral.trusted_arks("emulated", [])
    assert roots.label == "emulated"
    assert sorted(ark.fingerprint_sha256 for ark in arks) == sorted(
        fingerprint for _, fingerprint in store.trust_anchors())


def test_the_chain_is_taken_with_the_emulated_roots_too(tmp_path: Path) -> None:
    chain = _file(tmp_path, "chain.pem", store_vendor("Genoa", ISSUED).cert_chain())
    _, arks = attest_collateral.trusted_arks("emulated", [chain])
    genoa = parse_certificate(store_vendor("Genoa", ISSUED).ark_certificate)
    assert [ark.der for ark in arks].count(genoa.der) == 2  # the given one, the pinned one


def test_a_chain_that_does_not_parse_is_named_with_its_option(tmp_path: Path) -> None:
    chain = _file(tmp_path, "chain.pem", b"not a certificate")
    with pytest.raises(FormatError) as refused:
        attest_collateral.trusted_arks("emulated", [chain])
    assert str(refused.value).startswith(f"--chain {chain}: not a DER X.509 certificate (")


def test_the_commands_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``add`` and ``show`` called as typer calls them with no option given: AMD's roots, the
    time now, text output."""
    crl = _file(tmp_path, "crl.der", store_crl("Genoa"))
    with pytest.raises(UsageError, match=r": --trust amd: no trusted ARK certificate"):
        attest_collateral.add(tmp_path / "cache", [crl])
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "crl-Genoa.der").write_bytes(crl.read_bytes())
    (tmp_path / "cache" / "cert_chain-Genoa.pem").write_bytes(
        store_vendor("Genoa", ISSUED).cert_chain())
    attest_collateral.show(tmp_path / "cache")
    out = capsys.readouterr().out
    assert out.startswith("cert_chain-Genoa.pem: Genoa cert_chain, ") and ", stale at 20" in out
    assert out.count("unusable: ") == 1  # the chain under AMD's roots; the CRL not verified
    assert "revoked serial(s), not verified (the cached Genoa cert_chain is unusable)" in out
    now = datetime.now(UTC)
    attest_collateral.show(tmp_path / "cache", as_json=True)
    shown = json.loads(capsys.readouterr().out)
    assert now <= datetime.fromisoformat(shown["now"]) <= datetime.now(UTC)


@pytest.mark.parametrize(("args", "message"), [
    (["--trust", "intel"], "--trust must be amd or emulated, not 'intel'"),
    (["--trust", "emulated", "--now", "soon"], "--now 'soon' is not an ISO 8601 time"),
])
def test_bad_options_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      args: list[str], message: str) -> None:
    crl = _file(tmp_path, "crl.der", store_crl("Milan"))
    assert execute([*ADD, str(tmp_path / "cache"), str(crl), *args]) == 64
    assert capsys.readouterr().err == f"cvm: error: {message}\n"
    if "--now" in args:
        assert execute([*SHOW, str(tmp_path), *args[2:]]) == 64
        assert capsys.readouterr().err == f"cvm: error: {message}\n"


def test_show_lists_each_file_with_what_it_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vendor = store_vendor("Genoa", ISSUED)
    chip = vendor.manufacture_chip(2)
    vcek = vendor.vcek_certificate(chip.chip_id, TCB)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "crl-Genoa.der").write_bytes(store_crl("Genoa", revoke=True))
    vcek_name = f"vcek-{chip.chip_id.hex()}-{TCB.to_bytes().hex()}.der"
    (cache / vcek_name).write_bytes(vcek)
    (cache / "crl-Turin.der").write_bytes(b"\x30\x00")
    (cache / "cert_chain-Genoa.pem").write_bytes(vendor.cert_chain())
    assert execute([*SHOW, str(cache), "--now", "2026-01-03", "--trust", "emulated"]) == 0
    certificate = parse_certificate(vcek)
    issuer = ("OU=cvm emulation (not Advanced Micro Devices), C=US, L=Santa Clara, ST=CA, "
              "O=cvm emulated AMD, CN=ARK-Genoa-emulated")
    lines = capsys.readouterr().out.splitlines()
    ask = parse_certificate(vendor.ask_certificate)
    assert lines[:3] == [
        f"cert_chain-Genoa.pem: Genoa cert_chain, ASK "
        f"{attest_collateral.distinguished_name(ask.subject)} valid to "
        f"{ask.not_after.isoformat()}, ARK SHA-256 {vendor.ark_fingerprint()}, verified",
        f"crl-Genoa.der: Genoa CRL, issuer {issuer}, thisUpdate 2026-01-01T00:00:00+00:00, "
        "nextUpdate 2026-01-08T00:00:00+00:00, fresh at 2026-01-03T00:00:00+00:00, "
        "1 revoked serial(s), verified",
        "crl-Turin.der: unreadable: not a DER X.509 CRL (" + lines[2].split("(", 1)[1]]
    assert lines[3:] == [
        f"{vcek_name}: Genoa-B0 VCEK, chip {chip.chip_id[:8].hex()}..., TCB {TCB}, subject "
        f"{attest_collateral.distinguished_name(certificate.subject)}, valid "
        f"{certificate.not_before.isoformat()} to {certificate.not_after.isoformat()}, verified"]
    assert "CN=SEV-VCEK" in lines[3]
    assert execute([*SHOW, str(cache), "--json", "--now", "2026-01-09", "--trust",
                    "emulated"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('{\n  "directory": ')  # indented by two
    shown = json.loads(out)
    assert shown["directory"] == str(cache) and shown["now"] == "2026-01-09T00:00:00+00:00"
    assert shown["files"][0] == {
        "file": "cert_chain-Genoa.pem", "kind": "cert_chain", "product": "Genoa",
        "ask": attest_collateral.distinguished_name(ask.subject),
        "ark": attest_collateral.distinguished_name(parse_certificate(
            vendor.ark_certificate).subject),
        "ark_sha256": vendor.ark_fingerprint(), "status": "verified", "reason": ""}
    assert shown["files"][1] == {
        "file": "crl-Genoa.der", "kind": "crl", "product": "Genoa", "issuer": issuer,
        "this_update": "2026-01-01T00:00:00+00:00", "next_update": "2026-01-08T00:00:00+00:00",
        "freshness": "stale", "revoked": 1, "status": "verified", "reason": ""}
    assert shown["files"][2]["kind"] == "unreadable"
    assert shown["files"][2]["reason"].startswith("not a DER X.509 CRL (")
    assert shown["files"][3] == {
        "file": vcek_name, "kind": "vcek", "product": "Genoa-B0", "chip_id": chip.chip_id.hex(),
        "tcb": str(TCB), "subject": attest_collateral.distinguished_name(certificate.subject),
        "not_before": certificate.not_before.isoformat(),
        "not_after": certificate.not_after.isoformat(), "status": "verified", "reason": ""}


def test_show_of_an_empty_or_missing_cache(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert execute([*SHOW, str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{tmp_path}: no collateral\n"
    assert execute([*SHOW, str(tmp_path), "--json", "--now", "2026-01-01"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "directory": str(tmp_path), "now": "2026-01-01T00:00:00+00:00", "files": []}
    assert execute([*SHOW, str(tmp_path / "absent")]) == 74
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"cvm: error: No such file or directory: {tmp_path / 'absent'}\n")


def test_a_turin_chip_id_is_shown_whole() -> None:
    """Turin's hwID is 8 bytes: nothing is cut, so no ellipsis."""
    vendor = store_vendor("Genoa", ISSUED)
    chip = vendor.manufacture_chip(2)
    certificate = parse_certificate(vendor.vcek_certificate(chip.chip_id, TCB))
    turin = VcekExtensions("Turin-B0", TcbVersion(1, 0, 3, 4, fmc=5, layout=TcbLayout.TURIN),
                           bytes(range(1, 9)))
    line = attest_collateral.entry_line(
        CachedVcek("v.der", certificate, turin, Status(VERIFIED)), ISSUED)
    assert line.startswith("v.der: Turin-B0 VCEK, chip 0102030405060708, TCB ")
    milan = replace(turin, hw_id=bytes(range(9)))
    assert ", chip 0001020304050607..., " in attest_collateral.entry_line(
        CachedVcek("v.der", certificate, milan, Status(VERIFIED)), ISSUED)


def test_an_entry_with_no_next_update_says_none() -> None:
    crl = replace(parse_crl(store_crl("Genoa")), next_update=None)
    entry = CachedCrl("crl-Genoa.der", "Genoa", crl, FRESH, Status(VERIFIED))
    assert ", nextUpdate none, " in attest_collateral.entry_line(entry, ISSUED)
    assert attest_collateral.entry_json(entry)["next_update"] == "none"
    assert attest_collateral.entry_json(Unreadable("x", "why")) == {
        "file": "x", "kind": "unreadable", "reason": "why"}


def test_a_name_of_an_unknown_kind_is_shown_as_it_is() -> None:
    assert attest_collateral.distinguished_name(
        (("common_name", "ARK"), ("serial_number", "7"))) == "CN=ARK, serial_number=7"


# --- appraisal: the CRL of the evidence's product -------------------------------------------


@dataclass(frozen=True)
class Appraised:
    milan: Path
    genoa: Path
    reference: Path


def _write_evidence(vendor: Vendor, image: Any, path: Path) -> Any:
    owner = build_owner(vendor, seeded_random(b"collateral"), image)
    cvm = owner.launch(0)
    payload = Attestation("n1", cvm.tee_key.public_jwk(), cvm.evidence("n1"))
    path.write_text(json.dumps(payload.to_json()))
    return owner


@pytest.fixture(scope="module")
def appraised(tmp_path_factory: pytest.TempPathFactory) -> Appraised:
    """Evidence of a Milan and of a Genoa chip of this installation's emulated AMD, the same
    image on both (so one reference document)."""
    folder = tmp_path_factory.mktemp("products")
    now = datetime.now(UTC) - timedelta(hours=1)
    milan = _write_evidence(store_vendor("Milan", now), None, folder / "milan.json")
    _write_evidence(store_vendor("Genoa", now), milan.image, folder / "genoa.json")
    (folder / "reference.json").write_text(json.dumps(reference_json(milan)))
    return Appraised(folder / "milan.json", folder / "genoa.json", folder / "reference.json")


def _appraise(appraised: Appraised, evidence: Path, cache: Path,
              capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = execute(["attest", "appraise", str(evidence), "--reference", str(appraised.reference),
                    "--trust", "emulated", "--nonce", "n1", "--collateral", str(cache)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _fill(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *,
          revoke: str) -> None:
    """A fresh Milan and Genoa CRL, the ASK of ``revoke`` revoked, added by the command."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    files = [_file(tmp_path, f"{product}.der", store_crl(product, now, revoke=product == revoke))
             for product in ("Milan", "Genoa")]
    assert execute([*ADD, str(cache), *map(str, files), "--trust", "emulated"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("revoked", "other"), [("Genoa", "Milan"), ("Milan", "Genoa")])
def test_evidence_is_checked_against_its_own_products_crl(
        appraised: Appraised, tmp_path: Path, capsys: pytest.CaptureFixture[str], revoked: str,
        other: str) -> None:
    """Both products' CRLs cached, one product's ASK revoked: only that product's evidence is
    refused, the other's is affirmed."""
    cache = tmp_path / "cache"
    _fill(cache, tmp_path, capsys, revoke=revoked)
    code, out = _appraise(appraised, getattr(appraised, revoked.lower()), cache, capsys)
    assert code == 66 and f"SEV-{revoked}-emulated (serial" in out and "is revoked" in out
    code, out = _appraise(appraised, getattr(appraised, other.lower()), cache, capsys)
    assert code == 0 and "verdict: affirming" in out


def test_a_cache_without_the_evidences_product_is_refused_by_name(
        appraised: Appraised, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    crl = _file(tmp_path, "milan.der", store_crl("Milan", datetime.now(UTC)))
    assert execute([*ADD, str(cache), str(crl), "--trust", "emulated"]) == 0
    capsys.readouterr()
    assert _appraise(appraised, appraised.genoa, cache, capsys) == (
        74, "cvm: error: no Genoa CRL in the collateral cache (fetch KDS /vcek/v1/Genoa/crl, "
            f"then cvm attest collateral add it): {cache}\n")


def test_an_untrusted_ark_is_the_chains_refusal_not_a_missing_crl(
        appraised: Appraised, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """AMD's roots do not include the emulated ARK: no CRL is looked up (the empty cache is
    not the reason), the chain check says why."""
    verdict = attest.appraisal(appraised.genoa, appraised.reference, trust="amd",
                               collateral=tmp_path)
    assert verdict.step == "verify" and not verdict.accepted
    assert "is not among the trusted roots (amd)" in " ".join(map(str, verdict.findings))


def test_the_attest_group_loads_no_certificate_code_until_a_command_runs() -> None:
    """`cvm attest --help` and its other commands do not pay for the collateral commands: the
    verifier and the certificate code are imported when a collateral command runs."""
    import subprocess
    import sys

    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, cvm.cli.attest; print(sorted(m for m in sys.modules "
         "if m.startswith(('cvm.attestation', 'cvm.crypto', 'cryptography', 'asn1crypto'))))"],
        capture_output=True, text=True, check=True).stdout
    assert loaded == "[]\n"
