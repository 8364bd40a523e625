"""``cvm report verify REPORT --collateral DIR``: a bare report (no certificates) verified
offline from the collateral cache — its VCEK found by CHIP_ID and REPORTED_TCB, the chain and
CRL of its product — on AMD's real Milan collateral and on emulated Genoa and Turin; a missing
entry named with its KDS path, a swapped VCEK or chain refused in one line."""

from __future__ import annotations

import functools
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cvm.amd import Vendor, derive_vcek_private_key
from cvm.amd.authority import EmulatedRoot
from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.verifier.collateral import vcek_file_name
from cvm.cli import report
from cvm.cli.main import execute
from cvm.crypto import amd_ecdsa
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.formats.snp.tcb_version import TcbLayout, TcbVersion

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
AT = "2026-01-02T00:00:00+00:00"
REAL_AT = "2026-01-01T00:00:00+00:00"  # within the real VCEKs' and chain's validity
ADD = ("attest", "collateral", "add")
TCBS = {"Milan": TcbVersion(boot_loader=4, snp=22, microcode=213),
        "Genoa": TcbVersion(boot_loader=4, snp=22, microcode=213),
        "Turin": TcbVersion(boot_loader=3, tee=1, snp=5, microcode=9, fmc=2,
                            layout=TcbLayout.TURIN)}
CPUID = {"Milan": (0x19, 0x01), "Genoa": (0x19, 0x11), "Turin": (0x1A, 0x02)}


@functools.cache
def _root(directory: Path, product: str) -> EmulatedRoot:
    return RootStore(directory).root(product, create=True)


def vendor(product: str, *, revoked: bool = False) -> Vendor:
    """This installation's emulated AMD (what ``--trust emulated`` trusts), one per data
    directory (a test session has its own)."""
    return _vendor(RootStore.for_workspace(DEFAULT_WORKSPACE).directory, product, revoked)


@functools.cache
def _vendor(directory: Path, product: str, revoked: bool) -> Vendor:
    root = _root(directory, product)  # made first: the store's seed comes with it
    made = Vendor(product, RootStore(directory).seed(), lambda: ISSUED, root=root)
    if revoked:
        made.revoke_ask()
    return made


def bare_report(folder: Path, product: str, index: int = 1) -> Path:
    """A report of chip ``index`` of the emulated ``product``, signed by its VCEK, alone in
    its file (as ``snpguest report`` writes it)."""
    chip = vendor(product).manufacture_chip(index)
    tcb = TCBS[product]
    family, model = CPUID[product]
    unsigned = AttestationReport(
        version=3, cpuid_fam_id=family, cpuid_mod_id=model, chip_id=chip.chip_id,
        reported_tcb=tcb, current_tcb=tcb, committed_tcb=tcb, launch_tcb=tcb,
        measurement=b"\x11" * 48)
    key = derive_vcek_private_key(chip.chip_secret, tcb, product)
    signed = unsigned.with_signature(*amd_ecdsa.sign(key, unsigned.signed_bytes()))
    path = folder / f"{product}-{index}.bin"
    path.write_bytes(signed.to_bytes())
    return path


def _file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def fill(cache: Path, folder: Path, product: str, *, crl: bool = True,
         revoked: bool = False) -> None:
    """The product's chain, chip 1's VCEK and (``crl``) a CRL, added by the command."""
    chip = vendor(product).manufacture_chip(1)
    files = [_file(folder, f"{product}-chain", vendor(product).cert_chain()),
             _file(folder, f"{product}-vcek",
                   vendor(product).vcek_certificate(chip.chip_id, TCBS[product]))]
    if crl:
        files.append(_file(folder, f"{product}-crl", vendor(product, revoked=revoked).crl()))
    assert execute([*ADD, str(cache), *map(str, files), "--trust", "emulated"]) == 0


def verify(capsys: pytest.CaptureFixture[str], report_file: Path, cache: Path,
           *options: str, trust: str = "emulated", at: str = AT) -> tuple[int, str, str]:
    capsys.readouterr()  # what filling the cache printed
    code = execute(["report", "verify", str(report_file), "--collateral", str(cache),
                    "--trust", trust, "--at", at, *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def _pinned() -> None:
    for product in CPUID:
        vendor(product)


# --- AMD's real collateral ----------------------------------------------------------------


@pytest.fixture
def real_cache(tmp_path: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """AMD's real Milan cert_chain and the VCEKs of both real Milan reports, added with
    ``--trust amd`` and nothing else."""
    base = vectors / "snp/virtee-sev/tests/certs_data"
    cache = tmp_path / "cache"
    assert execute([*ADD, str(cache), str(base / "cert_chain_milan"),
                    str(base / "vcek_milan.der"),
                    str(vectors / "snp/go-sev-guest/verify/testdata/vcek.testcer")]) == 0
    capsys.readouterr()
    return cache


def test_a_real_bare_report_is_authentic_from_the_cache(
        real_cache: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = vectors / "snp/virtee-sev/tests/certs_data"
    code, out, err = verify(capsys, base / "report_milan.hex", real_cache, "--allow-no-crl",
                            trust="amd", at=REAL_AT)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == ("authentic: Milan report, VCEK chain to the amd root 69d063b45344d26a..., "
                        "TCB 0x7308000000000003 (boot_loader=3 tee=0 snp=8 microcode=115)")
    assert report.NO_REVOCATION in lines
    go = vectors / "snp/go-sev-guest/verify/testdata/attestation.bin"
    code, out, err = verify(capsys, go, real_cache, "--allow-no-crl", "--allow-debug",
                            trust="amd", at=REAL_AT)
    assert (code, err) == (0, "") and out.startswith("authentic: Milan report, ")


def test_a_real_report_without_a_cached_crl_is_refused_unless_allowed(
        real_cache: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = verify(capsys, vectors / "snp/virtee-sev/tests/certs_data/report_milan.hex",
                            real_cache, trust="amd", at=REAL_AT)
    assert (code, out) == (74, "")
    assert err == ("cvm: error: no Milan CRL in the collateral cache (fetch KDS "
                   f"/vcek/v1/Milan/crl, then cvm attest collateral add it): {real_cache}\n")


def test_a_real_vcek_swapped_for_another_chips_is_refused(
        real_cache: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = vectors / "snp/virtee-sev/tests/certs_data"
    own = next(real_cache.glob("vcek-d49554ec*"))
    own.write_bytes((vectors / "snp/go-sev-guest/verify/testdata/vcek.testcer").read_bytes())
    code, out, err = verify(capsys, base / "report_milan.hex", real_cache, "--allow-no-crl",
                            trust="amd", at=REAL_AT)
    assert (code, out, err.count("\n")) == (66, "", 1)
    assert err.startswith(f"cvm: error: {own} is the VCEK of chip 3ac3fe21e13fb099... at TCB "
                          "0x4405000000000002, not of the report's chip d49554ec717f4e5b... at "
                          "0x7308000000000003")


def test_a_real_chain_of_another_product_is_refused(
        real_cache: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    genoa = vectors / "snp/go-sev-guest/verify/trust/ask_ark_genoa.pem"
    (real_cache / "cert_chain-Milan.pem").write_bytes(genoa.read_bytes())
    code, out, err = verify(capsys, vectors / "snp/virtee-sev/tests/certs_data/report_milan.hex",
                            real_cache, "--allow-no-crl", trust="amd", at=REAL_AT)
    assert (code, out) == (66, "")
    assert err == (f"cvm: error: {real_cache / 'cert_chain-Milan.pem'}: its ARK is Genoa's, the "
                   "VCEK is Milan's\n")


def test_a_real_reports_missing_vcek_names_the_kds_path(
        tmp_path: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = vectors / "snp/virtee-sev/tests/certs_data"
    tmp_path.joinpath("cache").mkdir()
    code, out, err = verify(capsys, base / "report_milan.hex", tmp_path / "cache", trust="amd",
                            at=REAL_AT)
    chip = ("d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc15d7af38db757039029f"
            "0efacfd08e244324884738c72b082e2f87a44d541eb6")
    assert (code, out) == (74, "")
    assert err == (
        "cvm: error: no VCEK of chip d49554ec717f4e5b... at TCB 0x7308000000000003 in the "
        f"collateral cache (fetch KDS /vcek/v1/<product>/{chip}?blSPL=03&teeSPL=00&snpSPL=08&"
        f"ucodeSPL=115, then cvm attest collateral add it): {tmp_path / 'cache'}\n")


def test_a_real_vcek_without_its_chain_names_the_chains_kds_path(
        real_cache: Path, vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (real_cache / "cert_chain-Milan.pem").unlink()
    code, _, err = verify(capsys, vectors / "snp/virtee-sev/tests/certs_data/report_milan.hex",
                          real_cache, "--allow-no-crl", trust="amd", at=REAL_AT)
    assert (code, err) == (74, "cvm: error: no Milan cert_chain in the collateral cache (fetch "
                               "KDS /vcek/v1/Milan/cert_chain, then cvm attest collateral add "
                               f"it): {real_cache}\n")


# --- emulated Genoa and Turin, with their CRLs ---------------------------------------------


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_an_emulated_bare_report_is_verified_with_its_products_crl(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], product: str) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, product)
    fill(cache, tmp_path, "Milan", revoked=True)  # another product's ASK revoked
    code, out, err = verify(capsys, bare_report(tmp_path, product), cache, "--json")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert (document["product"], document["revocation_checked"]) == (product, True)


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_an_emulated_report_whose_ask_is_revoked_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], product: str) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, product, revoked=True)
    code, out, err = verify(capsys, bare_report(tmp_path, product), cache)
    assert (code, out, err.count("\n")) == (66, "", 1)
    assert f"SEV-{product}-emulated (serial" in err and err.endswith("is revoked\n")


def test_an_emulated_turins_missing_vcek_names_its_kds_path(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Turin")
    chip = vendor("Turin").manufacture_chip(2).chip_id[:8].hex()
    code, _, err = verify(capsys, bare_report(tmp_path, "Turin", 2), cache)
    assert (code, err) == (74, (
        f"cvm: error: no VCEK of chip {chip}... at TCB 0x0900000005010302 in the collateral "
        f"cache (fetch KDS /vcek/v1/Turin/{chip}?fmcSPL=02&blSPL=03&teeSPL=01&snpSPL=05&"
        f"ucodeSPL=09, then cvm attest collateral add it): {cache}\n"))


def test_the_options_given_win_over_the_cache(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--vcek, --chain and --crl are taken as given; the cache supplies the rest."""
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa", revoked=True)
    bare = bare_report(tmp_path, "Genoa")
    chip = vendor("Genoa").manufacture_chip(1)
    vcek = _file(tmp_path, "vcek.der",
                 vendor("Genoa").vcek_certificate(chip.chip_id, TCBS["Genoa"]))
    crl = _file(tmp_path, "crl.der", vendor("Genoa").crl())
    chain = _file(tmp_path, "chain.pem", vendor("Genoa").cert_chain())
    cached_vcek = cache / vcek_file_name(chip.chip_id, TCBS["Genoa"])
    cached_vcek.write_bytes(b"junk")
    (cache / "cert_chain-Genoa.pem").write_bytes(b"junk")
    assert verify(capsys, bare, cache, "--vcek", str(vcek), "--chain", str(chain), "--crl",
                  str(crl))[0] == 0
    # --crl alone: the cache's junk VCEK is read, and named
    code, _, err = verify(capsys, bare, cache, "--crl", str(crl))
    assert code == 65 and err.startswith(f"cvm: error: {cached_vcek}: not a DER X.509 ")
    # --vcek alone: the cache's chain is read, and named
    code, _, err = verify(capsys, bare, cache, "--vcek", str(vcek), "--crl", str(crl))
    assert code == 65 and err.startswith(f"cvm: error: {cache / 'cert_chain-Genoa.pem'}: ")
    # the cache's CRL (the ASK revoked) when none is given
    code, _, err = verify(capsys, bare, cache, "--vcek", str(vcek), "--chain", str(chain))
    assert code == 66 and err.endswith("is revoked\n")


def test_certificates_given_whole_take_the_cached_crl(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa", revoked=True)
    bare = bare_report(tmp_path, "Genoa")
    chip = vendor("Genoa").manufacture_chip(1)
    certs = tmp_path / "certs"
    certs.mkdir()
    _file(certs, "vcek.der", vendor("Genoa").vcek_certificate(chip.chip_id, TCBS["Genoa"]))
    _file(certs, "ask.der", vendor("Genoa").ask_certificate)
    _file(certs, "ark.der", vendor("Genoa").ark_certificate)
    code, _, err = verify(capsys, bare, cache, "--certs", str(certs))
    assert code == 66 and err.endswith("is revoked\n")
    assert execute(["report", "verify", str(bare), "--certs", str(certs), "--trust", "emulated",
                    "--at", AT]) == 0
    assert report.NO_REVOCATION in capsys.readouterr().out


def test_a_vcek_given_that_is_not_a_vcek_is_named(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa")
    ark = _file(tmp_path, "ark.der", vendor("Genoa").ark_certificate)
    code, _, err = verify(capsys, bare_report(tmp_path, "Genoa"), cache, "--vcek", str(ark))
    assert (code, err) == (65, f"cvm: error: --vcek {ark}: VCEK: no structVersion extension\n")


def test_a_crl_may_be_missing_only_when_allowed_and_only_with_a_cache(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Turin", crl=False)
    bare = bare_report(tmp_path, "Turin")
    code, _, err = verify(capsys, bare, cache)
    assert (code, err) == (74, "cvm: error: no Turin CRL in the collateral cache (fetch KDS "
                               f"/vcek/v1/Turin/crl, then cvm attest collateral add it): {cache}\n")
    code, out, _ = verify(capsys, bare, cache, "--allow-no-crl")
    assert code == 0 and report.NO_REVOCATION in out.splitlines()
    assert execute(["report", "verify", str(bare), "--allow-no-crl"]) == 64
    assert capsys.readouterr().err == (
        "cvm: error: --allow-no-crl: not for a verification without --collateral\n")


def test_an_untrusted_ark_is_the_chains_refusal(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """AMD's roots do not trust the emulated ARK: no CRL is looked up (the cache has none, and
    that is not the reason given), the chain check says why."""
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa", crl=False)
    code, _, err = verify(capsys, bare_report(tmp_path, "Genoa"), cache, trust="amd")
    assert code == 66 and "is not among the trusted roots (amd)" in err


def test_the_report_collateral_moves_with_the_cache(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing in the cache depends on where it was filled: a copy verifies the same."""
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa")
    shutil.copytree(cache, tmp_path / "copy")
    assert verify(capsys, bare_report(tmp_path, "Genoa"), tmp_path / "copy")[0] == 0


def _certs(folder: Path, product: str) -> Path:
    chip = vendor(product).manufacture_chip(1)
    certs = folder / "certs"
    certs.mkdir()
    _file(certs, "vcek.der", vendor(product).vcek_certificate(chip.chip_id, TCBS[product]))
    _file(certs, "ask.der", vendor(product).ask_certificate)
    _file(certs, "ark.der", vendor(product).ark_certificate)
    return certs


def test_certificates_given_whole_need_only_the_caches_crl(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--certs or --cert-table: the cache is not asked for a VCEK or a chain it lacks."""
    from cvm.attestation.verifier import Evidence

    cache = tmp_path / "cache"
    crl = _file(tmp_path, "crl", vendor("Turin", revoked=True).crl())
    assert execute([*ADD, str(cache), str(crl), "--trust", "emulated"]) == 0
    bare = bare_report(tmp_path, "Turin")
    certs = _certs(tmp_path, "Turin")
    code, _, err = verify(capsys, bare, cache, "--certs", str(certs))
    assert code == 66 and err.endswith("is revoked\n")
    table = _file(tmp_path, "table", Evidence(
        b"", *((certs / f"{name}.der").read_bytes() for name in ("vcek", "ask", "ark"))
    ).cert_table())
    code, _, err = verify(capsys, bare, cache, "--cert-table", str(table))
    assert code == 66 and err.endswith("is revoked\n")
    good = _file(tmp_path, "good-crl", vendor("Turin").crl())
    assert verify(capsys, bare, cache, "--cert-table", str(table), "--crl", str(good))[0] == 0


@pytest.mark.parametrize(("chain", "says"), [
    ("one certificate", "the cert chain holds 1 certificates, expected ASK, ARK"),
    ("junk", "not a DER X.509 certificate (")])
def test_a_chain_given_is_named_when_it_is_wrong(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], chain: str, says: str) -> None:
    from asn1crypto import pem

    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa")
    given = _file(tmp_path, "given.pem", {
        "one certificate": pem.armor("CERTIFICATE", vendor("Genoa").ark_certificate),
        "junk": b"\x30\x03\x02\x01\x00"}[chain])
    code, _, err = verify(capsys, bare_report(tmp_path, "Genoa"), cache, "--chain", str(given))
    assert code == 65 and err.startswith(f"cvm: error: --chain {given}: {says}")
    assert err.count("\n") == 1


def test_a_crl_given_is_the_one_checked(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The cache's CRL is current and revokes nothing; the one given revokes the ASK."""
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa")
    revoked = _file(tmp_path, "revoked", vendor("Genoa", revoked=True).crl())
    bare = bare_report(tmp_path, "Genoa")
    assert verify(capsys, bare, cache)[0] == 0
    code, _, err = verify(capsys, bare, cache, "--crl", str(revoked))
    assert code == 66 and err.endswith("is revoked\n")
    code, _, err = verify(capsys, bare, cache, "--crl", str(revoked), "--certs",
                          str(_certs(tmp_path, "Genoa")))
    assert code == 66 and err.endswith("is revoked\n")
    chain = _file(tmp_path, "chain.pem", vendor("Genoa").cert_chain())
    code, _, err = verify(capsys, bare, cache, "--crl", str(revoked), "--chain", str(chain))
    assert code == 66 and err.endswith("is revoked\n")


@pytest.mark.parametrize("option", ["--vcek", "--crl"])
def test_a_file_given_that_does_not_parse_is_named_with_its_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa")
    junk = _file(tmp_path, "junk", b"\x30\x03\x02\x01\x00")
    code, _, err = verify(capsys, bare_report(tmp_path, "Genoa"), cache, option, str(junk))
    assert code == 65 and err.startswith(f"cvm: error: {option} {junk}: not a DER X.509 ")


@pytest.mark.parametrize("option", ["--vcek", "--chain"])
def test_whole_certificates_and_one_of_them_are_one_source_too_many(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str) -> None:
    cache = tmp_path / "cache"
    fill(cache, tmp_path, "Genoa")
    certs = _certs(tmp_path, "Genoa")
    code, _, err = verify(capsys, bare_report(tmp_path, "Genoa"), cache, "--certs", str(certs),
                          option, str(certs / "vcek.der"))
    assert (code, err) == (64, "cvm: error: give one of --certs DIR, --vcek F --chain F, or "
                               "--cert-table F\n")
